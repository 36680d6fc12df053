"""Derivations shared by client and server: graph, x-coordinates, keys and signed payloads."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg import kdf
from secagg.config import SecAggConfig
from secagg.errors import InvalidPublicKey
from secagg.graph import build_graph

CONSISTENCY_LABEL = b"codream/secagg/v1/consistency"
SEED_COMMITMENT_LABEL = b"codream/secagg/v1/seed-commitment"
SHARE_COMMITMENT_LABEL = b"codream/secagg/v1/share-commitment"
PARAMS_LABEL = b"codream/secagg/v1/session-parameters"
COMMITMENT_BYTES = 32


def session_graph(config: SecAggConfig, session_id: bytes) -> dict[int, frozenset[int]]:
    """The neighbour sets of a session; the Harary permutation is seeded by the session id."""
    return build_graph(config.graph, range(config.n_clients), config.degree, session_id)


def x_coordinate(client_id: int) -> int:
    """Shamir x-coordinate of a client (never 0)."""
    return client_id + 1


def pairwise_mask_key(
    s_private: X25519PrivateKey, peer_public: bytes, session_id: bytes, step: int, u: int, v: int
) -> bytes:
    """PRG key of the mask shared by u and v at `step` (symmetric in u, v)."""
    agreed = agree(s_private, peer_public)
    lo, hi = min(u, v), max(u, v)
    return kdf.derive_key(agreed, kdf.LABEL_PAIRWISE_MASK, session_id, step, lo, hi)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; InvalidPublicKey when it is all zero (a small-order peer key).

    OpenSSL refuses an all-zero result (RFC 7748 section 6.1), which `cryptography` raises as a
    bare ValueError; keys are checked when advertised, so this is the last line of defence.
    """
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:
        raise InvalidPublicKey(f"key agreement failed: {error} (small-order or malformed key)") from None


def seed_commitment(session_id: bytes, step: int, owner: int, seed: bytes) -> bytes:
    """SHA-256 commitment to `owner`'s self-mask seed b of `step`, published in AdvertiseKeys."""
    info = kdf.encode_info(SEED_COMMITMENT_LABEL, session_id, step, owner)
    return hashlib.sha256(info + seed).digest()


def share_commitment(session_id: bytes, block: int, owner: int, holder: int, kind: int, step: int,
                     share: bytes) -> bytes:
    """SHA-256 commitment to the share of `owner`'s secret of `kind` at `step` dealt to `holder`.

    Shares carry ~279 bits of entropy each, so the hash hides them; the labels bind it to one
    (session, block, owner, holder, kind, step), so a share cannot be moved to another slot.
    """
    info = kdf.encode_info(SHARE_COMMITMENT_LABEL, session_id, block, owner, holder, kind, step)
    return hashlib.sha256(info + share).digest()


def self_mask_key(seed: bytes, session_id: bytes, step: int, owner: int) -> bytes:
    """PRG key of `owner`'s self-mask at `step`, from its per-step seed b."""
    return kdf.derive_key(seed, kdf.LABEL_SELF_MASK, session_id, step, owner)


def transport_key(
    c_private: X25519PrivateKey,
    peer_public: bytes,
    session_id: bytes,
    block: int,
    sender: int,
    receiver: int,
) -> bytes:
    """AES-256-GCM key for the share bundle sender -> receiver of `block` (directional)."""
    return transport_key_from(agree(c_private, peer_public), session_id, block, sender, receiver)


def transport_key_from(agreed: bytes, session_id: bytes, block: int, sender: int, receiver: int
                       ) -> bytes:
    """`transport_key` from the X25519 agreement already computed."""
    return kdf.derive_key(agreed, kdf.LABEL_SHARE_TRANSPORT, session_id, block, sender, receiver)


def consistency_mac_keys(agreed: bytes, session_id: bytes, block: int, me: int, peer: int
                         ) -> tuple[bytes, bytes]:
    """HMAC keys (me -> peer, peer -> me) for the consistency round of `block`, from `agreed`,
    the X25519 agreement of the two clients' encryption keys of the block (the one their share
    transport key comes from, under another label). Both public keys are signed in AdvertiseKeys
    (authenticated mode), so only the two clients can compute either key."""
    lo, hi = min(me, peer), max(me, peer)
    keys = kdf.derive_key(agreed, kdf.LABEL_CONSISTENCY_MAC, session_id, block, lo, hi, length=64)
    lo_to_hi, hi_to_lo = keys[:32], keys[32:]
    return (lo_to_hi, hi_to_lo) if me == lo else (hi_to_lo, lo_to_hi)


def consistency_mac(key: bytes, payload: bytes, signer: int, receiver: int) -> bytes:
    """HMAC-SHA256 of a consistency payload under the directional `consistency_mac_keys` key
    signer -> receiver. The MAC input names both ids explicitly, so the direction does not rest
    on the key split alone: a MAC signer -> receiver never checks as receiver -> signer (a
    coordinator reflecting a client's own MAC back to it as its peer's)."""
    return hmac.new(key, payload + struct.pack(">II", signer, receiver), hashlib.sha256).digest()


def transport_aad(session_id: bytes, block: int, sender: int, receiver: int) -> bytes:
    return session_id + struct.pack(">III", block, sender, receiver)


def consistency_payload(session_id: bytes, step: int, survivors: Iterable[int], c_public: bytes
                        ) -> bytes:
    """What each survivor signs in the ConsistencyCheck round: the list, bound to (session, step)
    and to the signer's encryption key `c_public` of the block (fresh per block and per session
    instance, signed in its AdvertiseKeys), so a signature made in one instance of a session id
    does not verify in another instance of the same id at a verifier that knows the key."""
    ids = sorted(survivors)
    return (CONSISTENCY_LABEL + session_id + c_public
            + struct.pack(f">II{len(ids)}I", step, len(ids), *ids))


def params_digest(config: SecAggConfig, session_id: bytes, context: bytes = b"") -> bytes:
    """SHA-256 of everything a client was told about its session: the session id, every field
    of the config (the threshold, degree and scale as resolved) and the caller's `context` (e.g.
    the weight unit and the member list); each client signs its own in AdvertiseKeys."""
    degree = config.neighbourhood_size - 1
    fields = struct.pack(
        ">IQdIIddI?", config.n_clients, config.dim, config.clip, config.shares_needed, degree,
        config.values.scale or 0.0, config.max_weight, config.steps_per_block, config.authenticated,
    )
    graph = config.graph.encode()
    return hashlib.sha256(PARAMS_LABEL + session_id + struct.pack(">I", len(graph)) + graph + fields
                          + struct.pack(">I", len(context)) + context).digest()
