"""The in-memory transport: delivers the coordinator's broadcasts to node objects in one process.

It is the reference the gRPC transport must agree with; it also counts the bytes each node
would send and receive, so communication is reported the same way for both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from codream.aggregation import Contribution, PlainSummer, Summer
from codream.messages import Reply, Task, payload_bytes
from codream.round_protocol import Replies, run_round_logic


class TaskHandler(Protocol):
    node_id: str

    def handle(self, task: Task) -> Reply: ...


def drive(
    rounds: Any,
    nodes: Mapping[str, TaskHandler],
    summer: Summer | None = None,
    on_report: Callable[[Any], None] | None = None,
) -> None:
    """Runs a round-logic generator to completion against in-process nodes."""
    summer = summer or PlainSummer()

    def broadcast(request: Any) -> Any:
        task = request.task
        down = payload_bytes(task)
        to = None if request.to is None else set(request.to)  # a sampled round's nodes
        by_node = {node_id: node.handle(task) for node_id, node in nodes.items()
                   if to is None or node_id in to}
        traffic = {node_id: (down, payload_bytes(reply)) for node_id, reply in by_node.items()}
        total = None
        if request.summed:
            contributions = {k: r for k, r in by_node.items() if isinstance(r, Contribution)}
            members = None if request.to is None else list(by_node)
            total = summer.sum(contributions, request.size, task, members)
            skipped = {k: getattr(r, "reason", "no contribution")
                       for k, r in by_node.items() if not isinstance(r, Contribution)}
            if skipped:
                total = dataclasses.replace(total, excluded={**total.excluded, **skipped})
        return Replies(by_node, total, traffic)

    run_round_logic(rounds, broadcast, on_report)
