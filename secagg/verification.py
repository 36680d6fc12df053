"""Checks client and server both apply to what they receive; each raises, none returns a bool."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secagg.config import SecAggConfig
from secagg.errors import (
    DuplicateClient,
    MalformedMessage,
    SessionMismatch,
    SignatureInvalid,
    StepMismatch,
    UnknownClient,
)
from secagg.messages import AdvertiseKeys, Header


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
    """Raise unless the advertisement has one masking key per step (and, authenticated, is signed)."""
    if len(entry.s_publics) != config.steps_per_block:
        raise MalformedMessage("AdvertiseKeys has the wrong number of masking keys")
    if config.authenticated:
        verify_advert(entry, identities)
