"""Validated configuration of a secure-aggregation session (frozen dataclass)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from secagg.errors import ConfigError
from secagg.graph import default_degree
from secagg.quantize import FixedPoint


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters every participant of a session agrees on.

    n_clients: clients take ids 0 .. n_clients - 1 (Shamir x-coordinate = id + 1).
    dim: length d of each input vector.
    clip: inputs are clipped to [-clip, clip] (clipped elements are counted and summed).
    threshold: shares needed to rebuild a secret, out of the owner's neighbourhood (itself and
        its neighbours: n clients for "complete", degree + 1 for "secagg+"). Must be a strict
        majority of it; None picks the smallest majority, which tolerates the most dropouts.
    graph: "complete" (SecAgg, Bonawitz et al. 2017) or "secagg+" (Bell et al. 2020).
    degree: neighbours per client for "secagg+" (even); None picks ~3 log2 n.
    scale: fixed-point scale; None picks the largest that cannot wrap mod 2^32.
    max_weight: weights must lie in [0, max_weight].
    steps_per_block: aggregation steps whose per-step secrets are prepared in one ShareKeys.
    authenticated: Ed25519-signed advertisements and the ConsistencyCheck round.
    """

    n_clients: int
    dim: int
    clip: float = 1.0
    threshold: int | None = None
    graph: str = "complete"
    degree: int | None = None
    scale: float | None = None
    max_weight: float = 1.0
    steps_per_block: int = 1
    authenticated: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.n_clients, int) and 2 <= self.n_clients < 2**31):
            raise ConfigError(f"n_clients must be an int >= 2, got {self.n_clients!r}")
        if not (isinstance(self.dim, int) and self.dim >= 1):
            raise ConfigError(f"dim must be a positive int, got {self.dim!r}")
        if self.n_clients * self.dim >= 2**31:
            raise ConfigError("n_clients * dim must be < 2^31 (the clipped-count coordinate)")
        if self.graph not in ("complete", "secagg+"):
            raise ConfigError(f"graph must be 'complete' or 'secagg+', got {self.graph!r}")
        if self.degree is not None and self.graph != "secagg+":
            raise ConfigError("degree is only meaningful with graph='secagg+'")
        if self.degree is not None and (self.degree % 2 or not 2 <= self.degree):
            raise ConfigError(f"degree must be an even int >= 2, got {self.degree!r}")
        if not (isinstance(self.steps_per_block, int) and self.steps_per_block >= 1):
            raise ConfigError(f"steps_per_block must be an int >= 1, got {self.steps_per_block!r}")
        m = self.neighbourhood_size
        if self.threshold is None:
            object.__setattr__(self, "threshold", m // 2 + 1)
        if not (isinstance(self.threshold, int) and m < 2 * self.threshold <= 2 * m):
            raise ConfigError(
                f"threshold must be an int in [{m // 2 + 1}, {m}] (a strict majority of the "
                f"neighbourhood of {m}), got {self.threshold!r}"
            )
        # building the quantisers validates clip, scale and max_weight against wrap-around
        _ = (self.values, self.weights)

    @property
    def shares_needed(self) -> int:
        """The threshold as an int: `__post_init__` has replaced None by the smallest majority."""
        assert self.threshold is not None
        return self.threshold

    @property
    def certification_quorum(self) -> int:
        """Consistency signatures a survivor list needs: a strict majority of ALL session members.

        floor(n/2) + 1, whatever the graph: two different lists of one step would need more than n
        signers between them, and an honest client signs one list per step, so at most one list
        per step is ever certified. (The per-neighbourhood threshold t is too small for this under
        SecAgg+: disjoint groups of t clients could each certify a list of their own.)
        """
        return self.n_clients // 2 + 1

    @property
    def neighbourhood_size(self) -> int:
        """Holders of each client's shares: itself and its neighbours."""
        if self.graph == "complete":
            return self.n_clients
        k = default_degree(self.n_clients) if self.degree is None else self.degree
        return min(k, self.n_clients - 1) + 1

    @cached_property
    def values(self) -> FixedPoint:
        return FixedPoint(self.clip, self.n_clients, self.scale)

    @cached_property
    def weights(self) -> FixedPoint:
        return FixedPoint(self.max_weight, self.n_clients)

    @property
    def vector_length(self) -> int:
        """Aggregated uint32 coordinates: d values, the weight, the clipped-element count."""
        return self.dim + 2
