"""The observer interface: what the daemon reports as it goes, for metrics and readiness."""

from __future__ import annotations

from protos.codream.v1 import codream_pb2 as pb


class NodeObserver:
    """What the daemon reports as it goes (metrics, readiness); this base class ignores it all."""

    def joined(self, round_index: int) -> None:
        """A membership began: joined, ready and heart-beating."""

    def left(self) -> None:
        """The membership ended (left, refused, or the link was lost)."""

    def task_done(self, task: pb.Task, result: pb.TaskResult, seconds: float) -> None:
        """A task was run; `result` is what the node hands in for it."""
