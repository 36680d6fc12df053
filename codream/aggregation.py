"""The aggregation point: the coordinator learns Σ w_k·v_k and Σ w_k, nothing per client.

Everything the method aggregates (dream changes, soft labels, FedAvg parameters) passes through
a `Summer`. The plain one here adds clear values in process; the secure-aggregation summer
plugs in behind the same interface without the method changing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # tasks are declared above: their replies carry a Contribution
    from codream.messages import Task

log = logging.getLogger(__name__)


class BadContribution(ValueError):
    """A client's contribution cannot be summed (wrong shape, dtype, or non-finite values)."""


@dataclass(frozen=True)
class Contribution:
    """A client's weighted value w_k·v_k (flat float32) and its weight w_k."""

    weighted_values: np.ndarray = field(repr=False)  # (d,) float32
    weight: float


@dataclass(frozen=True)
class AggregateSum:
    """Σ w_k·v_k, Σ w_k, and who was summed (and who was left out, with why)."""

    total: np.ndarray  # (d,) float64
    weight: float
    contributors: tuple[str, ...]
    excluded: Mapping[str, str]
    # how a secure sum was made (graph, degree, threshold, clients); empty for a plain sum
    protocol: Mapping[str, object] = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        if self.weight <= 0:
            raise ValueError("no weight was aggregated: every client was excluded")
        return self.total / self.weight


def check_contribution(contribution: Contribution, size: int) -> None:
    """Raises BadContribution naming the problem; a bad client must never reach the sum."""
    values = contribution.weighted_values
    if not isinstance(values, np.ndarray) or values.dtype != np.float32:
        raise BadContribution(f"values must be a float32 array, got {getattr(values, 'dtype', type(values))}")
    if values.shape != (size,):
        raise BadContribution(f"values must have shape ({size},), got {values.shape}")
    if not np.isfinite(contribution.weight) or contribution.weight <= 0:
        raise BadContribution(f"weight must be finite and > 0, got {contribution.weight}")
    if not np.isfinite(values).all():
        raise BadContribution(f"{int((~np.isfinite(values)).sum())} non-finite values")


class Summer(Protocol):
    """`task` is the summed task: a secure summer picks its clip by the kind of value.
    `members`: the nodes the sum runs among (a sampled round's); None: every node it knows."""

    def sum(self, contributions: Mapping[str, Contribution], size: int, task: Task | None = None,
            members: Sequence[str] | None = None) -> AggregateSum: ...


class PlainSummer:
    """In-process sum of validated contributions; invalid ones are excluded with a log line."""

    def sum(self, contributions: Mapping[str, Contribution], size: int, task: Task | None = None,
            members: Sequence[str] | None = None) -> AggregateSum:
        total = np.zeros(size, dtype=np.float64)
        weight = 0.0
        contributors: list[str] = []
        excluded: dict[str, str] = {}
        for node_id in sorted(contributions):
            contribution = contributions[node_id]
            try:
                check_contribution(contribution, size)
            except BadContribution as error:
                log.warning("node %s excluded from the sum: %s", node_id, error)
                excluded[node_id] = str(error)
                continue
            total += contribution.weighted_values
            weight += contribution.weight
            contributors.append(node_id)
        return AggregateSum(total, weight, tuple(contributors), excluded)
