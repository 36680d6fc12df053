"""Authenticated secure aggregation over real gRPC on loopback, wired as the CLI wires it: the dev
PKI's identity files, read by `codream coordinator --identities` and `codream node
--identity-key/--peer-identities`, reach SecureRounds and each node's SecureContribution."""

import argparse

import numpy as np
import pytest
from service_helpers import SumRecorder, metrics, serve, serving, tiny_config

from client_node.node_setup import secure_contribution
from client_node.task_runner import TaskRunner
from codream.cli.certs_command import write_pki
from codream.cli.coordinator_command import read_identities
from codream.cli.node_command import add_node_command, node_options

pytestmark = pytest.mark.integration

NODES = ("node-0", "node-1", "node-2")
FIRST_STEP = "r1/b0/s0"


def _options(node, pki):
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["node", "--coordinator", "127.0.0.1:1", "--node-id", node,
                              "--identity-key", str(pki.identity_keys[node]),
                              "--peer-identities", str(pki.roster)])
    return node_options(args, {})


def test_three_nodes_with_identities_run_authenticated_secure_steps_that_sum(tmp_path, monkeypatch):
    pki = write_pki(tmp_path / "pki", NODES, ("localhost",), force=False)
    sums = SumRecorder().install(monkeypatch)
    config = tiny_config(tmp_path / "run", clients=3)
    assert config.secagg.enabled
    with serving(config, identities=read_identities(str(pki.roster), NODES)) as served:
        nodes = []
        for index, node_id in enumerate(NODES):
            node = served.node(node_id, values=lambda task_id, size, v=index + 1.0:
                               np.full(size, v, np.float32))
            node.runner = TaskRunner(node_id, node.logic, node.runner.snapshots,
                                     secure=secure_contribution(_options(node_id, pki)))
            nodes.append(node.enter())
        seen: dict[str, list[str]] = {n: [] for n in NODES}

        def record(node, task, result):
            seen[node.node_id].append(task.task_id)
            return False

        served.start_run()
        serve(nodes, record, done=served.finished)
        served.wait_run()
    (step, _unit), *_ = sums.steps[FIRST_STEP]
    assert sorted(step.survivors) == [0, 1, 2]
    total = np.asarray(sums.replies[FIRST_STEP].total.total)
    np.testing.assert_allclose(total, np.full_like(total, 6.0), atol=1e-3)  # 1 + 2 + 3
    assert sums.replies[FIRST_STEP].total.contributors == NODES
    for node in NODES:  # a consistency round before every unmasking: the session was authenticated
        assert f"{FIRST_STEP}/consistency" in seen[node], seen[node]
    assert metrics(config.out)["rounds"][-1]["excluded"] == {}
