"""Authenticated secure aggregation by default under mTLS, over real gRPC on loopback.

The nodes get only their mTLS files (`codream node --tls-ca --tls-cert --tls-key`, no identity
flags): each signs with the identity key its certificate carries, the coordinator relays the
certificates it saw in the handshakes, and every node checks them against its CA. A coordinator
that runs the session unauthenticated (secagg.authentication = "off") is refused by every node,
so nothing is released; the same nodes with authentication off take part (the refusal is the
defence, not a broken set-up).
"""

import argparse
import time

import numpy as np
import pytest
from service_helpers import SumRecorder, serve, serving, tiny_config

from client_node.channel import ChannelSecurity
from client_node.node_setup import secure_contribution
from client_node.task_runner import TaskRunner
from codream.cli.certs_command import write_pki
from codream.cli.node_command import add_node_command, node_options
from coordinator.network_transport import Timeouts
from coordinator.security import ServerSecurity

pytestmark = pytest.mark.integration

NODES = ("node-0", "node-1", "node-2")
FIRST_STEP = "r1/b0/s0"


def _options(node, pki, *extra):
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["node", "--coordinator", "127.0.0.1:1", "--node-id", node,
                              "--tls-ca", str(pki.ca_cert), "--tls-cert", str(pki.node_certs[node]),
                              "--tls-key", str(pki.node_keys[node]), *extra])
    return node_options(args, {})


def _run(tmp_path, monkeypatch, authentication, *node_flags):
    pki = write_pki(tmp_path / "pki", NODES, ("localhost", "127.0.0.1"), force=False)
    sums = SumRecorder().install(monkeypatch)
    config = tiny_config(tmp_path / "run", clients=3, **{"secagg.authentication": authentication})
    security = ServerSecurity(str(pki.server_cert), str(pki.server_key), str(pki.ca_cert))
    seen: dict[str, list[str]] = {n: [] for n in NODES}
    # long: a node's refusal counts it out of the session at once, so no round waits this out
    timeouts = Timeouts(task=60, step=60, secagg_round=60)
    with serving(config, security=security, timeouts=timeouts) as served:
        nodes = []
        for index, node_id in enumerate(NODES):
            options = _options(node_id, pki, *node_flags)
            node = served.node(node_id, security=ChannelSecurity(
                ca_file=str(pki.ca_cert), cert_file=str(pki.node_certs[node_id]),
                key_file=str(pki.node_keys[node_id])),
                values=lambda task_id, size, v=index + 1.0: np.full(size, v, np.float32))
            node.runner = TaskRunner(node_id, node.logic, node.runner.snapshots,
                                     secure=secure_contribution(options))
            nodes.append(node.enter())

        def record(node, task, result):
            seen[node.node_id].append(task.task_id)
            if result.WhichOneof("body") == "skip" and task.WhichOneof("body") == "secagg_begin":
                refusals.append(node.node_id)  # submitted as it is: the node's explicit refusal
            return False

        refusals: list[str] = []
        start = time.monotonic()
        served.start_run()
        serve(nodes, record, done=served.finished)
        served.wait_run()
        if refusals:  # every refused session ended at once, not at its 60 s deadline
            assert time.monotonic() - start < 60, refusals
    return sums, seen


def test_mtls_nodes_without_identity_flags_run_authenticated_steps_that_sum(tmp_path, monkeypatch):
    sums, seen = _run(tmp_path, monkeypatch, "auto")
    (step, _unit), *_ = sums.steps[FIRST_STEP]
    assert sorted(step.survivors) == [0, 1, 2]
    total = np.asarray(sums.replies[FIRST_STEP].total.total)
    np.testing.assert_allclose(total, np.full_like(total, 6.0), atol=1e-3)  # 1 + 2 + 3
    for node in NODES:  # the consistency round runs only in authenticated sessions
        assert f"{FIRST_STEP}/consistency" in seen[node], seen[node]


def test_mtls_nodes_refuse_a_session_the_coordinator_runs_unauthenticated(tmp_path, monkeypatch):
    sums, seen = _run(tmp_path, monkeypatch, "off")
    reply = sums.replies[FIRST_STEP].total
    assert reply.contributors == () and reply.weight == 0.0  # nothing released
    assert not any(f"{FIRST_STEP}/consistency" in tasks for tasks in seen.values())


def test_the_same_nodes_with_authentication_off_join_it(tmp_path, monkeypatch):
    """Proof the refusal above is the defence: nodes run with --secagg-authentication off sum."""
    sums, _seen = _run(tmp_path, monkeypatch, "off", "--secagg-authentication", "off")
    assert sums.replies[FIRST_STEP].total.contributors == NODES
