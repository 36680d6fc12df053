"""A curious coordinator plays the known attacks; each is refused or yields uniform noise."""

import dataclasses

import numpy as np
import pytest

from secagg import DroppedClient, InProcessSession, RevealRefused, SecAggConfig, SecAggError, shamir
from secagg.common import pairwise_mask_key, self_mask_key, x_coordinate
from secagg.messages import KIND_MASK_KEY, KIND_SELF_MASK, UnmaskRequest
from secagg.prg import expand

N, DIM, T = 5, 4096, 3


def _uniform(values: np.ndarray) -> bool:
    """Chi-square test of uint32 values over 16 equal bins (p ~ 0.001 cut-off, 15 dof)."""
    counts = np.bincount((values >> np.uint32(28)).astype(np.int64), minlength=16)
    expected = len(values) / 16
    return float(((counts - expected) ** 2 / expected).sum()) < 37.7


def _start(steps_per_block=1):
    config = SecAggConfig(n_clients=N, dim=DIM, threshold=T, steps_per_block=steps_per_block)
    session = InProcessSession.create(config)
    session.setup_block()
    return session


def _reconstruct(responses, peer, kind):
    held = [(r.header.client_id, s) for r in responses for p, k, s in r.shares if p == peer and k == kind]
    if len(held) < T:
        raise ValueError(f"only {len(held)} shares")
    held = held[:T]
    stacked = np.stack([shamir.share_from_bytes(s) for _, s in held])[:, None, :]
    return shamir.reconstruct(stacked, [x_coordinate(h) for h, _ in held])[0]


def _strip_pairwise(session, y, owner, s_private_bytes, step, j=0):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    s_private = X25519PrivateKey.from_private_bytes(s_private_bytes)
    residual = y.astype(np.uint32).copy()
    for v in sorted(session.server.graph[owner]):
        peer_public = session.server._adverts[v].s_publics[j]
        key = pairwise_mask_key(s_private, peer_public, session.server.session_id, step, owner, v)
        mask = expand(key, len(y))
        residual = residual - mask if v > owner else residual + mask
    return residual


def test_asking_for_both_secrets_of_one_peer_is_refused():
    session = _start()
    clients, server = session.clients, session.server
    for i in range(N):
        server.receive_masked_input(clients[i].masked_input(0, np.zeros(DIM)))
    honest = server.unmask_request(0)
    with pytest.raises(RevealRefused):  # both in one request
        clients[0].unmask(UnmaskRequest(honest.header, (0, 1, 2, 3, 4), (3,)))
    clients[0].unmask(honest)  # reveals the b-share of client 3
    with pytest.raises(RevealRefused):  # and later, in a second request for the same step
        clients[0].unmask(UnmaskRequest(honest.header, (0, 1, 2, 4), (3,)))


def test_claiming_a_live_client_dropped_then_using_its_late_input_yields_noise():
    session = _start(steps_per_block=2)
    clients, server = session.clients, session.server
    x4 = np.zeros(DIM)  # q(x4) = 0, so anything but uniform noise would leak
    for i in range(4):
        server.receive_masked_input(clients[i].masked_input(0, np.zeros(DIM)))
    late = clients[4].masked_input(0, x4)  # withheld by the coordinator: "client 4 dropped"
    responses = [clients[i].unmask(server.unmask_request(i)) for i in range(4)]
    for r in responses:
        server.receive_unmask(r)
    server.finish_step()
    s4 = _reconstruct(responses, 4, KIND_MASK_KEY)
    residual = _strip_pairwise(session, late.masked, 4, s4, step=0)
    assert np.count_nonzero(residual[:DIM]) > DIM - 5  # still self-masked, not q(x4) = 0
    assert _uniform(residual[:DIM])
    # the self-mask seed b4 of step 0 is never revealed: each client refuses
    for i in range(4):
        with pytest.raises(RevealRefused):
            clients[i].unmask(UnmaskRequest(responses[i].header, (0, 1, 2, 3, 4), ()))
    with pytest.raises(ValueError):
        _reconstruct(responses, 4, KIND_SELF_MASK)
    # and client 4 is out for the rest of the session, on both sides
    assert all(4 not in clients[i].alive for i in range(4))
    step1 = dataclasses.replace(late.header, index=1)
    with pytest.raises(DroppedClient):
        server.receive_masked_input(dataclasses.replace(late, header=step1))


def test_recovering_a_client_dropped_at_step_j_reveals_nothing_about_earlier_steps():
    session = _start(steps_per_block=2)
    clients, server = session.clients, session.server
    x = {i: np.full(DIM, 0.25 * (i + 1) / N) for i in range(N)}
    # step 0: everyone survives, the coordinator legitimately learns every b of step 0
    inputs0 = {}
    for i in range(N):
        inputs0[i] = clients[i].masked_input(0, x[i])
        server.receive_masked_input(inputs0[i])
    responses0 = [clients[i].unmask(server.unmask_request(i)) for i in range(N)]
    for r in responses0:
        server.receive_unmask(r)
    server.finish_step()
    # step 1: client 4 drops, the coordinator learns its step-1 masking key s_sk
    for i in range(4):
        server.receive_masked_input(clients[i].masked_input(1, x[i]))
    responses1 = [clients[i].unmask(server.unmask_request(i)) for i in range(4)]
    s4_step1 = _reconstruct(responses1, 4, KIND_MASK_KEY)
    b4_step0 = _reconstruct(responses0, 4, KIND_SELF_MASK)
    # the attack: remove b4 (step 0) and "the" pairwise masks (from the step-1 key) of y4 at step 0
    y = inputs0[4].masked.astype(np.uint32).copy()
    y -= expand(self_mask_key(b4_step0, server.session_id, 0, 4), len(y))
    for j in (0, 1):  # try the key under both steps' derivation labels
        residual = _strip_pairwise(session, y, 4, s4_step1, step=0, j=j)
        target = session.config.values.encode(x[4])[0]
        assert np.count_nonzero(residual[:DIM] == target) < 5
        assert _uniform(residual[:DIM])


def test_replaying_a_step_across_steps_and_sessions_is_refused_and_masks_are_fresh():
    session = _start(steps_per_block=2)
    clients, server = session.clients, session.server
    x = np.zeros(DIM)
    y0 = clients[0].masked_input(0, x)
    for i in range(N):
        server.receive_masked_input(y0 if i == 0 else clients[i].masked_input(0, x))
    request0 = server.unmask_request(1)
    clients[1].unmask(request0)
    with pytest.raises(SecAggError):  # the same request again, or replayed at step 1
        clients[1].unmask(request0)
    replay = dataclasses.replace(request0, header=dataclasses.replace(request0.header, index=1))
    with pytest.raises(SecAggError):
        clients[1].unmask(replay)
    other = InProcessSession.create(session.config)
    other.setup_block()
    with pytest.raises(SecAggError):
        other.server.receive_masked_input(y0)
    # the same input at step 1 is masked afresh: the difference of two steps is noise
    for i in range(2, N):
        clients[i].unmask(server.unmask_request(i))
    clients[0].unmask(server.unmask_request(0))
    y1 = clients[0].masked_input(1, x)
    assert _uniform((y1.masked - y0.masked)[:DIM])
