"""A sampled round over the task mailboxes: its sums run among the sampled nodes only.

Grpc-free core (Membership, Dispatcher, NetworkTransport, SecureRounds) with real node task
runners. A broadcast addressed `to` a subset posts tasks to that subset only, its secure sum is
a session of exactly those nodes (W their largest weight), bit for bit what the in-process
summer computes among the same members, and another round's sample starts another session;
SecAgg+ (auto above a forced switch-over) and an authenticated sparse session with a dropout
stay exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from transport_helpers import NoSnapshots, cluster, contribution, dream_step

from client_node.secure_contribution import SecureContribution
from client_node.task_runner import TaskRunner
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
    unauthenticated = dataclasses.replace(sparse, authentication="off")  # as the cluster's session
    expected = InProcessSecureSummer(unauthenticated, WEIGHTS).sum(
        {n: answer(n)(task) for n in NODES}, SIZE, task)
    assert dict(expected.protocol) == dict(replies.total.protocol)
    np.testing.assert_array_equal(replies.total.total, expected.total)
    plain = sum(WEIGHTS[n] * (np.arange(SIZE) - 3.5) for n in NODES)
    np.testing.assert_allclose(replies.total.total, plain, rtol=0, atol=1e-3)


def test_an_authenticated_sparse_session_of_a_sample_recovers_a_dropout_and_stays_exact():
    """Signed keys and survivor lists, the consistency round (a majority of the sample), a
    SecAgg+ neighbourhood, one sampled node silent at its masked input: the others' sum."""
    nodes = tuple(f"node-{i}" for i in range(8))
    weights = {n: 1.0 + i for i, n in enumerate(nodes)}
    keys = {n: Ed25519PrivateKey.generate() for n in nodes}
    roster = {n: k.public_key() for n, k in keys.items()}
    sample = nodes[:6]
    silent = "node-2"
    sparse = SecureAggregationConfig(enabled=True, graph="auto", complete_up_to=4)

    def reply(node):
        def answer(task):
            return contribution(weights[node] * np.full(SIZE, 0.5 + int(node[-1])), weights[node])
        return answer

    def silent_at_its_masked_input(node, task, result):
        return [] if node.node_id == silent and task.WhichOneof("body") == "dream_step" else [result]

    with cluster(nodes, sparse) as c:
        c.transport.secure.identities = {n: roster[n].public_bytes_raw() for n in nodes}
        for node in nodes:
            thread = c.node(node, reply(node), weights[node], start=False,
                            intercept=silent_at_its_masked_input)
            secure = SecureContribution(node, identity_key=keys[node], peer_identities=roster)
            thread.runner = TaskRunner(node, thread.logic, NoSnapshots(), secure=secure)
            thread.start()

        def answer_then_time_out():
            for node in sample:
                if node != silent:
                    c.nodes[node].wait_until(lambda n: any(
                        r.task_id == "r1/s0" for r in n.accepted()))
            c.time_out(61.0)  # past the step deadline: the silent node is a dropout

        replies = c.broadcast(Broadcast(dream_step("r1/s0", shape=(2, 1, 2, 2), round_=1),
                                        size=SIZE, to=sample), while_waiting=answer_then_time_out)
        session = c.transport.secure.session
        assert session is not None and session.server.config.authenticated
    total = replies.total
    assert dict(total.protocol) == {"graph": "secagg+", "degree": 2, "threshold": 2, "clients": 6,
                                    "colluding_nodes": 1}  # 2q - n = 2 (q = 4 of 6): c < 2
    contributors = tuple(n for n in sample if n != silent)
    assert total.contributors == contributors and silent in total.excluded
    expected = sum(weights[n] * (0.5 + int(n[-1])) for n in contributors)
    np.testing.assert_allclose(total.total, np.full(SIZE, expected), rtol=0, atol=1e-4)
    assert total.weight == pytest.approx(sum(weights[n] for n in contributors), abs=1e-4)


def test_a_sample_smaller_than_colluding_nodes_plus_two_starts_no_session_and_posts_nothing():
    """secagg.colluding_nodes = 1: a session needs c + 2 = 3 members. The config refuses a
    min_clients below that while sampling; should a sample of 2 still reach the coordinator (two
    of three sampled nodes gone), it starts no session, posts no secure task and sums nothing."""
    colluding = SecureAggregationConfig(enabled=True, graph="auto", colluding_nodes=1)
    with cluster(NODES, colluding) as c:
        for node in NODES:
            c.node(node, answer(node), WEIGHTS[node])
        pair = ("node-1", "node-3")
        small = c.broadcast(Broadcast(dream_step("r1/s0", shape=(2, 1, 2, 2), round_=1), size=SIZE,
                                      to=pair))
        assert c.transport.secure.sessions_started == 0 and c.transport.secure.session is None
        pulled = {n: [t.task_id for t in c.nodes[n].pulled] for n in NODES}
        three = ("node-0", "node-1", "node-3")
        enough = c.broadcast(Broadcast(dream_step("r2/s0", shape=(2, 1, 2, 2), round_=2), size=SIZE,
                                       to=three))
    assert small.total.weight == 0.0 and small.total.contributors == ()
    assert "fewer than 3 members" in small.total.excluded["*"]
    np.testing.assert_array_equal(small.total.total, np.zeros(SIZE))
    assert all(ids == [] for ids in pulled.values()), pulled  # no key, no mask, no compute task
    assert enough.total.contributors == three  # c + 2 members: a session, every one summed
