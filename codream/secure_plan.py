"""How a method-level sum becomes a secure-aggregation step, and its result a method-level sum.

Shared by the in-process secure summer (`codream simulate`) and the gRPC coordinator, so both
quantise the very same numbers: nodes send (w_k/W)·v_k and w_k/W with W the largest weight of
the session's members, which keeps every weight in [0, 1] and lets one clip per kind of value
bound every element. The fixed-point sum is exact, so both transports agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from codream.aggregation import AggregateSum, Contribution
from codream.config import SecureAggregationConfig
from codream.messages import Task, kind_of
from secagg import SecAggConfig, StepResult
from secagg.parameters import sparse_parameters

MIN_CONTRIBUTORS = 2  # a secure sum is released only when it hides each update among others


def clip_for(task: Task, settings: SecureAggregationConfig) -> float:
    """The bound on |(w/W)·v| that the task's declaration names."""
    clip = kind_of(task).clip
    if clip is None:
        raise TypeError(f"{type(task).__name__} is not a summed task")
    return float(getattr(settings, clip))


def weight_unit(weights: Iterable[float]) -> float:
    """W: the largest member weight (every node's w/W then lies in [0, 1])."""
    return max([float(w) for w in weights if w > 0], default=1.0)


def session_graph(settings: SecureAggregationConfig, n_clients: int
                  ) -> tuple[str, int | None, int | None]:
    """The graph, degree and threshold of a session of `n_clients` (None: the library's default).

    `graph = "auto"`: the complete graph up to `complete_up_to` members (a deterministic
    collusion bound, and cheap while n is small; in a small session the fractions Bell et al.'s
    analysis assumes round to a handful of clients, none below 20 members at 5%), above it
    SecAgg+ with the degree and threshold Bell et al.'s bounds give
    for `corrupt_rate` and `dropout_rate` (`secagg.parameters`): a node's cost then grows with
    log n, not n. An explicit `degree` or `threshold` overrides the computed one."""
    threshold = settings.threshold or None
    degree = settings.degree or None
    if settings.graph != "auto":
        return settings.graph, degree if settings.graph == "secagg+" else None, threshold
    sparse = (sparse_parameters(n_clients, settings.corrupt_rate, settings.dropout_rate)
              if n_clients > settings.complete_up_to else None)
    if sparse is None:
        return "complete", None, threshold
    return "secagg+", degree or sparse.degree, threshold or (None if degree else sparse.threshold)


def session_config(settings: SecureAggregationConfig, n_clients: int, dim: int, clip: float
                   ) -> SecAggConfig:
    graph, degree, threshold = session_graph(settings, n_clients)
    return SecAggConfig(
        n_clients=n_clients,
        dim=dim,
        clip=clip,
        threshold=threshold,
        graph=graph,
        degree=degree,
        max_weight=1.0,
        steps_per_block=settings.steps_per_block,
    )


def protocol_of(config: SecAggConfig) -> dict[str, object]:
    """What the round metrics record of a secure sum: the graph, a member's neighbours (degree),
    the shares that rebuild a secret (threshold) and the session's members."""
    return {"graph": config.graph, "degree": config.neighbourhood_size - 1,
            "threshold": config.shares_needed, "clients": config.n_clients}


def scaled_input(contribution: Contribution | None, dim: int, unit: float) -> tuple[np.ndarray, float]:
    """What a node masks: (w/W)·v as float64 and w/W; zeros and 0 when it has nothing to add."""
    if contribution is None:
        return np.zeros(dim, dtype=np.float64), 0.0
    values = np.asarray(contribution.weighted_values, dtype=np.float64) / unit
    return values, min(1.0, contribution.weight / unit)


def to_aggregate(
    result: StepResult,
    unit: float,
    members: Sequence[str],
    skipped: Mapping[str, str],
    failed: Mapping[str, str] | None = None,
    protocol: Mapping[str, object] | None = None,
) -> AggregateSum:
    """Back to Σ w_k·v_k and Σ w_k; who dropped or declined is listed with why; `protocol`
    (`protocol_of`) says how the sum was made."""
    protocol = dict(protocol or {})
    excluded = dict(failed or {})
    for index in result.dropped:
        excluded.setdefault(members[index], "dropped out of the secure step (recovered)")
    contributors = []
    for index in result.survivors:
        node = members[index]
        if node in skipped:
            excluded[node] = skipped[node]
        else:
            contributors.append(node)
    if len(contributors) < MIN_CONTRIBUTORS:
        # a "sum" of one node's update is that update: release nothing
        for node in contributors:
            excluded[node] = f"fewer than {MIN_CONTRIBUTORS} contributors: nothing released"
        return AggregateSum(np.zeros_like(result.total), 0.0, (), excluded, protocol)
    return AggregateSum(result.total * unit, result.weight * unit, tuple(contributors), excluded,
                        protocol)
