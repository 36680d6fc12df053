"""Checks client and server both apply to what they receive; each raises, none returns a bool."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import common
from secagg.config import SecAggConfig
from secagg.errors import (
    DuplicateClient,
    InvalidPublicKey,
    MalformedMessage,
    SessionMismatch,
    SignatureInvalid,
    StepMismatch,
    UnknownClient,
)
from secagg.messages import AdvertiseKeys, Header

_P = 2**255 - 19
# The canonical u-coordinates of the points of order 1, 2, 4 and 8 on Curve25519 and its twist
# (RFC 7748 section 6.1; the list libsodium refuses): X25519 with any of them is all zero.
SMALL_ORDER_U = frozenset({
    0,
    1,
    _P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
})
# A fixed, clamped test scalar: a multiple of the cofactor 8, so it maps every small-order
# point (and only those) to the identity, which OpenSSL reports as an all-zero secret.
_PROBE = X25519PrivateKey.from_private_bytes(bytes([0x48]) + bytes(30) + bytes([0x40]))


def check_public_key(key: bytes, what: str) -> None:
    """Raise InvalidPublicKey unless `key` is a canonical X25519 key of large order.

    Honest keys (`public_bytes_raw`) are canonical: u < 2^255 - 19 with the top bit clear. A
    small-order key makes every agreement with it all zero, which would abort the honest peer.
    """
    if len(key) != 32:
        raise InvalidPublicKey(f"{what}: an X25519 key is 32 bytes, got {len(key)}")
    u = int.from_bytes(key, "little")
    if u >= _P:
        raise InvalidPublicKey(f"{what}: non-canonical X25519 key (u >= 2^255 - 19 or top bit set)")
    if u in SMALL_ORDER_U:
        raise InvalidPublicKey(f"{what}: X25519 key of small order (RFC 7748 section 6.1)")
    secret = common.agree(_PROBE, key)  # raises InvalidPublicKey for any other low-order point
    if not any(secret):
        raise InvalidPublicKey(f"{what}: X25519 key of small order (all-zero agreement)")


def check_header(header: Header, session_id: bytes, index: int, what: str) -> None:
    """Raise SessionMismatch / StepMismatch unless the header is for this session and index."""
    if not hmac.compare_digest(header.session_id, session_id):
        raise SessionMismatch(f"{what}: message from another session")
    if header.index != index:
        raise StepMismatch(f"{what}: message for {header.index}, expected {index}")


def check_ids(ids: Iterable[int], allowed: frozenset[int] | set[int], what: str) -> list[int]:
    """The ids as a list; raises DuplicateClient / UnknownClient."""
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise DuplicateClient(f"{what}: duplicate client id")
    unknown = set(ids) - set(allowed)
    if unknown:
        raise UnknownClient(f"{what}: unknown client ids {sorted(unknown)[:5]}")
    return ids


def verify_signature(
    identities: Mapping[int, Ed25519PublicKey], signer: int, signature: bytes, payload: bytes
) -> None:
    """Raise SignatureInvalid unless `signer`'s identity key signed `payload`."""
    if signer not in identities:
        raise UnknownClient(f"no identity key for client {signer}")
    try:
        identities[signer].verify(signature, payload)
    except InvalidSignature as exc:
        raise SignatureInvalid(f"bad signature from client {signer}") from exc


def verify_advert(entry: AdvertiseKeys, identities: Mapping[int, Ed25519PublicKey]) -> None:
    """Raise SignatureInvalid unless the advertisement is signed by its sender."""
    if entry.signature is None:
        raise SignatureInvalid(f"unsigned AdvertiseKeys from client {entry.header.client_id}")
    verify_signature(identities, entry.header.client_id, entry.signature, entry.signed_bytes())


def check_advert(
    entry: AdvertiseKeys, config: SecAggConfig, identities: Mapping[int, Ed25519PublicKey]
) -> None:
    """Raise unless the advertisement has one masking key and seed commitment per step, every key
    canonical and of large order (and, authenticated, it is signed)."""
    if len(entry.s_publics) != config.steps_per_block:
        raise MalformedMessage("AdvertiseKeys has the wrong number of masking keys")
    if len(entry.b_commitments) != config.steps_per_block:
        raise MalformedMessage("AdvertiseKeys has the wrong number of seed commitments")
    sender = entry.header.client_id
    check_public_key(entry.c_public, f"AdvertiseKeys of client {sender}: encryption key")
    for j, key in enumerate(entry.s_publics):
        check_public_key(key, f"AdvertiseKeys of client {sender}: masking key {j}")
    if config.authenticated:
        verify_advert(entry, identities)
