"""Exponential back-off with jitter, for re-joining and retrying a lost link."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential back-off: start, ×factor per attempt, capped, with ±jitter (a fraction)."""

    def __init__(self, start: float = 0.2, factor: float = 2.0, cap: float = 5.0,
                 jitter: float = 0.2, random_unit: Callable[[], float] = random.random) -> None:
        self.start, self.factor, self.cap, self.jitter = start, factor, cap, jitter
        self._random_unit = random_unit
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.start * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1.0 + self.jitter * (2.0 * self._random_unit() - 1.0))

    def reset(self) -> None:
        self.attempt = 0
