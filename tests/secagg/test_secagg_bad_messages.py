"""Every way a message can be wrong raises its own exception, on the client and on the server."""

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import (
    DroppedClient,
    DuplicateClient,
    InProcessSession,
    MalformedMessage,
    Phase,
    PhaseError,
    RevealRefused,
    SecAggConfig,
    SessionMismatch,
    SignatureInvalid,
    StepMismatch,
    UnknownClient,
    VersionMismatch,
    decode,
)
from secagg.messages import (
    ConsistencySignature,
    Header,
    KeyDirectory,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)

N, DIM = 5, 8


def _session(authenticated=False):
    config = SecAggConfig(n_clients=N, dim=DIM, threshold=3, authenticated=authenticated)
    return InProcessSession.create(config)


def _keyed(session):
    """Session after AdvertiseKeys, with directories fetched but ShareKeys not yet sent."""
    for i in range(N):
        session.server.receive_advertise(session.clients[i].advertise_keys())
    return {i: session.server.key_directory(i) for i in range(N)}


def _masked(session):
    """Session at step 0 with every masked input received."""
    session.setup_block()
    for i in range(N):
        session.server.receive_masked_input(session.clients[i].masked_input(0, np.zeros(DIM)))
    return session


def _public_key():
    return X25519PrivateKey.generate().public_key().public_bytes_raw()


def _with_header(message, **changes):
    return dataclasses.replace(message, header=dataclasses.replace(message.header, **changes))


# -- share transport ------------------------------------------------------------------------
def _deliveries(session):
    directories = _keyed(session)
    for i in range(N):
        session.server.receive_share_keys(session.clients[i].share_keys(directories[i]))
    return {i: session.server.share_delivery(i) for i in range(N)}


def _unusable_only(client, sender, why):
    """The client went on (READY) holding every bundle but `sender`'s, which it names with why."""
    assert client.phase is Phase.READY
    assert set(client.unheld) == {sender} and why in client.unheld[sender]
    assert sender in client.alive  # still masked with: its keys came checked from the directory
    assert client.masked_input(0, np.zeros(DIM)).unheld == (sender,)


def test_tampered_share_ciphertext_costs_only_its_sender():
    session = _session()
    delivery = _deliveries(session)[0]
    sender, blob = delivery.ciphertexts[0]
    flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    bad = dataclasses.replace(delivery, ciphertexts=((sender, flipped),) + delivery.ciphertexts[1:])
    session.clients[0].receive_shares(bad)
    _unusable_only(session.clients[0], sender, "failed")


def test_share_ciphertext_relabelled_to_another_sender_is_unusable():
    session = _session()
    delivery = _deliveries(session)[0]
    (s1, c1), (s2, c2) = delivery.ciphertexts[:2]
    bad = dataclasses.replace(delivery, ciphertexts=((s1, c2), (s2, c1)) + delivery.ciphertexts[2:])
    session.clients[0].receive_shares(bad)
    assert set(session.clients[0].unheld) == {s1, s2}


def test_share_ciphertext_for_another_receiver_is_unusable():
    session = _session()
    deliveries = _deliveries(session)
    stolen = dict(deliveries[1].ciphertexts)[2]  # 2 -> 1, replayed as 2 -> 0
    pairs = tuple((s, stolen if s == 2 else c) for s, c in deliveries[0].ciphertexts)
    session.clients[0].receive_shares(dataclasses.replace(deliveries[0], ciphertexts=pairs))
    _unusable_only(session.clients[0], 2, "failed")


def test_a_bundle_that_decrypts_but_differs_from_its_commitments_is_unusable():
    session = _session()
    delivery = _deliveries(session)[0]
    sender, digests = delivery.commitments[0]
    other = (sender, bytes(len(digests)))
    bad = dataclasses.replace(delivery, commitments=(other,) + delivery.commitments[1:])
    session.clients[0].receive_shares(bad)
    _unusable_only(session.clients[0], sender, "does not match its commitments")


# -- signatures -----------------------------------------------------------------------------
def test_forged_advertisement_signature_is_rejected_by_server_and_client():
    session = _session(authenticated=True)
    honest = session.clients[1].advertise_keys()
    forged = dataclasses.replace(honest, signature=Ed25519PrivateKey.generate().sign(honest.signed_bytes()))
    with pytest.raises(SignatureInvalid):
        session.server.receive_advertise(forged)
    unsigned = dataclasses.replace(honest, signature=None)
    with pytest.raises(SignatureInvalid):
        session.server.receive_advertise(unsigned)
    for i in range(N):
        if i != 1:
            session.server.receive_advertise(session.clients[i].advertise_keys())
    session.server.receive_advertise(honest)
    directory = session.server.key_directory(0)
    # a coordinator that swaps in its own encryption key for client 1 is caught
    entries = tuple(
        dataclasses.replace(e, c_public=_public_key()) if e.header.client_id == 1 else e
        for e in directory.entries
    )
    with pytest.raises(SignatureInvalid):
        session.clients[0].share_keys(KeyDirectory(directory.header, entries))


def test_forged_consistency_signatures_are_rejected():
    session = _masked(_session(authenticated=True))
    server, clients = session.server, session.clients
    for i in range(N):
        request = server.consistency_request(i)
        signature = clients[i].sign_survivors(request)
        if i == 4:
            forged = ConsistencySignature(signature.header, bytes(64))
            with pytest.raises(SignatureInvalid):
                server.receive_consistency(forged)
        server.receive_consistency(signature)
    request = server.unmask_request(0)
    signer, sig = request.signatures[0]
    bad = dataclasses.replace(request, signatures=((signer, bytes(64)),) + request.signatures[1:])
    with pytest.raises(SignatureInvalid):
        clients[0].unmask(bad)
    few = dataclasses.replace(request, signatures=request.signatures[:1])
    with pytest.raises(Exception, match="signatures"):
        clients[0].unmask(few)


def test_unmask_request_must_carry_the_signed_survivor_list():
    session = _masked(_session(authenticated=True))
    for i in range(N):
        session.server.receive_consistency(
            session.clients[i].sign_survivors(session.server.consistency_request(i))
        )
    request = session.server.unmask_request(0)
    shrunk = dataclasses.replace(request, survivors=(0, 1, 2, 3), dropped=(4,))
    with pytest.raises(RevealRefused):
        session.clients[0].unmask(shrunk)


# -- wrong lengths and formats --------------------------------------------------------------
def test_wrong_length_and_format_on_the_wire():
    session = _masked(_session())
    data = session.server.unmask_request(0).to_bytes()
    for cut in range(len(data)):
        with pytest.raises(MalformedMessage):
            decode(data[:cut])
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(data + b"\x00")
    with pytest.raises(VersionMismatch):
        decode(data[:2] + bytes([99]) + data[3:])
    with pytest.raises(MalformedMessage, match="magic"):
        decode(b"XX" + data[2:])
    with pytest.raises(MalformedMessage, match="unknown message type"):
        decode(data[:3] + bytes([200]) + data[4:])
    with pytest.raises(MalformedMessage, match="expected"):
        decode(data, MaskedInput)


def test_masked_input_of_wrong_length_is_rejected():
    session = _session()
    session.setup_block()
    y = session.clients[0].masked_input(0, np.zeros(DIM))
    with pytest.raises(MalformedMessage):
        session.server.receive_masked_input(MaskedInput(y.header, y.masked[:-1]))


def test_share_of_wrong_length_is_rejected():
    session = _masked(_session())
    response = session.clients[0].unmask(session.server.unmask_request(0))
    peer, kind, share = response.shares[0]
    bad = UnmaskResponse(response.header, ((peer, kind, share[:-1]),) + response.shares[1:])
    with pytest.raises(MalformedMessage):
        session.server.receive_unmask(bad)


def test_a_refused_unmask_response_leaves_no_trace_and_the_correct_one_is_accepted():
    """The last share is out of the field: refused before any share is stored."""
    session = _masked(_session())
    for i in range(N):
        response = session.clients[i].unmask(session.server.unmask_request(i))
        if i == 0:
            peer, kind, share = response.shares[-1]
            outside = (peer, kind, b"\xff" * len(share))
            bad = UnmaskResponse(response.header, response.shares[:-1] + (outside,))
            with pytest.raises(MalformedMessage, match="outside the field"):
                session.server.receive_unmask(bad)
        session.server.receive_unmask(response)
    result = session.server.finish_step()
    assert np.array_equal(result.total, np.zeros(DIM)) and result.survivors == tuple(range(N))


def test_advertisement_with_wrong_number_of_step_keys_is_rejected():
    session = _session()
    honest = session.clients[0].advertise_keys()
    with pytest.raises(MalformedMessage):
        session.server.receive_advertise(dataclasses.replace(honest, s_publics=()))


# -- unknown, duplicate, dropped clients ----------------------------------------------------
def test_unknown_and_duplicate_clients():
    session = _session()
    session.setup_block()
    y = session.clients[0].masked_input(0, np.zeros(DIM))
    with pytest.raises(UnknownClient):
        session.server.receive_masked_input(_with_header(y, client_id=99))
    session.server.receive_masked_input(y)
    with pytest.raises(DuplicateClient):
        session.server.receive_masked_input(y)
    for i in range(1, N):
        session.server.receive_masked_input(session.clients[i].masked_input(0, np.zeros(DIM)))
    request = session.server.unmask_request(1)
    with pytest.raises(UnknownClient):
        session.clients[1].unmask(dataclasses.replace(request, survivors=request.survivors + (99,)))
    with pytest.raises(DuplicateClient):
        session.clients[1].unmask(dataclasses.replace(request, survivors=request.survivors + (2,)))
    with pytest.raises(UnknownClient):
        session.server.unmask_request(99)


def test_duplicate_unmask_response_is_rejected():
    session = _masked(_session())
    response = session.clients[0].unmask(session.server.unmask_request(0))
    session.server.receive_unmask(response)
    with pytest.raises(DuplicateClient):
        session.server.receive_unmask(response)


def test_dropped_client_cannot_rejoin_the_session():
    config = SecAggConfig(n_clients=N, dim=DIM, threshold=3, steps_per_block=2)
    session = InProcessSession.create(config)
    session.step({i: np.zeros(DIM) for i in range(N)}, dropouts={"masked_input": {4}})
    late = session.clients[4].masked_input(0, np.zeros(DIM))  # client 4 never learnt it is out
    with pytest.raises(StepMismatch):
        session.server.receive_masked_input(late)
    with pytest.raises(DroppedClient):
        session.server.receive_masked_input(_with_header(late, index=1))
    assert 4 in session.server.dropped


# -- other step, other session, out of order -------------------------------------------------
def test_messages_from_another_step_or_session_are_rejected():
    session = _session()
    session.setup_block()
    y = session.clients[0].masked_input(0, np.zeros(DIM))
    with pytest.raises(StepMismatch):
        session.server.receive_masked_input(_with_header(y, index=1))
    with pytest.raises(SessionMismatch):
        session.server.receive_masked_input(_with_header(y, session_id=bytes(16)))
    for i in range(N):
        message = y if i == 0 else session.clients[i].masked_input(0, np.zeros(DIM))
        session.server.receive_masked_input(message)
    request = session.server.unmask_request(2)
    with pytest.raises(StepMismatch):
        session.clients[2].unmask(_with_header(request, index=5))
    with pytest.raises(SessionMismatch):
        session.clients[2].unmask(_with_header(request, session_id=bytes(16)))


def test_out_of_order_calls_raise_phase_error():
    session = _session()
    with pytest.raises(PhaseError):
        session.clients[0].masked_input(0, np.zeros(DIM))
    with pytest.raises(PhaseError):
        session.server.finish_step()
    session.setup_block()
    with pytest.raises(PhaseError):
        session.clients[0].masked_input(3, np.zeros(DIM))


def test_request_to_reveal_both_secrets_of_one_peer_is_refused():
    session = _masked(_session())
    request = session.server.unmask_request(0)
    both = UnmaskRequest(request.header, request.survivors, (3,))
    with pytest.raises(RevealRefused):
        session.clients[0].unmask(both)
    self_dropped = UnmaskRequest(request.header, (1, 2, 3, 4), (0,))
    with pytest.raises(RevealRefused):
        session.clients[0].unmask(self_dropped)


def test_headers_are_bound_to_the_addressee():
    session = _session()
    directories = _keyed(session)
    with pytest.raises(UnknownClient):
        session.clients[0].share_keys(directories[1])
    assert isinstance(directories[0].header, Header)
