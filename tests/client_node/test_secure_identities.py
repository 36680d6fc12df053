"""A man in the middle of AdvertiseKeys / ShareKeys: impersonating a node's peers.

The coordinator (or whoever sits on its wire) answers node 0's SecAggBegin with a key directory
of its own: it plays nodes 1 and 2 with SecAggClients it runs itself. Unauthenticated, node 0
deals them its shares and the attacker strips node 0's masked input: its update in the clear.
With identity keys pinned in node 0's roster the substituted advertisements fail (wrong
signature), and relaying the attacker's identity keys instead is refused (not the pinned ones).
"""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_node.secure_contribution import (
    SecureContribution,
    SecureTaskError,
    SessionParams,
    session_context,
)
from codream.aggregation import Contribution
from secagg import SecAggClient, SecAggConfig, SignatureInvalid, decode, shamir
from secagg.common import pairwise_mask_key, self_mask_key, x_coordinate
from secagg.messages import AdvertiseKeys, Header, KeyDirectory, MaskedInput, ShareDelivery, ShareKeys
from secagg.prg import expand

DIM, SID = 6, b"M" * 16
MEMBERS = ("node-0", "node-1", "node-2")
UPDATE = np.array([0.5, -1.5, 2.0, 0.25, -3.0, 1.0])
KEYS = {n: Ed25519PrivateKey.generate() for n in MEMBERS}
ROSTER = {n: k.public_key() for n, k in KEYS.items()}
FAKE = {1: Ed25519PrivateKey.generate(), 2: Ed25519PrivateKey.generate()}


def _params(identity_keys=()):
    config = SecAggConfig(n_clients=3, dim=DIM, clip=10.0, authenticated=bool(identity_keys))
    return SessionParams(SID, 0, config, 1.0, MEMBERS, tuple(identity_keys))


def _attack(victim, params):
    """Run the impersonated peers against `victim`; return what the attacker strips from y_0."""
    signing = params.config.authenticated
    identities = {0: ROSTER["node-0"], 1: FAKE[1].public_key(), 2: FAKE[2].public_key()}
    fakes = {i: SecAggClient(i, params.config, SID, context=session_context(params),
                             identity_key=FAKE[i] if signing else None,
                             peer_identities=identities if signing else None) for i in (1, 2)}
    adverts = [decode(victim.begin(params), AdvertiseKeys)]
    adverts += [fakes[i].advertise_keys() for i in (1, 2)]
    header = Header(SID, 0, 0)
    shares = decode(victim.share_keys(KeyDirectory(header, tuple(adverts)).to_bytes()), ShareKeys)
    dealt = {0: shares}
    dealt.update({i: fakes[i].share_keys(KeyDirectory(Header(SID, 0, i), tuple(adverts)))
                  for i in (1, 2)})

    def delivery(receiver):
        senders = [s for s in (0, 1, 2) if s != receiver]
        return ShareDelivery(Header(SID, 0, receiver),
                             tuple((s, dict(dealt[s].ciphertexts)[receiver]) for s in senders),
                             tuple((s, dict(dealt[s].commitments)[receiver]) for s in senders))

    for i in (1, 2):
        fakes[i].receive_shares(delivery(i))
    victim.receive_shares(SID, delivery(0).to_bytes())
    y = decode(victim.masked(SID, 0, Contribution(UPDATE.astype(np.float32), 1.0)).masked_input,
               MaskedInput).masked.astype(np.uint32)
    held = [(i, fakes[i]._secrets.held[0][1, 0]) for i in (1, 2)]  # the victim's b-shares
    seed = shamir.reconstruct(np.stack([s for _, s in held])[:, None, :],
                              [x_coordinate(i) for i, _ in held])[0]
    length = params.config.vector_length
    y -= expand(self_mask_key(seed, SID, 0, 0), length)
    for i in (1, 2):  # the attacker holds the masking keys it advertised in node i's name
        y -= expand(pairwise_mask_key(fakes[i]._secrets.s_privates[0], adverts[0].s_publics[0],
                                      SID, 0, i, 0), length)
    return params.config.values.decode_sum(y[:DIM])


def test_unauthenticated_a_man_in_the_middle_recovers_the_update_in_the_clear():
    recovered = _attack(SecureContribution("node-0"), _params())
    assert np.abs(recovered - UPDATE).max() < 1e-6


def test_pinned_identities_refuse_the_impersonated_peers():
    victim = SecureContribution("node-0", identity_key=KEYS["node-0"], peer_identities=ROSTER)
    with pytest.raises(SignatureInvalid):  # the real keys relayed: the fakes' signatures fail
        _attack(victim, _params([ROSTER[n].public_bytes_raw() for n in MEMBERS]))


def test_relaying_the_attackers_identity_keys_is_refused_before_any_key_is_advertised():
    victim = SecureContribution("node-0", identity_key=KEYS["node-0"], peer_identities=ROSTER)
    relayed = [ROSTER["node-0"].public_bytes_raw()] + [FAKE[i].public_key().public_bytes_raw()
                                                       for i in (1, 2)]
    with pytest.raises(SecureTaskError, match="not the pinned one"):
        victim.begin(_params(relayed))
    assert victim.client is None


def test_a_node_with_a_roster_refuses_an_unauthenticated_session():
    victim = SecureContribution("node-0", identity_key=KEYS["node-0"], peer_identities=ROSTER)
    with pytest.raises(SecureTaskError, match="only in authenticated sessions"):
        victim.begin(_params())
