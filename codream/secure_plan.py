"""How a method-level sum becomes a secure-aggregation step, and its result a method-level sum.

Shared by the in-process secure summer (`codream simulate`) and the gRPC coordinator, so both
quantise the very same numbers: nodes send (w_k/W)·v_k and w_k/W with W the largest weight of
the session's members, which keeps every weight in [0, 1] and lets one clip per kind of value
bound every element. The fixed-point sum is exact, so both transports agree bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from codream.aggregation import AggregateSum, Contribution
from codream.config import SecureAggregationConfig
from codream.messages import Task, kind_of
from secagg import SecAggConfig, StepResult
from secagg.parameters import collusion_threshold, sparse_parameters

MIN_CONTRIBUTORS = 2  # a secure sum is released only when it hides each update among others


def fewest_members(settings: SecureAggregationConfig) -> int:
    """The smallest session worth running: 2, and c + 2 with `colluding_nodes` = c, since c
    accomplices subtract their own inputs from a sum of fewer honest members than 2."""
    return MIN_CONTRIBUTORS + settings.colluding_nodes


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
    log n, not n. An explicit `degree` or `threshold` overrides the computed one.
    `colluding_nodes` = c sizes SecAgg+ for an active coordinator with c accomplices (a larger
    degree, so that t >= floor((k + 1 + c)/2) + 1 stays within the surviving neighbours);
    `session_config` raises every graph's threshold to that bound."""
    threshold = settings.threshold or None
    degree = settings.degree or None
    if settings.graph != "auto":
        return settings.graph, degree if settings.graph == "secagg+" else None, threshold
    sparse = (sparse_parameters(n_clients, settings.corrupt_rate, settings.dropout_rate,
                                colluding=settings.colluding_nodes)
              if n_clients > settings.complete_up_to else None)
    if sparse is None:
        return "complete", None, threshold
    return "secagg+", degree or sparse.degree, threshold or (None if degree else sparse.threshold)


def session_config(settings: SecureAggregationConfig, n_clients: int, dim: int, clip: float
                   ) -> SecAggConfig:
    """The secagg config of a session of `n_clients`; with `colluding_nodes` = c the threshold
    is at least floor((m + c)/2) + 1 per neighbourhood of m (complete graph: floor((n + c)/2)
    + 1), so c accomplices of an active coordinator cannot hold t shares of both of an honest
    member's secrets. ValueError for fewer members than `fewest_members`."""
    if n_clients < fewest_members(settings):
        raise ValueError(f"a session of {n_clients} members is below the {fewest_members(settings)} "
                         f"that secagg.colluding_nodes = {settings.colluding_nodes} needs")
    graph, degree, threshold = session_graph(settings, n_clients)
    config = SecAggConfig(
        n_clients=n_clients,
        dim=dim,
        clip=clip,
        threshold=threshold,
        graph=graph,
        degree=degree,
        max_weight=1.0,
        steps_per_block=settings.steps_per_block,
    )
    needed = collusion_threshold(config.neighbourhood_size, settings.colluding_nodes)
    if settings.colluding_nodes and config.shares_needed < needed:
        config = dataclasses.replace(config, threshold=needed)
    return config


def colluding_tolerated(config: SecAggConfig) -> int:
    """The most members that can collude with an active coordinator while every input stays
    private (authenticated sessions, secagg/README.md): c < 2t - m, m the neighbourhood (the
    coordinator may place all of them in one), or c < 2q - n, q the certification quorum (two
    survivor lists cannot both be certified)."""
    return max(2 * config.shares_needed - config.neighbourhood_size,
               2 * config.certification_quorum - config.n_clients) - 1


def protocol_of(config: SecAggConfig) -> dict[str, object]:
    """What the round metrics record of a secure sum: the graph, a member's neighbours (degree),
    the shares that rebuild a secret (threshold) and the session's members; an authenticated
    session also the accomplices of an active coordinator it stays private against
    (`colluding_tolerated`; an unauthenticated one has no such bound)."""
    protocol: dict[str, object] = {"graph": config.graph, "degree": config.neighbourhood_size - 1,
                                   "threshold": config.shares_needed, "clients": config.n_clients}
    if config.authenticated:
        protocol["colluding_nodes"] = colluding_tolerated(config)
    return protocol


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
