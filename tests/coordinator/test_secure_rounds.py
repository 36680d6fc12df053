"""Secure rounds (SecAggServer sessions over the task mailboxes) driven by NetworkTransport.broadcast.

Secure aggregation on, complete graph, three nodes (threshold 2). Everything but the task
logic is real: Dispatcher, Membership, the federation calls the servicer makes, TaskRunner and
its SecureContribution (the node's own SecAggClient). The coordinator only ever sees masked
inputs, so the checks are on what it releases: the same sum as a plain one to the fixed-point
quantum, bit for bit the sum of the in-process reference (`InProcessSecureSummer`, the summer
`codream simulate` uses), a recovered dropout, nothing for fewer than 2 contributors, a forged
client index refused, and one key agreement per session and block.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transport_helpers import TIMEOUTS, cluster, contribution, dream_step

from codream.config import DreamConfig, RunConfig, SecureAggregationConfig
from codream.data import load_dataset
from codream.in_memory_transport import drive
from codream.messages import DreamStep, Skip
from codream.node_build import build_node, client_partitions
from codream.round_protocol import Broadcast
from codream.secure_plan import session_config
from codream.secure_summer import InProcessSecureSummer
from coordinator.errors import InvalidMessage, PermissionDenied
from protos import serde
from protos.codream.v1 import codream_pb2 as pb
from secagg import decode
from secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskResponse

SECURE = SecureAggregationConfig(enabled=True, graph="complete")  # dream_clip 10, 10 steps a block
NODES = ("node-0", "node-1", "node-2")
WEIGHTS = {"node-0": 10.0, "node-1": 20.0, "node-2": 40.0}  # W = 40
SCALES = {"node-0": 0.5, "node-1": 1.0, "node-2": 1.5}
SIZE = 8


def centred(size: int) -> np.ndarray:
    return np.arange(size, dtype=np.float64) - 3.5  # -3.5 ... 3.5


def weighted_values(node: str, size: int = SIZE, step: int = 0) -> np.ndarray:
    """w·v with v = scale · (i - 3.5) · (1 + step/4): |(w/W)·v| <= 1.5 · 3.5 · 1.75 < the clip 10."""
    return WEIGHTS[node] * SCALES[node] * centred(size) * (1 + 0.25 * step)


def ramp_logic(node: str):
    def answer(task):
        assert isinstance(task, DreamStep), task
        size = int(np.prod(task.shape))
        return contribution(weighted_values(node, size, task.step), WEIGHTS[node])

    return answer


def quantum(n_clients: int = 3, size: int = SIZE) -> tuple[float, float]:
    """The largest |secure - exact| of a released sum and of its weight (both scaled by W = 40)."""
    config = session_config(SECURE, n_clients, size, SECURE.dream_clip)
    unit = max(WEIGHTS.values())
    return config.values.sum_error_bound(n_clients) * unit, config.weights.sum_error_bound(n_clients) * unit


def reference(task, contributions, size: int = SIZE, weights=WEIGHTS):
    """The in-process secure summer on the same inputs (every node's weight fixes W)."""
    return InProcessSecureSummer(SECURE, weights).sum(contributions, size, task)


def contributions_of(nodes, size: int = SIZE, step: int = 0):
    return {n: contribution(weighted_values(n, size, step), WEIGHTS[n]) for n in nodes}


# ---- the released sum ------------------------------------------------------------------------
def test_the_released_sum_is_the_plain_sum_and_bit_for_bit_the_in_process_secure_sum():
    task = dream_step("d0")
    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node])
        replies = c.broadcast(Broadcast(task, size=SIZE))

    total = replies.total
    assert total.contributors == NODES and dict(total.excluded) == {}
    # plain: Σ w·v = (10·0.5 + 20·1 + 40·1.5)·(i - 3.5) = 85·(i - 3.5), Σ w = 70
    values_quantum, weight_quantum = quantum()
    assert 0 < values_quantum < 1e-5
    np.testing.assert_allclose(total.total, 85.0 * centred(SIZE), rtol=0, atol=values_quantum)
    assert abs(total.weight - 70.0) <= weight_quantum
    expected = reference(task, contributions_of(NODES))
    np.testing.assert_array_equal(total.total, expected.total)
    assert total.weight == expected.weight
    assert replies.by_node == {}  # nothing per node under secure aggregation
    assert dict(replies.traffic) == {n: (32, 32) for n in NODES}
    for node in NODES:  # and no node ever handed in a clear value
        bodies = [r.WhichOneof("body") for r in c.nodes[node].accepted()]
        assert bodies == ["secagg_message", "secagg_message", "masked", "secagg_message"], bodies


def test_a_node_silent_mid_step_is_recovered_and_excluded_and_stays_out_of_the_session():
    def silent_on_its_masked_input(node, task, result):
        return [] if task.WhichOneof("body") == "dream_step" else [result]

    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node],
                   intercept=silent_on_its_masked_input if node == "node-2" else None)

        def answer_then_time_out():
            for node in ("node-0", "node-1"):
                c.nodes[node].wait_until(lambda n: bool(n.accepted("d0")))
            c.nodes["node-2"].wait_until(lambda n: any(t.task_id == "d0" for t in n.pulled))
            c.time_out(TIMEOUTS.step + 1)  # the masked inputs' deadline

        task = dream_step("d0")
        replies = c.broadcast(Broadcast(task, size=SIZE), while_waiting=answer_then_time_out)

        # node-2 had advertised its keys and sent its shares: it is recovered, not an abort
        assert len(c.nodes["node-2"].accepted()) == 2
        total = replies.total
        assert total.contributors == ("node-0", "node-1")
        assert dict(total.excluded) == {"node-2": "dropped out of the secure step (recovered)"}
        values_quantum, weight_quantum = quantum()
        np.testing.assert_allclose(total.total, 25.0 * centred(SIZE), rtol=0, atol=values_quantum)
        assert abs(total.weight - 30.0) <= weight_quantum
        expected = reference(task, contributions_of(("node-0", "node-1")))
        np.testing.assert_array_equal(total.total, expected.total)
        assert total.weight == expected.weight

        # the next step of the block goes on without it, in the same session
        pulled_before = len(c.nodes["node-2"].pulled)
        step1 = c.broadcast(Broadcast(dream_step("d1", step=1), size=SIZE))
        assert step1.total.contributors == ("node-0", "node-1")
        assert dict(step1.total.excluded) == {"node-2": "left the secure session before this step"}
        np.testing.assert_allclose(step1.total.total, 1.25 * 25.0 * centred(SIZE), rtol=0,
                                   atol=values_quantum)
        assert c.transport.secure.sessions_started == 1
        assert len(c.nodes["node-2"].pulled) == pulled_before  # it was sent nothing


def test_a_node_that_left_the_session_is_not_counted_as_receiving_later_steps():
    def silent_on_its_masked_input(node, task, result):
        return [] if task.WhichOneof("body") == "dream_step" else [result]

    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node],
                   intercept=silent_on_its_masked_input if node == "node-2" else None)

        def answer_then_time_out():
            for node in ("node-0", "node-1"):
                c.nodes[node].wait_until(lambda n: bool(n.accepted("d0")))
            c.nodes["node-2"].wait_until(lambda n: any(t.task_id == "d0" for t in n.pulled))
            c.time_out(TIMEOUTS.step + 1)  # the masked inputs' deadline

        c.broadcast(Broadcast(dream_step("d0"), size=SIZE), while_waiting=answer_then_time_out)
        step1 = c.broadcast(Broadcast(dream_step("d1", step=1), size=SIZE))

    assert not any(t.task_id == "d1" for t in c.nodes["node-2"].pulled)
    assert dict(step1.traffic) == {"node-0": (32, 32), "node-1": (32, 32)}


# ---- nothing released ----------------------------------------------------------------------
def test_a_single_member_releases_nothing_and_is_sent_nothing():
    with cluster(NODES, SECURE) as c:
        alone = c.node("node-0", ramp_logic("node-0"), WEIGHTS["node-0"])  # the others never join
        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE))

    total = replies.total
    assert total.weight == 0.0 and total.contributors == ()
    np.testing.assert_array_equal(total.total, np.zeros(SIZE))
    assert dict(total.excluded) == {"*": "fewer than 2 members for a secure sum"}
    assert alone.pulled == [] and c.transport.secure.sessions_started == 0
    assert dict(replies.traffic) == {}


def test_one_contributor_among_skips_releases_nothing():
    def declines(task):
        return Skip("no fresh data")

    def fails(task):
        raise ValueError("model diverged")

    with cluster(NODES, SECURE) as c:
        c.node("node-0", ramp_logic("node-0"), WEIGHTS["node-0"])
        c.node("node-1", fails, WEIGHTS["node-1"])  # masks zeros with weight 0, stays in
        c.node("node-2", declines, WEIGHTS["node-2"])
        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE))

    total = replies.total
    assert total.weight == 0.0 and total.contributors == ()
    np.testing.assert_array_equal(total.total, np.zeros(SIZE))  # not node-0's update
    assert dict(total.excluded) == {
        "node-0": "fewer than 2 contributors: nothing released",
        "node-1": "ValueError: model diverged",
        "node-2": "no fresh data",
    }
    masked = {n: c.nodes[n].accepted("d0")[0].masked for n in NODES}
    assert [masked[n].skip_reason for n in NODES] == ["", "ValueError: model diverged", "no fresh data"]


def test_too_few_survivors_abort_the_step_and_end_the_session():
    def silent_on_its_masked_input(node, task, result):
        return [] if task.WhichOneof("body") == "dream_step" else [result]

    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node],
                   intercept=None if node == "node-0" else silent_on_its_masked_input)

        def answer_then_time_out():
            c.nodes["node-0"].wait_until(lambda n: bool(n.accepted("d0")))
            for node in ("node-1", "node-2"):
                c.nodes[node].wait_until(lambda n: any(t.task_id == "d0" for t in n.pulled))
            c.time_out(TIMEOUTS.step + 1)  # the masked inputs' deadline

        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE), while_waiting=answer_then_time_out)

    total = replies.total
    assert total.weight == 0.0 and total.contributors == ()
    np.testing.assert_array_equal(total.total, np.zeros(SIZE))
    (reason,) = total.excluded.values()
    assert list(total.excluded) == ["*"] and reason.startswith("secure step aborted")
    assert c.transport.secure.session is None
    assert not any(t.task_id == "d0/unmask" for n in NODES for t in c.nodes[n].pulled)  # no share asked


# ---- one node cannot speak for another -----------------------------------------------------------
_MESSAGE_KINDS = {"secagg_begin": AdvertiseKeys, "key_directory": ShareKeys, "dream_step": MaskedInput,
                  "unmask_request": UnmaskResponse}


def _as_client(result: pb.TaskResult, body: str, client_id: int) -> pb.TaskResult:
    """The same result, re-encoded with the header claiming `client_id`."""
    forged = pb.TaskResult()
    forged.CopyFrom(result)
    data = result.masked.masked_input if body == "dream_step" else result.secagg_message
    message = decode(data, _MESSAGE_KINDS[body])
    message = dataclasses.replace(message, header=dataclasses.replace(message.header, client_id=client_id))
    if body == "dream_step":
        forged.masked.masked_input = message.to_bytes()
    else:
        forged.secagg_message = message.to_bytes()
    return forged


@pytest.mark.parametrize("body", ["secagg_begin", "key_directory", "dream_step", "unmask_request"])
def test_a_message_claiming_another_client_index_is_refused(body):
    def forge_first(node, task, result):
        if task.WhichOneof("body") != body:
            return [result]
        return [_as_client(result, body, client_id=0), result]

    task = dream_step("d0")
    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node], intercept=forge_first if node == "node-1" else None)
        replies = c.broadcast(Broadcast(task, size=SIZE))

    (refused,) = c.nodes["node-1"].refusals()
    assert isinstance(refused, PermissionDenied)
    assert str(refused) == "node-1 is client 1 of this session, not 0"
    # the forgery never reached the server (client 0's own message was still taken), and the
    # genuine one after it was: the sum is everyone's, bit for bit the reference
    assert replies.total.contributors == NODES and dict(replies.total.excluded) == {}
    expected = reference(task, contributions_of(NODES))
    np.testing.assert_array_equal(replies.total.total, expected.total)


def test_a_clear_contribution_for_a_secure_step_is_refused():
    def clear_first(node, task, result):
        if task.WhichOneof("body") != "dream_step":
            return [result]
        clear = pb.TaskResult(member_id=result.member_id, task_id=result.task_id, sequence=result.sequence)
        serde.reply_to_proto(contribution(weighted_values(node.node_id), WEIGHTS[node.node_id]), clear)
        return [clear, result]

    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node], intercept=clear_first if node == "node-1" else None)
        replies = c.broadcast(Broadcast(dream_step("d0"), size=SIZE))

    (refused,) = c.nodes["node-1"].refusals()
    assert isinstance(refused, InvalidMessage)
    assert str(refused) == "d0: expected a masked result under secure aggregation, got contribution"
    assert replies.total.contributors == NODES


# ---- sessions and blocks -------------------------------------------------------------------
def test_a_session_lasts_across_the_steps_of_a_block_and_a_new_one_starts_when_the_length_changes():
    settings = dataclasses.replace(SECURE, steps_per_block=2)

    def advertised(node):
        return [t.task_id for t in node.pulled if t.WhichOneof("body") == "secagg_begin"]

    def secure_step(node, task_id):
        (task,) = [t for t in node.pulled if t.task_id == task_id]
        return task.secure

    with cluster(NODES, settings) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node])
        sums = {}
        for step in range(3):  # block 0: steps 0 and 1; block 1 starts at step 2
            task = dream_step(f"d{step}", step=step)
            sums[task.task_id] = (task, c.broadcast(Broadcast(task, size=SIZE)).total)
        first = c.transport.secure.session.server.session_id
        assert c.transport.secure.sessions_started == 1
        prefix = f"secagg/{first.hex()[:8]}"
        for node in c.nodes.values():
            assert advertised(node) == [f"{prefix}/block0/advertise", f"{prefix}/block1/advertise"]
            assert node.runner.secure.session_id == first
            steps = [secure_step(node, f"d{s}") for s in range(3)]
            assert [(s.session_id, s.step) for s in steps] == [(first, 0), (first, 1), (first, 2)]
            # share bundles come with a block's first step only
            assert [bool(s.share_delivery) for s in steps] == [True, False, True]

        short = dream_step("d3", shape=(1, 1, 2, 2))  # 4 values: a new session
        sums["d3"] = (short, c.broadcast(Broadcast(short, size=4)).total)
        second = c.transport.secure.session.server.session_id
        assert second != first and c.transport.secure.sessions_started == 2
        assert c.transport.secure.session.server.config.dim == 4
        for node in c.nodes.values():
            assert advertised(node)[-1] == f"secagg/{second.hex()[:8]}/block0/advertise"
            assert len(advertised(node)) == 3
            assert node.runner.secure.session_id == second
            assert (secure_step(node, "d3").session_id, secure_step(node, "d3").step) == (second, 0)

    for task_id, (task, total) in sums.items():
        size = int(np.prod(task.shape))
        assert total.contributors == NODES, task_id
        expected = InProcessSecureSummer(settings, WEIGHTS).sum(contributions_of(NODES, size, task.step),
                                                                size, task)
        np.testing.assert_array_equal(total.total, expected.total)
        assert total.weight == expected.weight
        np.testing.assert_allclose(total.total, 85.0 * centred(size) * (1 + 0.25 * task.step), rtol=0,
                                   atol=quantum(size=size)[0])


# ---- the real node logic agrees with `codream simulate`'s secure summer ----------------------------
REAL = RunConfig(dataset="digits", clients=3, rounds=1, warmup_epochs=0, models=("mlp",), device="cpu",
                 partition="iid", seed=5, dream=DreamConfig(batch_size=4, global_steps=1), secagg=SECURE)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(REAL.dataset)


def real_nodes(dataset):
    parts = client_partitions(REAL, dataset)
    return {f"node-{i}": build_node(REAL, i, dataset, parts, torch.device("cpu")) for i in range(3)}


def test_real_node_logic_sums_securely_bit_for_bit_as_the_in_process_secure_summer(digits):
    task = DreamStep("d0", 0, batch=0, step=0, seed=11, shape=(4, *digits.input_shape))
    size = int(np.prod(task.shape))
    request = Broadcast(task, size=size)
    nodes = real_nodes(digits)
    summer = InProcessSecureSummer(SECURE, {n: logic.weight for n, logic in nodes.items()})
    simulated = []

    def one_broadcast():
        simulated.append((yield request))

    drive(one_broadcast(), nodes, summer)
    (expected,) = simulated

    with cluster(NODES, SECURE) as c:
        for node, logic in real_nodes(digits).items():
            c.node(node, logic, logic.weight)
        replies = c.broadcast(request)

    assert replies.total.contributors == expected.total.contributors == NODES
    np.testing.assert_array_equal(replies.total.total, expected.total.total)
    assert replies.total.weight == expected.total.weight
    assert np.abs(replies.total.total).max() > 0  # a real dream update, not zeros
    assert c.transport.secure.clipped == summer.clipped
