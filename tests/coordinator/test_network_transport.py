"""NetworkTransport.broadcast with secure aggregation off, over a real Dispatcher and Membership.

No gRPC: node threads pull and submit through the federation (what the servicer calls) and
answer through a real TaskRunner. The logic is scripted where the numbers must be checked by
hand (weights 1, 2, 3 and values that float32 holds exactly), and the real NodeTaskLogic where
the network transport must agree with the in-memory reference. These pin down what a round
logic gets back from a broadcast: the exact sum and weight, each node's reply, who was left out
and why, and the payload traffic per node that the metrics compare across transports.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transport_helpers import TIMEOUTS, cluster, contribution, dream_step

from codream.aggregation import Contribution
from codream.config import DreamConfig, RunConfig, SecureAggregationConfig
from codream.data import load_dataset
from codream.in_memory_transport import drive
from codream.messages import Ack, DreamStep, EvalReport, Evaluate, Skip, TrainReport, payload_bytes
from codream.node_build import build_node, client_partitions
from codream.round_protocol import Broadcast
from coordinator.errors import InvalidMessage, StaleMessage
from protos import serde
from protos.codream.v1 import codream_pb2 as pb

PLAIN = SecureAggregationConfig(enabled=False)
NODES = ("node-0", "node-1", "node-2")
WEIGHTS = {"node-0": 1.0, "node-1": 2.0, "node-2": 3.0}
SIZE = 8  # a (2, 1, 2, 2) dream batch, flattened
RAMP = np.arange(SIZE, dtype=np.float64)  # 0, 1, ..., 7


def ramp_logic(node: str):
    """w·v = w · 0.25 · (0..7): the three nodes sum to 1.5 · (0..7) with weight 6."""
    weight = WEIGHTS[node]

    def answer(task):
        if isinstance(task, DreamStep):
            return contribution(weight * 0.25 * RAMP, weight)
        if isinstance(task, Evaluate):
            accuracy = 0.25 * (1 + NODES.index(node))
            return EvalReport(accuracy=accuracy, loss=weight, num_samples=10 + int(weight))
        raise TypeError(type(task).__name__)

    return answer


def dropouts(transport, phase: str) -> float:
    value = transport.metrics.registry.get_sample_value("codream_dropouts_total", {"phase": phase})
    return value or 0.0


# ---- sums and replies ------------------------------------------------------------------------
def test_a_summed_broadcast_returns_the_exact_weighted_sum_and_total_weight():
    with cluster(NODES, PLAIN) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node])
        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE))

    total = replies.total
    assert total is not None
    np.testing.assert_array_equal(total.total, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5])
    assert total.total.dtype == np.float64
    assert total.weight == 6.0
    assert total.contributors == NODES and dict(total.excluded) == {}
    assert sorted(replies.by_node) == list(NODES)
    for node in NODES:
        pulled = c.nodes[node].pulled
        assert [(t.task_id, t.WhichOneof("body"), t.coordinator_run) for t in pulled] == [
            ("d0", "dream_step", "run-test")]
        (handled,) = c.nodes[node].logic.handled  # the node's logic saw the task, dreams and all
        assert handled.shape == (2, 1, 2, 2) and torch.equal(handled.dreams, torch.zeros(2, 1, 2, 2))


def test_a_broadcast_that_is_not_summed_returns_each_nodes_reply_by_node_id():
    with cluster(NODES, PLAIN) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node])
        replies = c.broadcast(Broadcast(Evaluate("e0", 0)))

    assert replies.total is None
    assert dict(replies.by_node) == {
        "node-0": EvalReport(accuracy=0.25, loss=1.0, num_samples=11),
        "node-1": EvalReport(accuracy=0.5, loss=2.0, num_samples=12),
        "node-2": EvalReport(accuracy=0.75, loss=3.0, num_samples=13),
    }


# ---- refusals ------------------------------------------------------------------------------
def _wrong_reply(kind: str, result: pb.TaskResult) -> pb.TaskResult:
    wrong = pb.TaskResult(member_id=result.member_id, task_id=result.task_id, sequence=result.sequence)
    if kind == "train_report":
        serde.reply_to_proto(TrainReport(num_samples=1, loss=0.0), wrong)
    elif kind == "ack":
        serde.reply_to_proto(Ack(), wrong)
    elif kind == "masked":
        wrong.masked.masked_input = b"\x00" * 16
    elif kind == "short_contribution":  # a contribution of the wrong length
        serde.reply_to_proto(contribution([1.0, 2.0], 2.0), wrong)
    return wrong


@pytest.mark.parametrize(("summed", "wrong", "refusal", "phrase"), [
    (False, "train_report", InvalidMessage, "e0: expected EvalReport or Skip, got TrainReport"),
    (True, "ack", InvalidMessage, "d0: expected a contribution, got Ack"),
    (True, "masked", InvalidMessage, "secure aggregation is off: send a clear contribution"),
    (True, "short_contribution", serde.WireError, "shape must be (8,), got (2,)"),
])
def test_a_reply_of_the_wrong_kind_is_refused_and_the_task_stays_open_for_a_correct_one(
        summed, wrong, refusal, phrase):
    def wrong_then_right(node, task, result):
        return [_wrong_reply(wrong, result), result]

    with cluster(NODES, PLAIN) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node],
                   intercept=wrong_then_right if node == "node-1" else None)
        task = dream_step("d0") if summed else Evaluate("e0", 0)
        replies = c.broadcast(Broadcast(task, size=SIZE if summed else 0))

    (refused,) = c.nodes["node-1"].refusals()
    assert type(refused) is refusal and phrase in str(refused)
    # the refused result left the task open: the node's correct answer after it was taken
    assert [r.task_id for r in c.nodes["node-1"].accepted()] == [task.task_id]
    if summed:
        assert replies.total.contributors == NODES and replies.total.weight == 6.0
        np.testing.assert_array_equal(replies.total.total, 1.5 * RAMP)
    else:
        assert replies.by_node["node-1"] == EvalReport(accuracy=0.5, loss=2.0, num_samples=12)
    assert all(not c.nodes[n].refusals() for n in ("node-0", "node-2"))


# ---- who is left out -------------------------------------------------------------------------
def test_a_silent_node_is_left_out_after_the_step_timeout_and_its_late_answer_is_stale():
    held: list[tuple[pb.Task, pb.TaskResult]] = []

    def hold(node, task, result):  # pulls and computes, but answers only after the deadline
        held.append((task, result))
        return []

    with cluster(NODES, PLAIN) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node], intercept=hold if node == "node-2" else None)

        def answer_then_time_out():
            for node in ("node-0", "node-1"):
                c.nodes[node].wait_until(lambda n: bool(n.accepted("d0")))
            c.nodes["node-2"].wait_until(lambda n: [t.task_id for t in n.pulled] == ["d0"])
            c.time_out(TIMEOUTS.step + 1)  # a summed task waits the step timeout, not the task one

        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE), while_waiting=answer_then_time_out)

        total = replies.total
        assert total.contributors == ("node-0", "node-1")
        assert dict(total.excluded) == {"node-2": "no answer before the deadline"}
        np.testing.assert_array_equal(total.total, 0.75 * RAMP)  # (1 + 2) · 0.25 · (0..7)
        assert total.weight == 3.0
        assert "node-2" not in replies.by_node and "node-2" not in replies.traffic
        assert dropouts(c.transport, "dream_step") == 1.0

        (task, late) = held[0]
        assert isinstance(c.nodes["node-2"].submit(task, late), StaleMessage)


def test_a_node_that_never_pulls_is_left_out_and_its_task_does_not_wait_in_the_mailbox():
    with cluster(NODES, PLAIN) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node], start=node != "node-2")

        def answer_then_time_out():
            for node in ("node-0", "node-1"):
                c.nodes[node].wait_until(lambda n: bool(n.accepted("e0")))
            c.time_out(TIMEOUTS.task + 1)

        replies = c.broadcast(Broadcast(Evaluate("e0", 0)), while_waiting=answer_then_time_out)
        assert sorted(replies.by_node) == ["node-0", "node-1"]
        assert dropouts(c.transport, "evaluate") == 1.0
        silent = c.nodes["node-2"]
        empty = c.federation.pull("node-2", pb.PullTaskRequest(member_id=silent.member_id, wait_seconds=0))
        assert empty.WhichOneof("body") is None  # the closed task was taken out of its mailbox


def test_a_skip_is_excluded_from_the_sum_with_its_reason():
    def declines(task):
        return Skip("no fresh data")

    def fails(task):
        raise ValueError("model diverged")

    with cluster(NODES, PLAIN) as c:
        c.node("node-0", ramp_logic("node-0"), 1.0)
        c.node("node-1", fails, 2.0)  # the TaskRunner turns the error into a Skip naming it
        c.node("node-2", declines, 3.0)
        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE))

    total = replies.total
    assert total.contributors == ("node-0",)
    assert dict(total.excluded) == {"node-1": "ValueError: model diverged", "node-2": "no fresh data"}
    np.testing.assert_array_equal(total.total, 0.25 * RAMP)
    assert total.weight == 1.0
    assert replies.by_node["node-1"] == Skip("ValueError: model diverged")
    assert replies.by_node["node-2"] == Skip("no fresh data")
    assert dropouts(c.transport, "dream_step") == 2.0


# ---- traffic -------------------------------------------------------------------------------
def test_traffic_per_node_is_the_payload_bytes_of_the_task_and_of_each_reply():
    def answer(task):
        return Skip("declined") if isinstance(task, DreamStep) else EvalReport(0.5, 1.0, 10)

    with cluster(NODES, PLAIN) as c:
        for node in ("node-0", "node-1"):
            c.node(node, ramp_logic(node), WEIGHTS[node])
        c.node("node-2", answer, 3.0)
        task = dream_step("d0")
        summed = c.broadcast(Broadcast(task, size=SIZE))
        evaluated = c.broadcast(Broadcast(Evaluate("e0", 0)))

    # 8 float32 dream values down (32 bytes); 8 float32 weighted values up, nothing for a Skip
    assert dict(summed.traffic) == {"node-0": (32, 32), "node-1": (32, 32), "node-2": (32, 0)}
    assert dict(summed.traffic) == {
        n: (payload_bytes(task), payload_bytes(r)) for n, r in summed.by_node.items()}
    assert dict(evaluated.traffic) == {n: (0, 0) for n in NODES}
    # wire bytes beside them: every result each node submitted, over both tasks
    for node in NODES:
        received = sum(s.result.ByteSize() for s in c.nodes[node].submissions)
        assert c.transport.wire_bytes[node][1] == received > 0


def test_wire_bytes_sent_are_the_bytes_of_the_task_the_node_pulls():
    with cluster(NODES, PLAIN) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node])
        c.broadcast(Broadcast(dream_step("d0", round_=3), size=SIZE))

    for node in NODES:
        (pulled,) = c.nodes[node].pulled
        assert c.transport.wire_bytes[node][0] == pulled.ByteSize()


# ---- the real node logic agrees with the in-memory reference ------------------------------------
REAL = RunConfig(dataset="digits", clients=3, rounds=1, warmup_epochs=0, models=("mlp",), device="cpu",
                 partition="iid", seed=5, dream=DreamConfig(batch_size=4, global_steps=1), secagg=PLAIN)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(REAL.dataset)


def real_nodes(dataset):
    parts = client_partitions(REAL, dataset)
    return {f"node-{i}": build_node(REAL, i, dataset, parts, torch.device("cpu")) for i in range(3)}


def test_real_node_logic_sums_over_the_network_exactly_as_in_memory(digits):
    task = DreamStep("d0", 0, batch=0, step=0, seed=11, shape=(4, *digits.input_shape))
    size = int(np.prod(task.shape))
    request = Broadcast(task, size=size)

    reference = []

    def one_broadcast():
        reference.append((yield request))

    drive(one_broadcast(), real_nodes(digits))
    (expected,) = reference

    with cluster(NODES, PLAIN) as c:
        for node, logic in real_nodes(digits).items():
            c.node(node, logic, logic.weight)
        replies = c.broadcast(request)

    assert replies.total.contributors == expected.total.contributors == NODES
    np.testing.assert_array_equal(replies.total.total, expected.total.total)
    assert replies.total.weight == expected.total.weight == float(sum(len(p) for p in
                                                                      client_partitions(REAL, digits)))
    assert np.abs(replies.total.total).max() > 0  # a real dream update, not zeros
    assert dict(replies.traffic) == dict(expected.traffic) == {n: (0, 4 * size) for n in NODES}
    for node in NODES:
        got, want = replies.by_node[node], expected.by_node[node]
        assert isinstance(got, Contribution) and got.weight == want.weight
        np.testing.assert_array_equal(got.weighted_values, want.weighted_values)

