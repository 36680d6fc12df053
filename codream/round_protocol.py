"""What a coordinator round logic yields and receives, and the one loop every transport drives it by.

A round logic is a generator: it yields a `Broadcast` (one task for every live node, or for
the subset `to`: the round's sampled nodes) and receives the `Replies`; after each round it
yields a `RoundReport`. It never touches a network,
so the in-memory transport and the gRPC coordinator drive the very same object.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from codream.aggregation import AggregateSum
from codream.messages import Reply, Task, kind_of

# Who a strategy's broadcast is for in a sampled round (the round logic turns it into `to`):
WORK = "work"  # the round's training and every sum: the sampled nodes only
SHARE = "share"  # what the round learned (knowledge acquisition, new parameters), the warm-up
#                  and the evaluation: every live node or the sampled ones (`sampling_reach`)


@dataclass(frozen=True)
class Broadcast:
    """Send one task to every live node (or to `to`); a summed task's replies come back as one
    AggregateSum, summed among those nodes only (their own secure session)."""

    task: Task
    size: int = 0  # length of each summed vector
    audience: str = WORK
    to: tuple[str, ...] | None = None  # node ids; None: every live node (set by the round logic)

    @property
    def summed(self) -> bool:
        return kind_of(self.task).summed


@dataclass
class Replies:
    by_node: Mapping[str, Reply]
    total: AggregateSum | None = None
    traffic: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # node: (down, up) bytes


@dataclass(frozen=True)
class RoundReport:
    """Yielded after each round so drivers can show progress and write checkpoints."""

    round: int
    metrics: dict[str, Any]


Request = Broadcast | RoundReport
RoundLogic = Generator[Request, "Replies | None", None]
# A strategy's one round: yields Broadcasts, receives Replies, returns the round's extra metrics.
RoundSteps = Generator[Broadcast, Replies, dict[str, Any]]


def run_round_logic(
    rounds: RoundLogic,
    broadcast: Callable[[Broadcast], Replies],
    on_report: Callable[[RoundReport], None] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Every transport's loop: deliver each Broadcast, pass each RoundReport on. `check` runs
    before and after each delivery and may raise to abandon the run (a stopping service)."""
    check = check or (lambda: None)

    def advance(value: Replies | None) -> Request | None:
        try:
            return rounds.send(value)
        except StopIteration:
            return None

    request = advance(None)
    while request is not None:
        check()
        if isinstance(request, RoundReport):
            if on_report is not None:
                on_report(request)
            request = advance(None)
            continue
        replies = broadcast(request)
        check()
        request = advance(replies)


def required_sum(replies: Replies, task: Task) -> AggregateSum:
    """A sum the round cannot go on without (FedAvg's parameters): none at all is an error."""
    if replies.total is None or replies.total.weight <= 0:
        raise RuntimeError(f"{task.task_id}: no node contributed to the sum")
    return replies.total
