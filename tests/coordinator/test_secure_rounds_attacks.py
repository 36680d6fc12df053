"""A malicious or silent node against SecureRounds over the real Dispatcher, Membership and
Federation (the calls the servicer makes), with every node's own TaskRunner and SecAggClient.

Each attack is one node rewriting its own results before they are handed in. The honest nodes'
step completes; the attacker is refused (with the status the servicer would answer), left out,
or, proven to have cheated, excluded from later sessions.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from test_secure_rounds import NODES, SECURE, SIZE, WEIGHTS, contributions_of, ramp_logic, reference
from transport_helpers import TIMEOUTS, cluster, dream_step

from codream.round_protocol import Broadcast
from coordinator.status import status_for
from protos.codream.v1 import codream_pb2 as pb
from secagg import DroppedClient, InProcessSession, MalformedMessage, SecAggConfig, decode
from secagg.errors import InvalidPublicKey, InvalidShare
from secagg.messages import KIND_SELF_MASK, AdvertiseKeys, MaskedInput, ShareKeys, UnmaskResponse

INVALID = "INVALID_ARGUMENT"
DEADLINES = {"secagg_begin": TIMEOUTS.secagg_round, "key_directory": TIMEOUTS.secagg_round,
             "dream_step": TIMEOUTS.step, "unmask_request": TIMEOUTS.secagg_round}


def _answered(node, body) -> bool:
    return any(s.task.WhichOneof("body") == body and s.refused is None for s in node.submissions)


def _pulled(node, body) -> bool:
    return any(t.WhichOneof("body") == body for t in node.pulled)


def time_out_after(c, quiet: str, body: str, refused: bool):
    """While the broadcast runs: once every other node has answered `body` and `quiet` has
    pulled it (and, if `refused`, been refused on it), move the clock past that phase's deadline."""
    def wait():
        for node in NODES:
            if node != quiet:
                c.nodes[node].wait_until(lambda n: _answered(n, body))
        c.nodes[quiet].wait_until(lambda n: _pulled(n, body))
        if refused:
            c.nodes[quiet].wait_until(lambda n: bool(n.refusals()))
        c.time_out(DEADLINES[body] + 1)
    return wait


def rewrite(node_id: str, body: str, change):
    """An intercept: `node_id` hands in `change(node, task, result)` for its first `body` task
    (a refusal is recorded) and then nothing more for it."""
    done: list[str] = []

    def intercept(node, task, result):
        if node.node_id != node_id or task.WhichOneof("body") != body or done:
            return [result]
        done.append(task.task_id)
        bad = pb.TaskResult()
        bad.CopyFrom(result)
        change(node, task, bad)
        return [bad]
    return intercept


def _secagg(result, kind):
    data = result.masked.masked_input if kind is MaskedInput else result.secagg_message
    return decode(data, kind)


def _set(result, message):
    if isinstance(message, MaskedInput):
        result.masked.masked_input = message.to_bytes()
    else:
        result.secagg_message = message.to_bytes()


def run(intercept=None, quiet=None, body=None, refused=True):
    """Steps d0 and d1 with `intercept` on every node; `quiet` goes silent at `body` in d0."""
    task = dream_step("d0")
    with cluster(NODES, SECURE) as c:
        for node in NODES:
            c.node(node, ramp_logic(node), WEIGHTS[node], intercept=intercept)
        wait = time_out_after(c, quiet, body, refused) if quiet else None
        replies = c.broadcast(Broadcast(task, size=SIZE), while_waiting=wait)
        after = c.broadcast(Broadcast(dream_step("d1", step=1), size=SIZE))
    return c, task, replies.total, after.total


def assert_sum_of(total, task, nodes, step: int = 0, session=NODES):
    """Bit for bit the in-process secure sum of `nodes` in a session of `session`."""
    assert total.contributors == tuple(nodes)
    expected = reference(task, contributions_of(nodes, step=step), weights={n: WEIGHTS[n] for n in session})
    np.testing.assert_array_equal(total.total, expected.total)
    assert total.weight == expected.weight


# ---- (f) a silent node at any phase, whatever its index, is a dropout --------------------------
def test_the_old_loop_met_a_silent_node_0_before_closing_advertise_keys():
    """The unpatched path: the directory of client 0 was asked for before the round was closed."""
    session = InProcessSession.create(SecAggConfig(n_clients=3, dim=4))
    for i in (1, 2):
        session.server.receive_advertise(session.clients[i].advertise_keys())
    with pytest.raises(DroppedClient, match="client 0 has left this session"):
        session.server.key_directory(0)  # closes the round, drops 0, then refuses it


LEFT = "left the secure session before this step"
EXPECTED_SILENT = {
    "secagg_begin": (LEFT, False), "key_directory": (LEFT, False),
    "dream_step": ("dropped out of the secure step (recovered)", False),
    "unmask_request": (None, True),  # its masked input was in: it counts
}


@pytest.mark.parametrize("quiet", ["node-0", "node-2"])
@pytest.mark.parametrize("body", list(EXPECTED_SILENT))
def test_a_node_silent_at_any_phase_whatever_its_index_is_a_dropout(quiet, body):
    first: list[str] = []

    def silent(node, task, result):  # at the first task of that kind (of d0) only
        if node.node_id == quiet and task.WhichOneof("body") == body:
            first.append(first[0] if first else task.task_id)
            return [] if task.task_id == first[0] else [result]
        return [result]

    c, task, total, after = run(silent, quiet, body, refused=False)
    reason, counted = EXPECTED_SILENT[body]
    others = tuple(n for n in NODES if n != quiet)
    assert_sum_of(total, task, NODES if counted else others)
    assert dict(total.excluded) == ({} if counted else {quiet: reason})
    assert c.transport.secure.sessions_started == 1
    if counted:
        assert after.contributors == NODES and dict(after.excluded) == {}
    else:
        assert after.contributors == others and dict(after.excluded) == {quiet: LEFT}


# ---- (a) a small-order key -------------------------------------------------------------------
def test_a_small_order_key_is_refused_and_only_its_sender_is_left_out():
    def small_order(node, task, bad):
        message = _secagg(bad, AdvertiseKeys)
        _set(bad, dataclasses.replace(message, c_public=bytes(32)))

    c, task, total, _ = run(rewrite("node-1", "secagg_begin", small_order), "node-1", "secagg_begin")
    (refused,) = c.nodes["node-1"].refusals()
    assert isinstance(refused, InvalidPublicKey) and status_for(refused).name == INVALID
    assert_sum_of(total, task, ("node-0", "node-2"))
    assert dict(total.excluded) == {"node-1": LEFT}


# ---- (b) random bytes as one bundle ------------------------------------------------------------
def test_a_garbage_bundle_to_one_receiver_keeps_every_node_in_the_sum():
    def garble_to_node_0(node, task, bad):
        message = _secagg(bad, ShareKeys)
        _set(bad, dataclasses.replace(message, ciphertexts=tuple(
            (r, os.urandom(len(ct)) if r == 0 else ct) for r, ct in message.ciphertexts)))

    c, task, total, after = run(rewrite("node-2", "key_directory", garble_to_node_0))
    assert c.nodes["node-2"].refusals() == []
    assert_sum_of(total, task, NODES)
    assert dict(total.excluded) == {}
    assert set(c.nodes["node-0"].runner.secure.client.unheld) == {2}
    assert_sum_of(after, dream_step("d1", step=1), NODES, step=1)


# ---- (c) a ShareKeys that leaves a neighbour out ----------------------------------------------
def test_a_share_keys_to_only_some_neighbours_is_refused_and_its_sender_left_out():
    def partial(node, task, bad):
        message = _secagg(bad, ShareKeys)
        _set(bad, dataclasses.replace(message, ciphertexts=message.ciphertexts[1:]))

    c, task, total, _ = run(rewrite("node-2", "key_directory", partial), "node-2", "key_directory")
    (refused,) = c.nodes["node-2"].refusals()
    assert isinstance(refused, MalformedMessage) and status_for(refused).name == INVALID
    assert "gives no bundle to live neighbours [0]" in str(refused)
    assert_sum_of(total, task, ("node-0", "node-1"))
    assert dict(total.excluded) == {"node-2": LEFT}


# ---- (d) a wrong b-share ---------------------------------------------------------------------
def test_a_wrong_b_share_is_refused_naming_its_holder_who_is_then_excluded():
    def wrong_share(node, task, bad):
        message = _secagg(bad, UnmaskResponse)
        _set(bad, dataclasses.replace(message, shares=tuple(
            (p, k, bytes(len(s)) if (p, k) == (2, KIND_SELF_MASK) else s) for p, k, s in message.shares)))

    c, task, total, after = run(rewrite("node-0", "unmask_request", wrong_share), "node-0",
                                "unmask_request")
    (refused,) = c.nodes["node-0"].refusals()
    assert isinstance(refused, InvalidShare) and refused.holder == 0
    assert status_for(refused).name == INVALID
    assert_sum_of(total, task, NODES)  # node-0's input was in; the others' shares rebuilt it all
    assert c.transport.secure.excluded == {"node-0": "revealed a share that is not the one it was dealt"}
    assert_sum_of(after, dream_step("d1", step=1), ("node-1", "node-2"), step=1,
                  session=("node-1", "node-2"))
    assert dict(after.excluded) == {
        "node-0": "excluded from secure sums: it revealed a share that is not the one it was dealt"}
    assert c.transport.secure.sessions_started == 2


def test_a_node_whose_dealt_shares_do_not_rebuild_its_commitment_is_excluded_after_one_abort():
    def false_commitment(node, task, bad):
        message = dataclasses.replace(_secagg(bad, AdvertiseKeys),
                                      b_commitments=(bytes(32),) * SECURE.steps_per_block)
        node.runner.secure.client._own_advert = message  # a malicious node sends what it likes
        _set(bad, message)

    c, task, total, after = run(rewrite("node-1", "secagg_begin", false_commitment))
    assert total.contributors == () and total.weight == 0.0
    assert "client 1 dealt inconsistent shares" in total.excluded["*"]
    assert c.transport.secure.excluded == {
        "node-1": "dealt shares that do not rebuild the secret it advertised"}
    assert_sum_of(after, dream_step("d1", step=1), ("node-0", "node-2"), step=1,
                  session=("node-0", "node-2"))


# ---- (e) a forged clipped count --------------------------------------------------------------
def test_a_forged_clipped_count_is_clamped_and_the_sum_is_unharmed():
    def forge(node, task, bad):
        message = _secagg(bad, MaskedInput)
        masked = message.masked.copy()
        masked[SIZE + 1] = (int(masked[SIZE + 1]) + 2**31) % 2**32
        _set(bad, dataclasses.replace(message, masked=masked))

    c, task, total, _ = run(rewrite("node-2", "dream_step", forge))
    assert_sum_of(total, task, NODES)
    assert c.transport.secure.clipped == len(NODES) * SIZE  # not 2^31
