"""HKDF-SHA256 key derivation with purpose labels that keep keys for different uses apart."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Purpose labels. Changing one changes every derived key, so they are versioned.
LABEL_SHARE_TRANSPORT = b"codream/secagg/v1/share-transport"
LABEL_PAIRWISE_MASK = b"codream/secagg/v1/pairwise-mask"
LABEL_SELF_MASK = b"codream/secagg/v1/self-mask"
LABEL_CONSISTENCY_MAC = b"codream/secagg/v1/consistency-mac"


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract then expand)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def encode_info(label: bytes, *context: int | bytes) -> bytes:
    """Unambiguous `info` string: label, then each context item length- or width-prefixed.

    Integers are encoded as b"I" + 8-byte big-endian; byte strings as b"B" + 4-byte length + bytes.
    """
    parts = [struct.pack(">I", len(label)), label]
    for item in context:
        if isinstance(item, bool) or not isinstance(item, (int, bytes)):
            raise TypeError(f"context items must be int or bytes, got {type(item).__name__}")
        if isinstance(item, int):
            parts.append(b"I" + struct.pack(">Q", item))
        else:
            parts.append(b"B" + struct.pack(">I", len(item)) + item)
    return b"".join(parts)


def derive_key(ikm: bytes, label: bytes, *context: int | bytes, length: int = 32) -> bytes:
    """Derive a `length`-byte key for the purpose `label`, bound to `context` (session, step...)."""
    if len(ikm) < 16:
        raise ValueError("input keying material must be at least 16 bytes")
    return hkdf_sha256(ikm, encode_info(label, *context), length)
