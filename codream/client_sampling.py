"""Which nodes take part in a round: one seeded draw from the live nodes, shared by every transport.

Why a module of its own: `codream simulate` and a gRPC cluster must pick the very same clients
for a round (their results agree bit for bit), so the draw depends only on the run seed, the
round and the live nodes in roster order, and it is made in this one place (the round logic
calls it once per round; strategies never sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_SALT = 0x5A3D_C11E  # keeps this generator's stream apart from every other seeded one of a run


def samples_every_node(clients_per_round: float) -> bool:
    """0 and 1.0 mean "every live node": no sampling."""
    return clients_per_round == 0 or clients_per_round == 1.0


def sample_size(live: int, clients_per_round: float, min_clients: int) -> int:
    """How many of `live` nodes a round takes: a fraction (rounded up) or a count, at least
    `min_clients`, never more than there are."""
    if samples_every_node(clients_per_round):
        return live
    wanted = (math.ceil(clients_per_round * live) if clients_per_round < 1
              else int(clients_per_round))
    return min(live, max(wanted, min_clients))


def draw_participants(live: Sequence[str], seed: int, round_index: int, clients_per_round: float,
                      min_clients: int) -> tuple[str, ...]:
    """The round's participants, in the order of `live` (roster order). Every live node when
    sampling is off, or when the sample would take them all anyway."""
    k = sample_size(len(live), clients_per_round, min_clients)
    if k >= len(live):
        return tuple(live)
    rng = np.random.default_rng([seed % 2**63, round_index, _SALT])
    chosen = np.sort(rng.choice(len(live), size=k, replace=False))
    return tuple(live[int(i)] for i in chosen)
