"""Authenticated secure rounds over the task mailboxes: identity keys pinned by the nodes.

The coordinator relays each member's Ed25519 identity key in SecAggBegin; every node checks the
relayed keys against the roster it trusts, signs its advertisement and the survivor list, and
the coordinator runs the consistency round before unmasking.
"""

from __future__ import annotations

import contextlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from transport_helpers import NoSnapshots, cluster, contribution, dream_step

from client_node.secure_contribution import SecureContribution
from client_node.task_runner import TaskRunner
from codream.config import SecureAggregationConfig
from codream.round_protocol import Broadcast

SECURE = SecureAggregationConfig(enabled=True, graph="complete")
NODES = ("node-0", "node-1", "node-2")
SIZE = 8
KEYS = {n: Ed25519PrivateKey.generate() for n in NODES}
ROSTER = {n: k.public_key() for n, k in KEYS.items()}


def _raw(node):
    return ROSTER[node].public_bytes_raw()


def _logic(node):
    return lambda task: contribution(np.full(SIZE, 1.0 + NODES.index(node)), 1.0)


@contextlib.contextmanager
def _authenticated_cluster(relayed):
    """Three nodes that pin ROSTER; the coordinator relays `relayed` (node id -> raw key)."""
    with cluster(NODES, SECURE) as built:
        built.transport.secure.identities = relayed
        for node in NODES:
            thread = built.node(node, _logic(node), 1.0, start=False)
            secure = SecureContribution(node, identity_key=KEYS[node], peer_identities=ROSTER)
            thread.runner = TaskRunner(node, thread.logic, NoSnapshots(), secure=secure)
            thread.start()
        yield built


def test_an_authenticated_step_signs_checks_consistency_and_sums():
    with _authenticated_cluster({n: _raw(n) for n in NODES}) as built:
        replies = built.broadcast(Broadcast(dream_step("d0"), size=SIZE))
        session = built.transport.secure.session
        assert session is not None and session.server.config.authenticated
        np.testing.assert_allclose(replies.total.total, np.full(SIZE, 6.0), atol=1e-5)
        assert replies.total.contributors == NODES
        for node in NODES:
            ids = [r.task_id for r in built.nodes[node].accepted()]
            assert ids[-2:] == ["d0/consistency", "d0/unmask"], ids


def test_a_substituted_identity_key_is_refused_by_the_nodes_and_nothing_is_summed():
    mitm = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    relayed = {n: _raw(n) for n in NODES} | {"node-1": mitm}
    with _authenticated_cluster(relayed) as built:
        def time_out():
            for node in NODES:
                built.nodes[node].wait_until(lambda n: bool(n.submissions))
            built.time_out(120)

        replies = built.broadcast(Broadcast(dream_step("d0"), size=SIZE), while_waiting=time_out)
        assert replies.total.weight == 0.0 and replies.total.contributors == ()
        for node in NODES:
            (first, *_) = built.nodes[node].submissions
            assert "not the pinned one" in first.result.skip.reason or \
                "another identity key" in first.result.skip.reason, first.result


def test_without_a_key_for_every_member_the_session_is_not_authenticated_and_pinned_nodes_refuse():
    relayed = {n: _raw(n) for n in NODES[:2]}  # node-2 has none: the coordinator would downgrade
    with _authenticated_cluster(relayed) as built:
        def time_out():
            for node in NODES:
                built.nodes[node].wait_until(lambda n: bool(n.submissions))
            built.time_out(120)

        replies = built.broadcast(Broadcast(dream_step("d0"), size=SIZE), while_waiting=time_out)
        assert replies.total.weight == 0.0
        for node in NODES:
            assert "only in authenticated sessions" in built.nodes[node].submissions[0].result.skip.reason


def test_the_next_step_of_an_authenticated_session_runs_its_own_consistency_round():
    with _authenticated_cluster({n: _raw(n) for n in NODES}) as built:
        first = built.broadcast(Broadcast(dream_step("d0"), size=SIZE))
        second = built.broadcast(Broadcast(dream_step("d1", step=1), size=SIZE))
        assert built.transport.secure.sessions_started == 1
        for replies in (first, second):
            np.testing.assert_allclose(replies.total.total, np.full(SIZE, 6.0), atol=1e-5)
        ids = [r.task_id for r in built.nodes["node-0"].accepted()]
        assert ids.count("d1/consistency") == 1 and ids[-1] == "d1/unmask", ids


def test_required_authentication_leaves_out_a_member_without_an_identity_key():
    """secagg.authentication = "required": node-2 has no key, so the session is node-0 and node-1,
    authenticated; under "auto" the same relay would downgrade the whole session instead."""
    required = SecureAggregationConfig(enabled=True, graph="complete", authentication="required")
    with cluster(NODES, required) as built:
        built.transport.secure.identities = {n: _raw(n) for n in NODES[:2]}
        for node in NODES:
            thread = built.node(node, _logic(node), 1.0, start=False)
            secure = (SecureContribution(node, identity_key=KEYS[node], peer_identities=ROSTER)
                      if node != "node-2" else SecureContribution(node))
            thread.runner = TaskRunner(node, thread.logic, NoSnapshots(), secure=secure)
            thread.start()
        replies = built.broadcast(Broadcast(dream_step("d0"), size=SIZE))
        session = built.transport.secure.session
        assert session is not None and session.server.config.authenticated
        assert session.node_ids == ["node-0", "node-1"]
        np.testing.assert_allclose(replies.total.total, np.full(SIZE, 3.0), atol=1e-5)  # 1 + 2
        assert replies.total.contributors == ("node-0", "node-1")
        assert built.nodes["node-2"].accepted() == []  # never asked to take part
        assert "no identity key" in replies.total.excluded["node-2"]


def test_colluding_nodes_raises_the_sessions_threshold_and_needs_c_plus_two_members():
    """secagg.colluding_nodes = 1 at n = 3: t = floor((3 + 1)/2) + 1 = 3 (not 2), recorded in
    the sum's protocol with the bound it holds; with only two of the three nodes present the
    setting asks for 3 members, so the two release nothing."""
    settings = SecureAggregationConfig(enabled=True, graph="complete", colluding_nodes=1)
    for present, expected in ((NODES, 3), (NODES[:2], None)):
        with cluster(NODES, settings) as built:
            built.transport.secure.identities = {n: _raw(n) for n in NODES}
            for node in present:
                thread = built.node(node, _logic(node), 1.0, start=False)
                secure = SecureContribution(node, identity_key=KEYS[node], peer_identities=ROSTER)
                thread.runner = TaskRunner(node, thread.logic, NoSnapshots(), secure=secure)
                thread.start()
            replies = built.broadcast(Broadcast(dream_step("d0"), size=SIZE))
            session = built.transport.secure.session
        if expected is None:
            assert session is None and replies.total.weight == 0.0
            assert replies.total.excluded == {"*": "fewer than 3 members for a secure sum"}
            continue
        assert session is not None and session.server.config.threshold == expected
        np.testing.assert_allclose(replies.total.total, np.full(SIZE, 6.0), atol=1e-5)
        assert dict(replies.total.protocol)["colluding_nodes"] == 2  # 2t - n = 3 > 2
