"""Mask expansion: an AES-256-CTR keystream read as little-endian uint32, added mod 2^32."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# AES-256-CTR measured faster than ChaCha20 on AES-NI hardware (see benchmarks/secagg_cost.py).
_ZERO_COUNTER = bytes(16)
KEY_BYTES = 32


def _keystream_into(key: bytes, zeros: memoryview, out: bytearray) -> None:
    _encryptor(key).update_into(zeros, out)


def expand(key: bytes, length: int) -> np.ndarray:
    """The first `length` uint32 words of the keystream of `key` (a fresh array)."""
    return MaskExpander(length).mask(key).copy()


class MaskExpander:
    """Expands keys into uint32 masks of a fixed length, reusing preallocated buffers."""

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError("length must be non-negative")
        self.length = length
        nbytes = 4 * length
        self._zeros = memoryview(bytes(nbytes))
        self._out = bytearray(nbytes + 16)  # update_into wants room for one extra block
        self._view = np.frombuffer(self._out, dtype="<u4", count=length)

    def mask(self, key: bytes) -> np.ndarray:
        """The mask of `key`; a view into an internal buffer, overwritten by the next call."""
        _keystream_into(key, self._zeros, self._out)
        return self._view

    def add_into(self, acc: np.ndarray, key: bytes) -> None:
        """acc += PRG(key) (mod 2^32), in place."""
        np.add(acc, self.mask(key), out=acc)

    def sub_into(self, acc: np.ndarray, key: bytes) -> None:
        """acc -= PRG(key) (mod 2^32), in place."""
        np.subtract(acc, self.mask(key), out=acc)


# Words per block of MaskStreams: block + keystream + zeros (3 x 128 KiB) stay in a 512 KiB-1 MiB
# L2 cache, so each mask costs one keystream pass and an add out of cache instead of two extra
# trips through memory (measured ~12% faster than whole-vector expansion at d = 1e6, n = 100).
BLOCK_WORDS = 32_768


class MaskStreams:
    """Adds sum PRG(plus) - sum PRG(minus) into a vector block by block, keeping it in cache.

    One AES-256-CTR encryptor per key stays open across blocks (CTR continues where the last
    block stopped, mid-AES-block included), so `apply(acc)` over consecutive blocks of a vector
    gives exactly what `MaskExpander.add_into` / `sub_into` give over the whole vector. The
    scratch buffers are allocated once and reused; `reset` sets up the keys of the next step.
    """

    def __init__(self, block_words: int | None = None) -> None:
        block_words = BLOCK_WORDS if block_words is None else block_words
        if block_words < 1:
            raise ValueError("block_words must be positive")
        self.block_words = block_words
        self._zeros = memoryview(bytes(4 * block_words))
        self._out = bytearray(4 * block_words + 16)  # update_into wants room for one extra block
        self._view = np.frombuffer(self._out, dtype="<u4", count=block_words)
        self._plus: list = []
        self._minus: list = []

    def reset(self, plus: Iterable[bytes], minus: Iterable[bytes]) -> None:
        """Start new masks: keystreams of `plus` are added and those of `minus` subtracted."""
        self._plus = [_encryptor(key).update_into for key in plus]
        self._minus = [_encryptor(key).update_into for key in minus]

    def apply(self, acc: np.ndarray) -> None:
        """acc += the next len(acc) words of every plus mask, -= those of every minus mask."""
        n = acc.shape[0]
        if n > self.block_words:
            raise ValueError(f"block of {n} words exceeds block_words={self.block_words}")
        zeros, out, ks = self._zeros[: 4 * n], self._out, self._view[:n]
        add, sub = np.add, np.subtract
        for keystream_into in self._plus:
            keystream_into(zeros, out)
            add(acc, ks, out=acc)
        for keystream_into in self._minus:
            keystream_into(zeros, out)
            sub(acc, ks, out=acc)

    def apply_all(self, acc: np.ndarray) -> None:
        """Apply the masks to the whole of `acc` (from the start of the streams), block by block."""
        step = self.block_words
        for start in range(0, acc.shape[0], step):
            self.apply(acc[start : start + step])


def _encryptor(key: bytes):
    if len(key) != KEY_BYTES:
        raise ValueError(f"PRG key must be {KEY_BYTES} bytes, got {len(key)}")
    # Each key is used for exactly one expansion, so a zero initial counter block is safe.
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER)).encryptor()
