"""A sampled round over the task mailboxes: its sums run among the sampled nodes only.

Grpc-free core (Membership, Dispatcher, NetworkTransport, SecureRounds) with real node task
runners. A broadcast addressed `to` a subset posts tasks to that subset only, its secure sum is
a session of exactly those nodes (W their largest weight), bit for bit what the in-process
summer computes among the same members, and another round's sample starts another session.
"""

from __future__ import annotations

import numpy as np
from transport_helpers import cluster, contribution, dream_step

from codream.config import SecureAggregationConfig
from codream.messages import DreamStep, EvalReport, Evaluate
from codream.round_protocol import Broadcast
from codream.secure_summer import InProcessSecureSummer

SECURE = SecureAggregationConfig(enabled=True, graph="auto")
NODES = ("node-0", "node-1", "node-2", "node-3", "node-4")
WEIGHTS = {n: 10.0 * (i + 1) for i, n in enumerate(NODES)}
SIZE = 8


def answer(node: str):
    def reply(task):
        if isinstance(task, Evaluate):
            return EvalReport(accuracy=0.5, loss=1.0, num_samples=10)
        assert isinstance(task, DreamStep), task
        values = WEIGHTS[node] * (np.arange(SIZE, dtype=np.float64) - 3.5) * (1 + task.step)
        return contribution(values, WEIGHTS[node])

    return reply


def test_a_sum_addressed_to_the_sampled_nodes_is_their_own_session_and_the_others_idle():
    first, second = ("node-0", "node-2", "node-3"), ("node-1", "node-3", "node-4")
    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, answer(node), WEIGHTS[node])
        step0 = dream_step("r1/s0", shape=(2, 1, 2, 2), round_=1)
        replies = c.broadcast(Broadcast(step0, size=SIZE, to=first))
        step1 = dream_step("r1/s1", shape=(2, 1, 2, 2), round_=1, step=1)
        again = c.broadcast(Broadcast(step1, size=SIZE, to=first))
        assert c.transport.secure.sessions_started == 1  # one session for the round's sample
        evaluated = c.broadcast(Broadcast(Evaluate("r1/eval", 1), to=None))  # reach: all
        round1 = {n: [t.task_id for t in c.nodes[n].pulled] for n in NODES}
        other = c.broadcast(Broadcast(dream_step("r2/s0", shape=(2, 1, 2, 2), round_=2), size=SIZE,
                                      to=second))
        assert c.transport.secure.sessions_started == 2  # another sample, another session
        pulled = {n: [t.task_id for t in c.nodes[n].pulled] for n in NODES}

    assert replies.total.contributors == first and again.total.contributors == first
    assert set(replies.traffic) == set(first)
    assert other.total.contributors == second
    assert dict(replies.total.protocol) == {"graph": "complete", "degree": 2, "threshold": 2,
                                            "clients": 3}
    summer = InProcessSecureSummer(SECURE, WEIGHTS)  # knows all five; sums among the sampled
    for task, got, members in ((step0, replies, first), (step1, again, first),
                               (dream_step("r2/s0", shape=(2, 1, 2, 2), round_=2), other, second)):
        contributions = {n: answer(n)(task) for n in members}
        expected = summer.sum(contributions, SIZE, task, members)
        np.testing.assert_array_equal(got.total.total, expected.total)
        assert got.total.weight == expected.weight
    # unsampled nodes pulled nothing of the round's sums, only the evaluation that reached all
    assert round1["node-1"] == round1["node-4"] == ["r1/eval"]
    assert all(len(round1[n]) > 3 for n in first)  # keys, shares, masked inputs, unmasking, eval
    assert sorted(evaluated.by_node) == list(NODES)
    assert all("r2/s0" not in pulled[n] for n in NODES if n not in second)


def test_auto_picks_the_sparse_graph_above_its_switch_over_size_and_the_sum_stays_exact():
    sparse = SecureAggregationConfig(enabled=True, graph="auto", complete_up_to=3)
    with cluster(NODES, sparse) as c:
        for node in NODES:
            c.node(node, answer(node), WEIGHTS[node])
        task = dream_step("r1/s0", shape=(2, 1, 2, 2), round_=1)
        replies = c.broadcast(Broadcast(task, size=SIZE))
        small = c.broadcast(Broadcast(dream_step("r2/s0", shape=(2, 1, 2, 2), round_=2), size=SIZE,
                                      to=("node-0", "node-1", "node-4")))
    # 5 members > 3: Bell et al.'s degree and threshold for n = 5 (5% and 10% round to none)
    assert dict(replies.total.protocol) == {"graph": "secagg+", "degree": 2, "threshold": 2,
                                            "clients": 5}
    assert dict(small.total.protocol)["graph"] == "complete"  # a sample of 3: complete again
    assert replies.total.contributors == NODES
    expected = InProcessSecureSummer(sparse, WEIGHTS).sum({n: answer(n)(task) for n in NODES}, SIZE,
                                                          task)
    assert dict(expected.protocol) == dict(replies.total.protocol)
    np.testing.assert_array_equal(replies.total.total, expected.total)
    plain = sum(WEIGHTS[n] * (np.arange(SIZE) - 3.5) for n in NODES)
    np.testing.assert_allclose(replies.total.total, plain, rtol=0, atol=1e-3)
