"""One malicious client can hurt only itself: each attack is shown working on the bare
primitive (or the unpatched path) and then refused, attributed or contained by the protocol."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from secagg_helpers import assert_sum, make_inputs, wire_round_trip

from secagg import (
    InProcessSession,
    InsufficientSurvivors,
    MalformedMessage,
    Phase,
    ReconstructionFailed,
    SecAggConfig,
    SecAggError,
    decode,
    shamir,
)
from secagg.common import agree, self_mask_key, x_coordinate
from secagg.errors import InvalidPublicKey, InvalidShare
from secagg.messages import (
    KIND_SELF_MASK,
    AdvertiseKeys,
    Header,
    KeyDirectory,
    MaskedInput,
    ShareKeys,
    UnmaskResponse,
)
from secagg.verification import SMALL_ORDER_U, check_public_key

N, DIM, T = 5, 8, 3
P = 2**255 - 19
CONFIG = SecAggConfig(n_clients=N, dim=DIM, threshold=T)


def run_step(config=CONFIG, inputs=None, *, advert=None, share_keys=None, delivery=None,
             masked=None, unmask=None, session=None, refusals=None):
    """One step by hand; each hook `(i, message) -> message | None` may tamper with or silence
    (None) what client i sends (or, for `delivery`, what it is handed). A client that refuses its
    unmask request is silent if `refusals` (a list: it collects them). Returns (session, result)."""
    inputs = inputs if inputs is not None else make_inputs(config.n_clients, config.dim, seed=1)
    session = session or InProcessSession.create(config)
    server, clients = session.server, session.clients
    ids = sorted(clients)

    def hooked(hook, i, message):
        return message if hook is None else hook(i, message)

    for i in ids:
        message = hooked(advert, i, clients[i].advertise_keys())
        if message is not None:
            server.receive_advertise(wire_round_trip(message))
    server.close_advertise()
    for i in sorted(server.alive):
        message = hooked(share_keys, i, clients[i].share_keys(wire_round_trip(server.key_directory(i))))
        if message is not None:
            server.receive_share_keys(wire_round_trip(message))
    server.close_share_keys()
    for i in sorted(server.alive):
        clients[i].receive_shares(wire_round_trip(hooked(delivery, i, server.share_delivery(i))))
    for i in sorted(server.alive):
        message = hooked(masked, i, clients[i].masked_input(server.step, inputs[i]))
        if message is not None:
            server.receive_masked_input(wire_round_trip(message))
    for i in server.close_inputs():
        try:
            response = clients[i].unmask(wire_round_trip(server.unmask_request(i)))
        except SecAggError as error:
            if refusals is None:
                raise
            refusals.append((i, error))
            continue
        message = hooked(unmask, i, response)
        if message is not None:
            server.receive_unmask(wire_round_trip(message))
    return session, server.finish_step()


# ---- (a) small-order and malformed X25519 keys --------------------------------------------
BAD_KEYS = {
    **{f"small-order u={u % 1000}": u.to_bytes(32, "little") for u in sorted(SMALL_ORDER_U)},
    "u = p (non-canonical 0)": P.to_bytes(32, "little"),
    "u = p + 1 (non-canonical 1)": (P + 1).to_bytes(32, "little"),
    "top bit set": (2**255 + 9).to_bytes(32, "little"),
    "short": bytes(31),
}


@pytest.mark.parametrize("name", [n for n in BAD_KEYS if n != "short"])
def test_the_bare_key_agreement_with_a_bad_key_fails_for_the_honest_peer(name):
    """The attack: an honest client agreeing with such a key raises (its step would abort)."""
    honest = X25519PrivateKey.generate()
    key = BAD_KEYS[name]
    if name == "top bit set":  # X25519 ignores the bit: same as u = 9, a valid key, but not canonical
        honest.exchange(X25519PublicKey.from_public_bytes(key))
    else:
        with pytest.raises(ValueError):
            honest.exchange(X25519PublicKey.from_public_bytes(key))
        with pytest.raises(InvalidPublicKey):
            agree(honest, key)


@pytest.mark.parametrize("name", list(BAD_KEYS))
@pytest.mark.parametrize("slot", ["c_public", "s_publics"])
def test_an_advertisement_with_a_bad_key_is_refused_and_its_sender_is_the_only_dropout(name, slot):
    def bad_advert(i, message):
        if i != 0:
            return message
        key = BAD_KEYS[name]
        forged = (dataclasses.replace(message, c_public=key) if slot == "c_public"
                  else dataclasses.replace(message, s_publics=(key,)))
        with pytest.raises(InvalidPublicKey):
            session.server.receive_advertise(forged)
        return None  # it tried; it is now silent

    session = InProcessSession.create(CONFIG)
    inputs = make_inputs(N, DIM, seed=2)
    _, result = run_step(inputs=inputs, advert=bad_advert, session=session)
    assert result.survivors == (1, 2, 3, 4) and 0 in session.server.dropped
    assert_sum(result, inputs)


def test_a_valid_key_passes_and_a_client_refuses_a_directory_with_a_bad_key():
    check_public_key(X25519PrivateKey.generate().public_key().public_bytes_raw(), "fresh key")
    session = InProcessSession.create(CONFIG)
    for i in range(N):
        session.server.receive_advertise(session.clients[i].advertise_keys())
    directory = session.server.key_directory(0)
    entries = tuple(dataclasses.replace(e, c_public=bytes(32)) if e.header.client_id == 1 else e
                    for e in directory.entries)
    with pytest.raises(InvalidPublicKey):  # only a malicious coordinator could hand this out
        session.clients[0].share_keys(KeyDirectory(directory.header, entries))


# ---- (b) an unusable share bundle costs its sender only -------------------------------------
def _garble_bundles(sender, receivers):
    def hook(i, message):
        if i != sender:
            return message
        return dataclasses.replace(message, ciphertexts=tuple(
            (r, os.urandom(len(ct)) if r in receivers else ct) for r, ct in message.ciphertexts))
    return hook


def test_random_bytes_as_a_bundle_would_fail_the_receiver_on_the_bare_decryption():
    """The attack: the receiver's decryption of the garbage raises (it used to abort the receiver)."""
    session = InProcessSession.create(CONFIG)
    server, clients = session.server, session.clients
    for i in range(N):
        server.receive_advertise(clients[i].advertise_keys())
    for i in range(N):
        message = clients[i].share_keys(server.key_directory(i))
        server.receive_share_keys(_garble_bundles(3, {0})(i, message))
    delivery = server.share_delivery(0)
    with pytest.raises(Exception, match="share bundle from client 3 failed"):
        clients[0]._open_bundle(3, dict(delivery.ciphertexts)[3])
    clients[0].receive_shares(delivery)  # the protocol: the receiver carries on
    assert clients[0].phase is Phase.READY and set(clients[0].unheld) == {3}


def test_one_garbled_bundle_leaves_everyone_in_the_sum():
    inputs = make_inputs(N, DIM, seed=3)
    reported = {}

    def record(i, message):
        reported[i] = message.unheld
        return message

    _, result = run_step(inputs=inputs, share_keys=_garble_bundles(3, {0}), masked=record)
    assert result.survivors == tuple(range(N)) and result.dropped == ()
    assert_sum(result, inputs)
    assert reported == {0: (3,), 1: (), 2: (), 3: (), 4: ()}


def test_bundles_garbled_to_every_receiver_exclude_only_their_sender():
    """Nobody holds client 3's shares: its input cannot be unmasked, so it is demoted to a dropout
    and its pairwise masks are removed with the keys its neighbours reveal."""
    inputs = make_inputs(N, DIM, seed=4)
    session, result = run_step(inputs=inputs, share_keys=_garble_bundles(3, set(range(N))))
    assert result.survivors == (0, 1, 2, 4) and result.dropped == (3,)
    assert_sum(result, inputs)
    assert 3 in session.server.dropped


def test_a_survivor_that_dropped_after_masking_with_garbled_bundles_is_still_recovered():
    inputs = make_inputs(N, DIM, seed=5)

    def silent_after_masking(i, message):
        return None if i == 3 else message

    _, result = run_step(inputs=inputs, share_keys=_garble_bundles(3, {0, 1, 2, 4}),
                         unmask=silent_after_masking)
    assert result.survivors == (0, 1, 2, 4) and result.dropped == (3,)
    assert_sum(result, inputs)


def test_a_neighbour_that_withholds_its_pairwise_key_aborts_without_releasing():
    def withhold(i, message):
        if i == 1:
            return dataclasses.replace(message, shares=tuple(
                s for s in message.shares if s[0] != 3))
        return message

    with pytest.raises(InsufficientSurvivors, match="client 1 did not reveal its pairwise key with client 3"):
        run_step(share_keys=_garble_bundles(3, set(range(N))), unmask=withhold)


def test_a_client_that_lies_about_unheld_shares_only_removes_itself_as_a_holder():
    inputs = make_inputs(N, DIM, seed=6)

    def liar(i, message):
        return dataclasses.replace(message, unheld=(1, 2, 3, 4)) if i == 0 else message

    _, result = run_step(inputs=inputs, masked=liar)
    assert result.survivors == tuple(range(N))
    assert_sum(result, inputs)


# ---- (c) ShareKeys must reach every neighbour ---------------------------------------------
def test_share_keys_missing_a_neighbour_is_refused_and_its_sender_dropped():
    inputs = make_inputs(N, DIM, seed=7)
    session = InProcessSession.create(CONFIG)

    def partial(i, message):
        if i != 2:
            return message
        short = dataclasses.replace(message, ciphertexts=message.ciphertexts[1:])
        with pytest.raises(MalformedMessage, match="gives no bundle to live neighbours"):
            session.server.receive_share_keys(short)
        uncommitted = dataclasses.replace(message, commitments=message.commitments[1:])
        with pytest.raises(MalformedMessage, match="must commit"):
            session.server.receive_share_keys(uncommitted)
        return None

    _, result = run_step(inputs=inputs, share_keys=partial, session=session)
    assert result.survivors == (0, 1, 3, 4)
    assert_sum(result, inputs)


def test_a_partial_share_keys_accepted_would_release_a_garbage_sum():
    """The unpatched path: the bundle to client 0 is withheld after acceptance, as a server that
    took a partial ShareKeys would; client 0 drops 2 while the others mask with it."""
    inputs = make_inputs(N, DIM, seed=8)
    session = InProcessSession.create(CONFIG)

    def withhold_after_acceptance(i, message):
        if i == 2:
            session.server.receive_share_keys(message)
            del session.server._ciphertexts[0][2]
            return None
        return message

    refusals = []
    _, result = run_step(inputs=inputs, share_keys=withhold_after_acceptance, session=session,
                         refusals=refusals)
    assert [i for i, _ in refusals] == [0]  # it alone saw 2 leave; the others still suffice
    expected = sum(np.clip(inputs[i], -1, 1) for i in result.survivors)
    assert np.abs(result.total - expected).max() > 1.0  # garbage, silently


# ---- (d) every share is checked and a wrong one names its holder -----------------------------
def _tamper_b_share_of(owner, holder):
    def hook(i, message):
        if i != holder:
            return message
        shares = tuple((p, k, bytes(len(s)) if (p, k) == (owner, KIND_SELF_MASK) else s)
                       for p, k, s in message.shares)
        return dataclasses.replace(message, shares=shares)
    return hook


def test_a_wrong_b_share_would_silently_corrupt_the_rebuilt_seed():
    """The attack on the bare primitives: t shares, one of them wrong, rebuild another seed."""
    seed = os.urandom(32)
    xs = [x_coordinate(h) for h in range(T)]
    shares = shamir.split([seed], xs, T)
    assert shamir.reconstruct(shares, xs) == [seed]
    shares[0] = (shares[0] + 1) % shamir.PRIME
    (wrong,) = shamir.reconstruct(shares, xs)
    assert wrong != seed and self_mask_key(wrong, bytes(16), 0, 1) != self_mask_key(seed, bytes(16), 0, 1)


def test_a_wrong_b_share_is_refused_naming_its_holder_and_the_sum_is_right():
    inputs = make_inputs(N, DIM, seed=9)
    session = InProcessSession.create(CONFIG)
    refused = []

    def tamper(i, message):
        if i != 0:
            return message
        bad = _tamper_b_share_of(4, 0)(i, message)
        with pytest.raises(InvalidShare, match="client 0 sent a share of client 4") as error:
            session.server.receive_unmask(bad)
        refused.append(error.value.holder)
        return None  # the holder among the first t is refused; the others suffice

    _, result = run_step(inputs=inputs, unmask=tamper, session=session)
    assert refused == [0] and result.survivors == tuple(range(N))
    assert_sum(result, inputs)


def test_shares_dealt_inconsistently_with_the_seed_commitment_name_the_dealer():
    session = InProcessSession.create(CONFIG)

    def false_commitment(i, message):
        if i != 1:
            return message
        forged = dataclasses.replace(message, b_commitments=(bytes(32),) * len(message.b_commitments))
        session.clients[1]._own_advert = forged  # a malicious client sends what it likes
        return forged

    with pytest.raises(ReconstructionFailed, match="client 1 dealt inconsistent shares") as error:
        run_step(advert=false_commitment, session=session)
    assert error.value.client == 1


# ---- (e) the clipped-count word ------------------------------------------------------------
def test_a_forged_clipped_count_is_bounded_by_what_the_survivors_can_count():
    inputs = make_inputs(N, DIM, seed=10)

    def forge(i, message):
        if i != 4:
            return message
        masked = message.masked.copy()
        masked[DIM + 1] = (int(masked[DIM + 1]) + 2**31) % 2**32  # the attack: 2^31 "clipped elements"
        return dataclasses.replace(message, masked=masked)

    _, result = run_step(inputs=inputs, masked=forge)
    assert result.clipped_forged and result.clipped == N * DIM  # unclamped: 2^31
    assert_sum(result, inputs)
    _, honest = run_step(inputs=inputs)
    assert not honest.clipped_forged and honest.clipped == 0


# ---- (g) nested messages --------------------------------------------------------------------
def _nested_directory(depth: int) -> bytes:
    header = Header(bytes(16), 0, 0)
    data = KeyDirectory(header, ()).to_bytes()
    for _ in range(depth):  # each level wraps the previous directory as its only "entry"
        data = KeyDirectory(header, ()).to_bytes()[:-4] + (1).to_bytes(4, "big") + \
            len(data).to_bytes(4, "big") + data
    return data


@pytest.mark.parametrize("expected", [None, KeyDirectory, ShareKeys, AdvertiseKeys, UnmaskResponse,
                                      MaskedInput])
def test_a_deeply_nested_directory_is_refused_at_once_without_recursion(expected):
    data = _nested_directory(5000)
    with pytest.raises(MalformedMessage, match="expected"):
        decode(data, expected)
