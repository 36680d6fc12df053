"""The corrupt-party bound against an active coordinator, complete graph: c < 2t - n.

An active coordinator colluding with c clients splits the n - c honest clients between two
survivor lists of one step: L1 says the victim survived (its holders reveal b-shares of it),
L2 says it dropped (they reveal s_sk-shares). The corrupt clients sign both lists and hand over
both shares they hold. It needs t of each kind, so h1 + c >= t and h2 + c >= t with
h1 + h2 <= n - c: possible exactly when c >= 2t - n (and both lists certified: c >= 2q - n).
With the default threshold (the smallest majority, t = q = (n + 1) / 2 for odd n) a single
corrupt client is enough at n = 5, and the victim's input comes out in the clear; raising t to 4
(2t - n = 3 > 1) leaves the coordinator one share short of each. secagg/README.md states it.
"""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import InProcessSession, SecAggConfig, shamir
from secagg.common import consistency_payload, pairwise_mask_key, self_mask_key, x_coordinate
from secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    ConsistencyRequest,
    Header,
    UnmaskRequest,
    decode,
)
from secagg.prg import expand

N, DIM, VICTIM, CORRUPT = 5, 8, 0, 4
L1_HOLDERS, L2_HOLDERS = (0, 1), (2, 3)  # the honest clients, split between the two lists


def _wire(message):
    return decode(message.to_bytes(), type(message))


def _attack(threshold):
    config = SecAggConfig(n_clients=N, dim=DIM, clip=4.0, threshold=threshold, authenticated=True)
    session = InProcessSession.create(config)
    session.setup_block()
    server, clients, sid = session.server, session.clients, session.server.session_id
    # the masking keys the victim's peers advertised (the coordinator relayed them)
    peer_keys = {v: clients[VICTIM]._secrets.peer_s[v][0] for v in range(N) if v != VICTIM}
    x = np.linspace(-3.0, 3.0, DIM)
    for i in range(N):
        server.receive_masked_input(_wire(clients[i].masked_input(0, x * (i == VICTIM))))
    y = server._inputs[VICTIM].astype(np.uint32)  # the victim's masked input, as relayed
    everyone, without = tuple(range(N)), tuple(i for i in range(N) if i != VICTIM)

    def certify(survivors, honest):
        signatures = [(i, clients[i].sign_survivors(_wire(ConsistencyRequest(Header(sid, 0, i),
                                                                              survivors))).signature)
                      for i in honest]
        corrupt = clients[CORRUPT]._identity.sign(consistency_payload(sid, 0, survivors))
        return tuple(sorted([*signatures, (CORRUPT, corrupt)]))  # a corrupt client signs both

    sig1, sig2 = certify(everyone, L1_HOLDERS), certify(without, L2_HOLDERS)
    b_shares, s_shares = [], []
    for i in L1_HOLDERS:  # told: the victim survived
        response = clients[i].unmask(_wire(UnmaskRequest(Header(sid, 0, i), everyone, (), sig1, ())))
        b_shares += [(i, s) for p, k, s in response.shares if p == VICTIM and k == KIND_SELF_MASK]
    for i in L2_HOLDERS:  # told: the victim dropped
        response = clients[i].unmask(_wire(UnmaskRequest(Header(sid, 0, i), without, (VICTIM,),
                                                         sig2, ())))
        s_shares += [(i, s) for p, k, s in response.shares if p == VICTIM and k == KIND_MASK_KEY]
    held = clients[CORRUPT]._secrets.held[VICTIM]  # (2, steps, CHUNKS): [0] s_sk, [1] b
    s_shares.append((CORRUPT, held[0, 0]))
    b_shares.append((CORRUPT, held[1, 0]))
    return config, session, y, x, b_shares, s_shares, peer_keys


def _rebuild(shares, t):
    stacked = np.stack([s if isinstance(s, np.ndarray) else shamir.share_from_bytes(s)
                        for _, s in shares[:t]])[:, None, :]
    return shamir.reconstruct(stacked, [x_coordinate(i) for i, _ in shares[:t]])[0]


def test_with_the_default_threshold_one_corrupt_client_lets_the_coordinator_strip_the_victim():
    config, session, y, x, b_shares, s_shares, peer_keys = _attack(threshold=None)
    t = config.shares_needed
    assert (t, config.certification_quorum, 2 * t - N) == (3, 3, 1)  # c = 1 is not < 2t - n
    assert len(b_shares) >= t and len(s_shares) >= t
    sid, length = session.server.session_id, config.vector_length
    b, s_sk = _rebuild(b_shares, t), X25519PrivateKey.from_private_bytes(_rebuild(s_shares, t))
    y = (y - expand(self_mask_key(b, sid, 0, VICTIM), length)).astype(np.uint32)
    for v, peer in peer_keys.items():  # the victim (index 0) added +PRG(k) for every larger peer
        y = (y - expand(pairwise_mask_key(s_sk, peer, sid, 0, VICTIM, v), length)).astype(np.uint32)
    recovered = config.values.decode_sum(y[:DIM])
    assert np.abs(recovered - x).max() <= config.values.sum_error_bound(1)


@pytest.mark.parametrize("threshold", [4])
def test_a_threshold_with_2t_minus_n_above_the_corrupt_count_leaves_the_coordinator_short(threshold):
    config, _session, _y, _x, b_shares, s_shares, _keys = _attack(threshold)
    assert 2 * config.shares_needed - N > 1  # c = 1 < 2t - n
    assert len(b_shares) < config.shares_needed and len(s_shares) < config.shares_needed
