"""A node that refuses a secure session costs the round nothing, over real gRPC on loopback.

Three nodes pin an identity roster; node-2's roster holds another key for node-0 than the one
the coordinator relays, so node-2's check of SecAggBegin fails and it answers with a Skip, its
refusal. The coordinator counts node-2 out of that session at once: every step completes among
node-0 and node-1 well inside the secure-round timeout (60 s here; before, each session's
AdvertiseKeys waited it out for node-2), and the round's metrics say who refused and why.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from service_helpers import SumRecorder, metrics, serve, serving, tiny_config

from client_node.secure_contribution import SecureContribution
from client_node.task_runner import TaskRunner
from coordinator.network_transport import NetworkTransport, Timeouts

pytestmark = pytest.mark.integration

NODES = ("node-0", "node-1", "node-2")
REFUSER = "node-2"
FIRST_STEP = "r1/b0/s0"
TIMEOUT = 60.0  # every phase's deadline: a round that waited for the refuser would take this


def test_a_node_whose_session_check_fails_is_a_dropout_at_once_and_the_others_sum(
        tmp_path, monkeypatch, caplog):
    keys = {n: Ed25519PrivateKey.generate() for n in NODES}
    roster = {n: k.public_key() for n, k in keys.items()}
    wrong = dict(roster, **{"node-0": Ed25519PrivateKey.generate().public_key()})
    sums = SumRecorder().install(monkeypatch)
    durations: dict[str, float] = {}
    recorded = NetworkTransport.broadcast

    def timed(transport, request):
        start = time.monotonic()
        try:
            return recorded(transport, request)
        finally:
            durations[request.task.task_id] = time.monotonic() - start

    monkeypatch.setattr(NetworkTransport, "broadcast", timed)
    config = tiny_config(tmp_path / "run", clients=3)
    identities = {n: k.public_bytes_raw() for n, k in roster.items()}
    timeouts = Timeouts(task=TIMEOUT, step=TIMEOUT, secagg_round=TIMEOUT)
    caplog.set_level(logging.WARNING, logger="coordinator.secure_rounds")
    with serving(config, identities=identities, timeouts=timeouts) as served:
        nodes = []
        for index, node_id in enumerate(NODES):
            node = served.node(node_id, values=lambda task_id, size, v=index + 1.0:
                               np.full(size, v, np.float32))
            secure = SecureContribution(node_id, identity_key=keys[node_id],
                                        peer_identities=wrong if node_id == REFUSER else roster)
            node.runner = TaskRunner(node_id, node.logic, node.runner.snapshots, secure=secure)
            nodes.append(node.enter())
        start = time.monotonic()
        served.start_run()
        serve(nodes, done=served.finished)
        served.wait_run()
        wall = time.monotonic() - start
    summed = [task for task in sums.steps if sums.steps[task]]
    assert FIRST_STEP in summed and len(summed) >= 3  # dream steps and soft labels
    assert wall < TIMEOUT, (wall, durations)  # no secure sum waited out a deadline
    for task in summed:
        assert durations[task] < TIMEOUT / 4, (task, durations[task])
        (step, _unit), = sums.steps[task]
        assert sorted(step.survivors) == [0, 1]  # node-0 and node-1, authenticated
        assert sums.replies[task].total.contributors == ("node-0", "node-1")
    total = np.asarray(sums.replies[FIRST_STEP].total.total)
    np.testing.assert_allclose(total, np.full_like(total, 3.0), atol=1e-3)  # 1 + 2
    excluded = metrics(config.out)["rounds"][-1]["excluded"]
    assert "refused the secure session" in excluded[REFUSER]
    assert "not the pinned one" in excluded[REFUSER]
    refusals = [r.getMessage() for r in caplog.records if "refused secure session" in r.getMessage()]
    assert refusals and all(REFUSER in line and "\n" not in line for line in refusals)
