"""Masking neighbourhood graphs: complete (SecAgg) and random k-regular Harary (SecAgg+).

SecAgg+ (Bell et al., CCS 2020) replaces the complete graph by a random k-regular graph with
k = O(log n): the Harary graph H(k, n) (node i joined to i +- 1 .. i +- k/2 mod n) under a
uniformly random relabelling of the nodes. Each client masks with and shares its secrets among
its k neighbours (plus itself), so client cost is O(k) instead of O(n).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from secagg.errors import ConfigError


def default_degree(n_clients: int) -> int:
    """Even k ~ 3 log2 n (Bell et al.'s O(log n)), capped by n - 1."""
    if n_clients <= 1:
        return 0
    return min(2 * math.ceil(1.5 * math.log2(n_clients)), n_clients - 1)


def complete_graph(ids: Sequence[int]) -> dict[int, frozenset[int]]:
    """Every client neighbours every other client."""
    everyone = frozenset(ids)
    return {i: everyone - {i} for i in ids}


def harary_graph(ids: Sequence[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Random k-regular graph: Harary H(k, n) over a permutation of `ids` drawn from `seed`.

    For even k every node has exactly k neighbours; odd k is refused. Everyone who knows
    `seed` (a public session value) computes the same graph.
    """
    n = len(ids)
    if len(set(ids)) != n:
        raise ConfigError("client ids must be distinct")
    if degree % 2 or not 0 <= degree <= n - 1:
        raise ConfigError(f"degree must be even and in [0, {n - 1}], got {degree}")
    rng = random.Random(hashlib.sha256(b"codream/secagg/v1/graph" + seed).digest())
    order = sorted(ids)
    rng.shuffle(order)
    neighbours: dict[int, set[int]] = {i: set() for i in ids}
    for pos, node in enumerate(order):
        for offset in range(1, degree // 2 + 1):
            other = order[(pos + offset) % n]
            neighbours[node].add(other)
            neighbours[other].add(node)
    return {i: frozenset(v) for i, v in neighbours.items()}


def build_graph(kind: str, ids: Sequence[int], degree: int | None, seed: bytes) -> dict[int, frozenset[int]]:
    """Neighbour sets of `kind` "complete" or "secagg+"."""
    if kind == "complete":
        return complete_graph(ids)
    if kind == "secagg+":
        k = default_degree(len(ids)) if degree is None else degree
        if k >= len(ids) - 1:  # the k-regular graph on so few nodes is the complete graph
            return complete_graph(ids)
        return harary_graph(ids, k, seed)
    raise ConfigError(f"graph must be 'complete' or 'secagg+', got {kind!r}")
