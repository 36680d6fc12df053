"""Fixed-point quantisation into Z_{2^32} with a declared clip range that cannot wrap for n sums."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from secagg.errors import ConfigError

_SIGNED_LIMIT = 2**31 - 1  # sums are decoded as signed 32-bit integers


@dataclass(frozen=True)
class FixedPoint:
    """Maps floats in [-clip, clip] to round(x * scale) mod 2^32 (two's complement).

    The sum of `n_clients` encodings decodes exactly (as a signed 32-bit integer) only if
    n_clients * round(clip * scale) <= 2^31 - 1; parameters that could wrap are refused.
    `scale=None` picks the largest scale that cannot wrap. Per element the quantisation error is
    at most 0.5 / scale, so a sum of n inputs is off by at most n * 0.5 / scale (`sum_error_bound`).
    """

    clip: float
    n_clients: int
    scale: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.n_clients, int) and self.n_clients >= 1):
            raise ConfigError(f"n_clients must be a positive int, got {self.n_clients!r}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip must be a finite positive number, got {self.clip!r}")
        if self.scale is None:
            scale = math.floor(_SIGNED_LIMIT / self.n_clients) / self.clip
            # round(clip * scale) may round up by one ulp; step down until it provably fits
            while _max_code(self.clip, scale) * self.n_clients > _SIGNED_LIMIT:
                scale = math.nextafter(scale, 0.0)
            object.__setattr__(self, "scale", scale)
        if not (math.isfinite(self._scale) and self._scale > 0):
            raise ConfigError(f"scale must be a finite positive number, got {self.scale!r}")
        if self.max_code < 1:
            raise ConfigError(f"scale {self.scale} too small for clip {self.clip}: all codes are 0")
        if self.max_code * self.n_clients > _SIGNED_LIMIT:
            max_scale = _SIGNED_LIMIT / self.n_clients / self.clip
            raise ConfigError(
                f"clip={self.clip}, scale={self.scale} and n_clients={self.n_clients} could wrap "
                f"mod 2^32: n_clients * round(clip * scale) = {self.max_code * self.n_clients} "
                f"> 2^31 - 1; lower scale or clip (max scale {max_scale:.6g})"
            )

    @property
    def _scale(self) -> float:
        """`scale` as a float: `__post_init__` has replaced None by the largest safe scale."""
        assert self.scale is not None
        return self.scale

    @property
    def max_code(self) -> int:
        return _max_code(self.clip, self._scale)

    @property
    def element_error_bound(self) -> float:
        return 0.5 / self._scale

    def sum_error_bound(self, n_summed: int) -> float:
        """Largest |decoded sum - true sum of the clipped inputs| for n_summed inputs."""
        return n_summed * self.element_error_bound

    def encode(self, x: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """x (d,) float -> (codes (d,) uint32, number of clipped elements). NaN raises."""
        x = np.asarray(x)
        if out is None:
            out = np.empty(x.shape, dtype=np.uint32)
        inside = np.abs(x) <= self.clip  # False for NaN and +-inf too
        clipped = x.size - int(np.count_nonzero(inside))
        if clipped and np.isnan(x).any():
            raise ValueError("input contains NaN")
        scaled = np.clip(x, -self.clip, self.clip, dtype=np.float64)
        scaled *= self._scale
        np.rint(scaled, out=scaled)
        # |code| <= max_code < 2^31, so the int32 cast is exact; its bits are the mod-2^32 code
        np.copyto(out.view(np.int32), scaled, casting="unsafe")
        return out, clipped

    def decode_sum(self, codes: np.ndarray) -> np.ndarray:
        """uint32 sum of encodings -> float64 sum."""
        return np.asarray(codes, dtype=np.uint32).view(np.int32).astype(np.float64) / self._scale


def _max_code(clip: float, scale: float) -> int:
    """The code of +clip: the largest |code| an encoding can take."""
    return int(round(clip * scale))
