"""The consistency round's MACs: a neighbour's endorsement of the survivor list is checked with
an HMAC under the key only the two clients share, instead of an Ed25519 verification.

Each survivor still signs its list (the coordinator verifies every signature and relays a
quorum of them, as before); beside the signature it sends each surviving neighbour an HMAC of
the same payload under a key derived from their block's encryption keys (signed in AdvertiseKeys,
so the coordinator holds neither half of the agreement). A client counts a signer whose MAC
checks, and falls back to the signature otherwise, so a cheating signer's bad MAC costs one
verification, not the step; and a coordinator can certify a list with MACs no more than with
signatures: a MAC moved from another recipient, another list or forged is refused with the
forged signature beside it.
"""

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from secagg_helpers import assert_sum, make_inputs, wire_round_trip

import secagg.client
from secagg import (
    InProcessSession,
    InsufficientSurvivors,
    MalformedMessage,
    SecAggConfig,
    SignatureInvalid,
    UnknownClient,
)
from secagg.messages import ConsistencyRequest, Header, UnmaskRequest

N, DIM = 7, 6


@pytest.fixture
def verifications(monkeypatch):
    """Counts the Ed25519 verifications clients make (the server's are not counted)."""
    calls = []
    real = secagg.client.verify_signature

    def counting(identities, signer, signature, payload):
        calls.append(signer)
        return real(identities, signer, signature, payload)

    monkeypatch.setattr(secagg.client, "verify_signature", counting)
    return calls


def _at_consistency(config, **create):
    session = InProcessSession.create(config, **create)
    session.setup_block()
    inputs = make_inputs(config.n_clients, config.dim)
    for i in range(config.n_clients):
        session.server.receive_masked_input(wire_round_trip(session.clients[i].masked_input(0, inputs[i])))
    session.server.close_inputs()
    return session, inputs


def _signed(session, tamper=None):
    """Every survivor signs; `tamper(i, signature)` may replace what client i sends."""
    for i in range(session.config.n_clients):
        signature = session.clients[i].sign_survivors(wire_round_trip(session.server.consistency_request(i)))
        if tamper is not None:
            signature = tamper(i, signature)
        session.server.receive_consistency(wire_round_trip(signature))


def _unmask_all(session):
    for i in range(session.config.n_clients):
        request = wire_round_trip(session.server.unmask_request(i))
        session.server.receive_unmask(wire_round_trip(session.clients[i].unmask(request)))
    return session.server.finish_step()


def test_in_a_complete_graph_no_client_verifies_a_signature_to_unmask(verifications):
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, inputs = _at_consistency(config)
    _signed(session)
    request = session.server.unmask_request(0)
    quorum = config.certification_quorum
    assert len(request.signatures) == quorum and [s for s, _ in request.macs] == list(range(1, quorum))
    assert_sum(_unmask_all(session), inputs)
    assert verifications == []  # without the MACs: quorum - 1 = 3 verifications per client, 21


def test_sparse_graph_neighbours_by_mac_the_other_signers_by_signature(verifications):
    config = SecAggConfig(n_clients=16, dim=DIM, graph="secagg+", degree=4, authenticated=True)
    session, inputs = _at_consistency(config)
    _signed(session)
    quorum, graph = config.certification_quorum, session.server.graph
    for i in range(config.n_clients):
        request = session.server.unmask_request(i)
        signers = {s for s, _ in request.signatures}
        assert graph[i] <= signers  # neighbours chosen first: each costs a hash, not a verification
        assert {s for s, _ in request.macs} == graph[i]
    assert_sum(_unmask_all(session), inputs, clip=config.clip)
    assert len(verifications) == 16 * (quorum - 1 - 4)  # 4 of the quorum - 1 others by MAC


def test_a_cheating_signers_bad_macs_cost_a_verification_not_the_step(verifications):
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, inputs = _at_consistency(config)
    cheat = 1

    def garbage_macs(i, signature):
        if i != cheat:
            return signature
        return dataclasses.replace(signature, macs=tuple((r, bytes(32)) for r, _ in signature.macs))

    _signed(session, garbage_macs)
    assert_sum(_unmask_all(session), inputs)
    # the cheat is among the quorum of every other client (the lowest ids): 6 verifications, of it
    assert verifications == [cheat] * (N - 1)


def test_a_coordinator_cannot_certify_with_a_moved_or_forged_mac():
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, _ = _at_consistency(config)
    _signed(session)
    request = session.server.unmask_request(0)
    macs = dict(request.macs)
    signer = request.macs[0][0]
    others_mac = dict(session.server._macs[signer])[2]  # what signer sent client 2
    forged_sig = tuple((s, bytes(64) if s == signer else sig) for s, sig in request.signatures)
    for mac in (others_mac, bytes(32), macs[request.macs[1][0]]):
        moved = tuple((s, mac if s == signer else m) for s, m in request.macs)
        with pytest.raises(SignatureInvalid, match=f"client {signer}"):
            session.clients[0].unmask(wire_round_trip(dataclasses.replace(request, signatures=forged_sig,
                                                                macs=moved)))
    # a MAC beside a valid signature: the signature is checked instead, and holds
    honest = dataclasses.replace(request, macs=tuple((s, bytes(32)) for s, _ in request.macs))
    assert session.clients[0].unmask(wire_round_trip(honest)).shares


@pytest.mark.parametrize("receiver, signer", [(0, 1), (3, 1)])
def test_a_clients_own_mac_reflected_back_as_its_peers_is_refused(receiver, signer):
    """The coordinator holds what `receiver` sent `signer` (a valid MAC over this very list) and
    hands it back to `receiver` as `signer`'s MAC to it, beside a forged signature of `signer`.
    The MAC input names signer and receiver, so it fails whatever the key split does."""
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, _ = _at_consistency(config)
    _signed(session)
    request = session.server.unmask_request(receiver)
    assert signer in dict(request.macs)
    own_mac = session.server._macs[receiver][signer]  # receiver -> signer, over this list
    reflected = tuple((s, own_mac if s == signer else m) for s, m in request.macs)
    forged = tuple((s, bytes(64) if s == signer else sig) for s, sig in request.signatures)
    with pytest.raises(SignatureInvalid, match=f"client {signer}"):
        session.clients[receiver].unmask(wire_round_trip(dataclasses.replace(request, signatures=forged,
                                                                   macs=reflected)))


def test_macs_of_one_list_do_not_certify_another():
    """Client 0 is asked to sign list B (without client 6); the others signed list A (everyone).
    Their signatures and MACs over A, relayed with list B, are refused: nothing certifies B."""
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, _ = _at_consistency(config)
    sid = session.server.session_id
    everyone, without = tuple(range(N)), tuple(range(N - 1))
    signed_a = {i: session.clients[i].sign_survivors(wire_round_trip(ConsistencyRequest(Header(sid, 0, i),
                                                                              everyone)))
                for i in range(1, N)}
    own_b = session.clients[0].sign_survivors(wire_round_trip(ConsistencyRequest(Header(sid, 0, 0), without)))
    signers = (1, 2, 3)  # with its own: a quorum of 4 of 7, if A's endorsements counted for B
    signatures = ((0, own_b.signature),) + tuple((i, signed_a[i].signature) for i in signers)
    macs = tuple((i, dict(signed_a[i].macs)[0]) for i in signers)
    request = UnmaskRequest(Header(sid, 0, 0), without, (N - 1,), signatures, (), macs)
    with pytest.raises(SignatureInvalid):
        session.clients[0].unmask(wire_round_trip(request))


def test_a_signature_from_another_instance_of_the_session_id_is_refused():
    """The coordinator runs session id A twice with the same identity keys (a node would refuse
    the second begin, client_node; here the library alone). The payload names the signer's block
    encryption key, fresh per instance, so the first instance's signatures over the very list
    the client signed in the second do not verify there: no endorsement carries over."""
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    keys = {i: Ed25519PrivateKey.generate() for i in range(N)}
    first, _ = _at_consistency(config, session_id=b"A" * 16, identity_keys=keys)
    _signed(first)
    old = first.server._signatures
    second, _ = _at_consistency(config, session_id=b"A" * 16, identity_keys=keys)
    own = second.clients[0].sign_survivors(wire_round_trip(second.server.consistency_request(0)))
    quorum = config.certification_quorum
    signatures = ((0, own.signature),) + tuple((i, old[i]) for i in range(1, quorum))
    request = UnmaskRequest(Header(b"A" * 16, 0, 0), tuple(range(N)), (), signatures)
    with pytest.raises(SignatureInvalid, match="client 1"):
        second.clients[0].unmask(wire_round_trip(request))
    relayed = dataclasses.replace(request, signer_keys=((1, first.clients[1]._own_advert.c_public),))
    with pytest.raises(UnknownClient, match="signer keys"):  # a neighbour's key is its own copy
        second.clients[0].unmask(wire_round_trip(relayed))


def test_sparse_graph_non_neighbour_signers_keys_are_relayed():
    config = SecAggConfig(n_clients=16, dim=DIM, graph="secagg+", degree=4, authenticated=True)
    session, _ = _at_consistency(config)
    _signed(session)
    graph = session.server.graph
    request = session.server.unmask_request(0)
    relayed = {s for s, _ in request.signer_keys}
    assert relayed == {s for s, _ in request.signatures} - graph[0] - {0} and relayed
    assert wire_round_trip(request) == request
    with pytest.raises(MalformedMessage, match="signer keys must be 32 bytes"):
        wire_round_trip(dataclasses.replace(request, signer_keys=((1, bytes(31)),)))
    missing = dataclasses.replace(request, signer_keys=request.signer_keys[1:])
    with pytest.raises(SignatureInvalid, match="no encryption key"):
        session.clients[0].unmask(wire_round_trip(missing))
    assert session.clients[0].unmask(wire_round_trip(request)).shares


def test_consistency_macs_on_the_wire_are_checked():
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, _ = _at_consistency(config)
    signature = session.clients[0].sign_survivors(wire_round_trip(session.server.consistency_request(0)))
    assert [r for r, _ in signature.macs] == list(range(1, N))  # every surviving neighbour
    assert wire_round_trip(signature) == signature
    short = dataclasses.replace(signature, macs=((1, bytes(31)),))
    with pytest.raises(MalformedMessage, match="MACs must be 32 bytes"):
        wire_round_trip(short)
    to_itself = dataclasses.replace(signature, macs=((0, bytes(32)),))
    with pytest.raises(UnknownClient, match="MACs"):
        session.server.receive_consistency(to_itself)
    session.server.receive_consistency(wire_round_trip(signature))
    request = UnmaskRequest(Header(session.server.session_id, 0, 0), (0,), (), (), (),
                            ((1, bytes(32)),))
    assert wire_round_trip(request) == request
    with pytest.raises(MalformedMessage, match="MACs must be 32 bytes"):
        wire_round_trip(dataclasses.replace(request, macs=((1, bytes(33)),)))


def test_too_few_signers_are_refused_before_any_verification(verifications):
    config = SecAggConfig(n_clients=N, dim=DIM, authenticated=True)
    session, _ = _at_consistency(config)
    _signed(session)
    request = session.server.unmask_request(0)
    few = dataclasses.replace(request, signatures=request.signatures[:2])
    with pytest.raises(InsufficientSurvivors, match="signatures"):
        session.clients[0].unmask(wire_round_trip(few))
    assert verifications == []
