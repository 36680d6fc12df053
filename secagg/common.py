"""Derivations shared by client and server: graph, x-coordinates, keys and signed payloads."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg import kdf
from secagg.config import SecAggConfig
from secagg.graph import build_graph

CONSISTENCY_LABEL = b"codream/secagg/v1/consistency"


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
    agreed = s_private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = min(u, v), max(u, v)
    return kdf.derive_key(agreed, kdf.LABEL_PAIRWISE_MASK, session_id, step, lo, hi)


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
    agreed = c_private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return kdf.derive_key(agreed, kdf.LABEL_SHARE_TRANSPORT, session_id, block, sender, receiver)


def transport_aad(session_id: bytes, block: int, sender: int, receiver: int) -> bytes:
    return session_id + struct.pack(">III", block, sender, receiver)


def consistency_payload(session_id: bytes, step: int, survivors: Iterable[int]) -> bytes:
    """What each survivor signs in the ConsistencyCheck round."""
    ids = sorted(survivors)
    return CONSISTENCY_LABEL + session_id + struct.pack(f">II{len(ids)}I", step, len(ids), *ids)
