"""The corrupt-party bound against an active coordinator, complete graph: c < 2t - n.

An active coordinator colluding with c clients splits the n - c honest clients between two
survivor lists of one step: L1 says the victim survived (its holders reveal b-shares of it),
L2 says it dropped (they reveal s_sk-shares). The corrupt clients sign both lists and hand over
both shares they hold. It needs t of each kind, so h1 + c >= t and h2 + c >= t with
h1 + h2 <= n - c: possible exactly when c >= 2t - n (and both lists certified: c >= 2q - n).
With the default threshold (the smallest majority, t = q = (n + 1) / 2 for odd n) a single
corrupt client is enough at n = 5, and the victim's input comes out in the clear; raising t to 4
(2t - n = 3 > 1) leaves the coordinator one share short of each. secagg/README.md states it.

`secagg.colluding_nodes` = c is CoDream's setting for it: the secure plan then sizes t =
floor((n + c)/2) + 1, so the same attack with c accomplices falls short at every split of the
honest clients, while the plan's c = 0 threshold at the same n lets it through (n = 5, c = 1
and n = 7, c = 2 below).
"""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from secagg_helpers import wire_round_trip

from codream.config import SecureAggregationConfig
from codream.secure_plan import session_config
from secagg import InProcessSession, SecAggConfig, shamir
from secagg.common import consistency_payload, pairwise_mask_key, self_mask_key, x_coordinate
from secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    ConsistencyRequest,
    Header,
    UnmaskRequest,
)
from secagg.prg import expand

N, DIM, VICTIM = 5, 8, 0


def _attack(threshold, n=N, colluding=1):
    """The attack at n clients, the last `colluding` of them corrupt; the honest ones (the
    victim, client 0, first) are split as evenly as the coordinator can, the victim's list
    taking the larger half: the best split for it, since it needs t of each kind."""
    corrupt = tuple(range(n - colluding, n))
    honest = n - colluding
    l1_holders, l2_holders = tuple(range((honest + 1) // 2)), tuple(range((honest + 1) // 2, honest))
    config = SecAggConfig(n_clients=n, dim=DIM, clip=4.0, threshold=threshold, authenticated=True)
    session = InProcessSession.create(config)
    session.setup_block()
    server, clients, sid = session.server, session.clients, session.server.session_id
    # the masking keys the victim's peers advertised (the coordinator relayed them)
    peer_keys = {v: clients[VICTIM]._secrets.peer_s[v][0] for v in range(n) if v != VICTIM}
    x = np.linspace(-3.0, 3.0, DIM)
    for i in range(n):
        server.receive_masked_input(wire_round_trip(clients[i].masked_input(0, x * (i == VICTIM))))
    y = server._inputs[VICTIM].astype(np.uint32)  # the victim's masked input, as relayed
    everyone, without = tuple(range(n)), tuple(i for i in range(n) if i != VICTIM)

    def certify(survivors, honest):
        signatures = [(i, clients[i].sign_survivors(wire_round_trip(ConsistencyRequest(Header(sid, 0, i),
                                                                              survivors))).signature)
                      for i in honest]
        forged = [(c, clients[c]._identity.sign(consistency_payload(
            sid, 0, survivors, clients[c]._own_advert.c_public))) for c in corrupt]
        return tuple(sorted([*signatures, *forged]))  # corrupt clients sign both

    sig1, sig2 = certify(everyone, l1_holders), certify(without, l2_holders)
    b_shares, s_shares = [], []
    for i in l1_holders:  # told: the victim survived
        request = UnmaskRequest(Header(sid, 0, i), everyone, (), sig1, ())
        response = clients[i].unmask(wire_round_trip(request))
        b_shares += [(i, s) for p, k, s in response.shares if p == VICTIM and k == KIND_SELF_MASK]
    for i in l2_holders:  # told: the victim dropped
        request = UnmaskRequest(Header(sid, 0, i), without, (VICTIM,), sig2, ())
        response = clients[i].unmask(wire_round_trip(request))
        s_shares += [(i, s) for p, k, s in response.shares if p == VICTIM and k == KIND_MASK_KEY]
    for c in corrupt:
        held = clients[c]._secrets.held[VICTIM]  # (2, steps, CHUNKS): [0] s_sk, [1] b
        s_shares.append((c, held[0, 0]))
        b_shares.append((c, held[1, 0]))
    return config, session, y, x, b_shares, s_shares, peer_keys


def _rebuild(shares, t):
    stacked = np.stack([s if isinstance(s, np.ndarray) else shamir.share_from_bytes(s)
                        for _, s in shares[:t]])[:, None, :]
    return shamir.reconstruct(stacked, [x_coordinate(i) for i, _ in shares[:t]])[0]


def _strip(config, session, y, b_shares, s_shares, peer_keys):
    """The victim's input, from t shares of each of its secrets and its masked input."""
    t = config.shares_needed
    sid, length = session.server.session_id, config.vector_length
    b, s_sk = _rebuild(b_shares, t), X25519PrivateKey.from_private_bytes(_rebuild(s_shares, t))
    y = (y - expand(self_mask_key(b, sid, 0, VICTIM), length)).astype(np.uint32)
    for v, peer in peer_keys.items():  # the victim (index 0) added +PRG(k) for every larger peer
        y = (y - expand(pairwise_mask_key(s_sk, peer, sid, 0, VICTIM, v), length)).astype(np.uint32)
    return config.values.decode_sum(y[:DIM])


def test_with_the_default_threshold_one_corrupt_client_lets_the_coordinator_strip_the_victim():
    config, session, y, x, b_shares, s_shares, peer_keys = _attack(threshold=None)
    t = config.shares_needed
    assert (t, config.certification_quorum, 2 * t - N) == (3, 3, 1)  # c = 1 is not < 2t - n
    assert len(b_shares) >= t and len(s_shares) >= t
    recovered = _strip(config, session, y, b_shares, s_shares, peer_keys)
    assert np.abs(recovered - x).max() <= config.values.sum_error_bound(1)


@pytest.mark.parametrize("threshold", [4])
def test_a_threshold_with_2t_minus_n_above_the_corrupt_count_leaves_the_coordinator_short(threshold):
    config, _session, _y, _x, b_shares, s_shares, _keys = _attack(threshold)
    assert 2 * config.shares_needed - N > 1  # c = 1 < 2t - n
    assert len(b_shares) < config.shares_needed and len(s_shares) < config.shares_needed


def _plan_threshold(n, colluding):
    """The threshold CoDream's secure plan gives a complete-graph session of n members."""
    settings = SecureAggregationConfig(graph="complete", colluding_nodes=colluding)
    return session_config(settings, n, DIM, 4.0).shares_needed


@pytest.mark.parametrize(("n", "colluding"), [(5, 1), (7, 2)])
def test_colluding_nodes_unset_the_plans_threshold_lets_c_accomplices_strip_the_victim(n, colluding):
    """secagg.colluding_nodes = 0 (the default): t = floor(n/2) + 1, which the README says c
    accomplices of an active coordinator break once c >= 2t - n: here they do."""
    t = _plan_threshold(n, 0)
    assert t == n // 2 + 1 and colluding >= 2 * t - n
    config, session, y, x, b_shares, s_shares, peer_keys = _attack(t, n, colluding)
    assert len(b_shares) >= t and len(s_shares) >= t
    recovered = _strip(config, session, y, b_shares, s_shares, peer_keys)
    assert np.abs(recovered - x).max() <= config.values.sum_error_bound(1)


@pytest.mark.parametrize(("n", "colluding"), [(5, 1), (7, 2)])
def test_colluding_nodes_set_sizes_a_threshold_the_same_accomplices_fall_short_of(n, colluding):
    t = _plan_threshold(n, colluding)
    assert t == (n + colluding) // 2 + 1 and colluding < 2 * t - n
    config, _session, _y, _x, b_shares, s_shares, _keys = _attack(t, n, colluding)
    assert len(b_shares) < t or len(s_shares) < t  # the best split: short of one secret
    honest = n - colluding  # and at every other split of the honest clients too
    assert all(min(h1, honest - h1) + colluding < t for h1 in range(honest + 1))
