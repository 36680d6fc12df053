"""A node whose data does not fit the federation is refused at Ready, over real gRPC on loopback.

The federation's shape is the run's data set's (digits: (1, 8, 8), 10 classes). A node that
reports another shape or number of classes, or none at all (a node older than the fields), is
refused with FAILED_PRECONDITION, a message naming both shapes, and the trailing metadata that
tells its daemon the refusal is final; the run goes on with the nodes whose data fits. The real
node, as a daemon and as the `codream node` command, stops at once with one line, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from service_helpers import (
    CALL_TIMEOUT,
    DIGITS_SHAPE,
    Code,
    assert_refused,
    metrics,
    serve,
    serving,
    tiny_config,
)

from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_CONFIG, NodeDaemon
from client_node.node_options import NodeOptions
from coordinator.data_fit import DataShape, FederationData, offered_shape
from coordinator.errors import InvalidMessage, Misfit
from protos.codream.v1 import codream_pb2 as pb
from protos.refusals import DATA_MISMATCH, OUTDATED_NODE, refusal_of

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
SIXTEEN = (1, 16, 16)


@pytest.fixture
def three(tmp_path):
    """Three roster nodes under secure aggregation; the run starts once two are ready."""
    with serving(tiny_config(tmp_path / "run", clients=3), min_nodes=2) as served:
        yield served


def _sixteen_by_sixteen(path: Path) -> Path:
    """An organisation's own data set of 16x16 images (10 classes): not the federation's shape."""
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((60, 16, 16), dtype=np.float32), y=np.arange(60) % 10)
    return path


# ---- the coordinator's decision, without a network --------------------------------------------
def test_the_first_ready_node_fixes_the_shape_of_a_federation_given_none():
    data = FederationData()
    data.admit("a", DataShape((1, 8, 8), 10))
    data.admit("b", DataShape((1, 8, 8), 10))
    with pytest.raises(Misfit, match=r"node c's data has input shape \(1, 8, 8\) and 3 classes; "
                                     r"this federation's is \(1, 8, 8\) and 10 classes") as refused:
        data.admit("c", DataShape((1, 8, 8), 3))
    assert refused.value.refusal == DATA_MISMATCH
    assert data.expected == DataShape((1, 8, 8), 10)


def test_what_a_node_reports_is_checked_before_it_is_compared():
    assert offered_shape("a", [1, 8, 8], 10) == DataShape((1, 8, 8), 10)
    with pytest.raises(Misfit, match="upgrade codream on node a") as outdated:
        offered_shape("a", [], 0)
    assert outdated.value.refusal == OUTDATED_NODE
    for shape, classes in (([8, 8], 10), ([1, 0, 8], 10), ([1, 8, 8], 1), ([1, -8, 8], 10)):
        with pytest.raises(InvalidMessage, match="input_shape must be"):
            offered_shape("a", shape, classes)


# ---- over gRPC --------------------------------------------------------------------------------
def test_a_node_of_another_shape_is_refused_and_the_run_goes_on_without_it(three):
    misfit = three.node("node-2")
    misfit.join()
    error = assert_refused(
        lambda: misfit.ready(input_shape=SIXTEEN), Code.FAILED_PRECONDITION,
        "node node-2's data has input shape (1, 16, 16) and 10 classes; this federation's is "
        "(1, 8, 8) and 10 classes: give this node a data set of the federation's shape and "
        "classes (codream node --dataset)")
    assert refusal_of(error) == DATA_MISMATCH
    assert three.service.membership.memberships() == 0  # refused for good: nothing is held
    wrong_classes = three.node("node-2")
    wrong_classes.join()  # its id is free again at once
    assert_refused(lambda: wrong_classes.ready(num_classes=3), Code.FAILED_PRECONDITION,
                   "has input shape (1, 8, 8) and 3 classes; this federation's is (1, 8, 8) and 10")
    assert three.service.membership.live() == []

    honest = [three.node(f"node-{i}").enter() for i in range(2)]
    three.start_run()
    serve(honest, done=three.finished)
    three.wait_run()
    last = metrics(three.config.out)["rounds"][-1]
    assert sorted(last["clients"]) == ["node-0", "node-1"]
    assert last["fewest_clients_per_dream_step"] == 2


def test_a_node_that_reports_no_shape_is_told_to_upgrade(three):
    old = three.node("node-0")
    old.join()
    request = pb.ReadyRequest(member_id=old.member_id, weight=1.0, num_samples=10, model="mlp",
                              device="cpu", resumed_round=-1)  # as a node before the fields sends
    error = assert_refused(lambda: old.stub.Ready(request, timeout=CALL_TIMEOUT),
                           Code.FAILED_PRECONDITION,
                           "node node-0 reported no data shape at Ready", "upgrade codream")
    assert refusal_of(error) == OUTDATED_NODE


def test_a_shape_that_is_no_image_shape_is_invalid_argument_and_may_be_corrected(three):
    node = three.node("node-0")
    node.join()
    error = assert_refused(lambda: node.ready(input_shape=(64,)), Code.INVALID_ARGUMENT,
                           "input_shape must be (C, H, W)")
    assert refusal_of(error) is None  # not final: the membership stays
    node.ready(input_shape=DIGITS_SHAPE)
    assert [m.node_id for m in three.service.membership.live()] == ["node-0"]


def test_a_stale_membership_at_ready_still_means_join_again(three):
    node = three.node("node-0")
    node.member_id = "f" * 32
    error = assert_refused(lambda: node.ready(), Code.FAILED_PRECONDITION, "join again")
    assert refusal_of(error) is None


def test_the_node_daemon_stops_at_once_on_the_refusal(three, tmp_path):
    options = NodeOptions(three.target, "node-2", ChannelSecurity(token=three.tokens["node-2"]),
                          device="cpu", dataset=f"npz:{_sixteen_by_sixteen(tmp_path / 'own.npz')}",
                          pull_wait=0.5)
    sleeps: list[float] = []
    daemon = NodeDaemon(options, threading.Event(), sleep=sleeps.append)
    started = time.monotonic()
    assert daemon.run() == EXIT_CONFIG
    assert sleeps == [] and time.monotonic() - started < 30  # no back-off, no second join
    assert three.service.membership.joins == 1


def test_the_node_command_exits_2_with_one_line(three, tmp_path):
    own = _sixteen_by_sixteen(tmp_path / "own.npz")
    token = tmp_path / "node-1.token"
    token.write_text(three.tokens["node-1"])
    argv = [sys.executable, "-m", "codream.cli", "node", "--coordinator", three.target,
            "--node-id", "node-1", "--token-file", str(token), "--dataset", f"npz:{own}",
            "--device", "cpu", "--health-port", "0", "--no-metrics"]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=environment,
                          cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert ("node node-1: Ready refused: node node-1's data has input shape (1, 16, 16) and 10 "
            "classes; this federation's is (1, 8, 8) and 10 classes") in lines[0]
    assert "--dataset" in lines[0]
