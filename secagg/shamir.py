"""Shamir t-of-n secret sharing of 32-byte secrets over GF(2^31 - 1), vectorised with numpy.

A 32-byte secret is split into nine chunks of at most 30 bits; each chunk is shared with its own
independent random polynomial of degree t - 1, so any t - 1 shares are independent of the
secret (information-theoretic, chunk by chunk). A share is the nine field elements at the
holder's x-coordinate: 36 bytes on the wire. Reconstruction uses exactly t shares and caches the
Lagrange coefficients keyed by the holders' x-set, so a step that reconstructs many secrets from
the same survivors computes them once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

PRIME = 2**31 - 1
SECRET_BYTES = 32
CHUNK_BITS = 30
CHUNKS = -(-8 * SECRET_BYTES // CHUNK_BITS)  # 9
SHARE_BYTES = 4 * CHUNKS  # 36
_CHUNK_MASK = (1 << CHUNK_BITS) - 1

RandomBytes = Callable[[int], bytes]


def secrets_to_chunks(secrets: Sequence[bytes]) -> np.ndarray:
    """(m,) 32-byte secrets -> (m, CHUNKS) uint64 field elements, little-endian 30-bit chunks."""
    out = np.empty((len(secrets), CHUNKS), dtype=np.uint64)
    for i, secret in enumerate(secrets):
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
        value = int.from_bytes(secret, "little")
        for c in range(CHUNKS):
            out[i, c] = (value >> (CHUNK_BITS * c)) & _CHUNK_MASK
    return out


def chunks_to_secrets(chunks: np.ndarray) -> list[bytes]:
    """Inverse of `secrets_to_chunks`; raises ValueError if a chunk is out of range."""
    secrets = []
    for row in chunks.reshape(-1, CHUNKS):
        value = 0
        for c in range(CHUNKS):
            chunk = int(row[c])
            if chunk > _CHUNK_MASK:
                raise ValueError("reconstructed chunk out of range: inconsistent shares")
            value |= chunk << (CHUNK_BITS * c)
        if value >> (8 * SECRET_BYTES):
            raise ValueError("reconstructed secret out of range: inconsistent shares")
        secrets.append(value.to_bytes(SECRET_BYTES, "little"))
    return secrets


def random_field_elements(count: int, random_bytes: RandomBytes = os.urandom) -> np.ndarray:
    """`count` uniform elements of GF(PRIME) by rejection sampling 31-bit words (uint64)."""
    out = np.empty(count, dtype=np.uint64)
    filled = 0
    while filled < count:
        need = count - filled
        words = np.frombuffer(random_bytes(4 * need), dtype="<u4").astype(np.uint64)
        words &= np.uint64(0x7FFFFFFF)
        good = words[words < PRIME]
        out[filled : filled + len(good)] = good
        filled += len(good)
    return out


def evaluate(coefficients: np.ndarray, xs: Sequence[int]) -> np.ndarray:
    """Evaluate polynomials at xs by Horner's rule.

    coefficients: (t, m) uint64, row 0 the constant terms. Returns (len(xs), m) uint64.
    """
    x = np.asarray(xs, dtype=np.uint64)[:, None]  # (n, 1)
    p = np.uint64(PRIME)
    acc = np.broadcast_to(coefficients[-1], (len(xs), coefficients.shape[1])).copy()
    for row in coefficients[-2::-1]:
        acc *= x  # both < 2^31: product < 2^62, no overflow
        acc += row
        acc %= p
    return acc


def split_chunks(
    chunks: np.ndarray, xs: Sequence[int], threshold: int, random_bytes: RandomBytes = os.urandom
) -> np.ndarray:
    """Share field elements `chunks` (m,) t-of-n at `xs`. Returns (len(xs), m) uint64."""
    _check_xs(xs)
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    m = chunks.shape[0]
    coefficients = np.empty((threshold, m), dtype=np.uint64)
    coefficients[0] = chunks
    coefficients[1:] = random_field_elements((threshold - 1) * m, random_bytes).reshape(-1, m)
    return evaluate(coefficients, xs)


def split(
    secrets: Sequence[bytes],
    xs: Sequence[int],
    threshold: int,
    random_bytes: RandomBytes = os.urandom,
) -> np.ndarray:
    """Share each 32-byte secret t-of-n at `xs`. Returns (len(xs), len(secrets), CHUNKS) uint64."""
    chunks = secrets_to_chunks(secrets).reshape(-1)
    shares = split_chunks(chunks, xs, threshold, random_bytes)
    return shares.reshape(len(xs), len(secrets), CHUNKS)


@lru_cache(maxsize=256)
def lagrange_at_zero(xs: tuple[int, ...]) -> np.ndarray:
    """Coefficients l_i with f(0) = sum_i l_i f(x_i) for deg f < len(xs). Cached by x-set."""
    _check_xs(xs)
    numerator = 1
    for x in xs:
        numerator = numerator * x % PRIME
    out = np.empty(len(xs), dtype=np.uint64)
    for i, xi in enumerate(xs):
        denominator = xi
        for xj in xs:
            if xj != xi:
                denominator = denominator * (xj - xi) % PRIME
        out[i] = numerator * pow(denominator, PRIME - 2, PRIME) % PRIME
    return out


def reconstruct_chunks(shares: np.ndarray, xs: Sequence[int]) -> np.ndarray:
    """f(0) from exactly t shares: shares (t, m) uint64 at xs -> (m,) uint64."""
    if shares.shape[0] != len(xs):
        raise ValueError("need one x-coordinate per share")
    shares = np.asarray(shares, dtype=np.uint64)
    if np.any(shares >= PRIME):
        raise ValueError("share element outside the field")
    coeffs = lagrange_at_zero(tuple(int(x) for x in xs))[:, None]
    terms = shares * coeffs % np.uint64(PRIME)  # each < 2^31; t of them sum < 2^63
    return terms.sum(axis=0, dtype=np.uint64) % np.uint64(PRIME)


def reconstruct(shares: np.ndarray, xs: Sequence[int]) -> list[bytes]:
    """Secrets from exactly t shares: shares (t, m, CHUNKS) at xs -> m 32-byte secrets."""
    t = shares.shape[0]
    flat = reconstruct_chunks(shares.reshape(t, -1), xs)
    return chunks_to_secrets(flat)


def share_to_bytes(share: np.ndarray) -> bytes:
    """One share (CHUNKS,) -> 36 bytes, little-endian uint32 per chunk."""
    return share.astype("<u4").tobytes()


def share_from_bytes(data: bytes) -> np.ndarray:
    """36 bytes -> one share (CHUNKS,) uint64; raises ValueError on wrong length or range."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"share must be {SHARE_BYTES} bytes, got {len(data)}")
    share = np.frombuffer(data, dtype="<u4").astype(np.uint64)
    if np.any(share >= PRIME):
        raise ValueError("share element outside the field")
    return share


def _check_xs(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ValueError("x-coordinates must be distinct")
    if any(not 0 < int(x) < PRIME for x in xs):
        raise ValueError("x-coordinates must be in [1, PRIME)")
