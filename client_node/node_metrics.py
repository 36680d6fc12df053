"""What a node tells Prometheus: membership, tasks by kind, their durations, bytes, accuracy.

An observer of the daemon, so the daemon itself knows nothing of Prometheus; readiness (the
health service's membership status) hangs off the same join/leave events.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from client_node.node_observer import NodeObserver
from protos.codream.v1 import codream_pb2 as pb

_TASK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class NodeMetrics(NodeObserver):
    def __init__(self, registry: CollectorRegistry | None = None,
                 on_membership: Callable[[bool], None] | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._on_membership = on_membership or (lambda joined: None)
        r = self.registry
        self.member = Gauge("codream_node_joined", "1 while joined to the coordinator, else 0.",
                            registry=r)
        self.joins = Counter("codream_node_joins_total", "Memberships begun (first join and re-joins).",
                             registry=r)
        self.tasks = Counter("codream_node_tasks_total", "Tasks run, by task kind and what was handed in.",
                             ("kind", "result"), registry=r)
        self.task_seconds = Histogram("codream_node_task_duration_seconds",
                                      "Compute time of one task on this node.", ("kind",),
                                      buckets=_TASK_BUCKETS, registry=r)
        self.bytes_in = Counter("codream_node_received_bytes_total",
                                "Serialized task bytes received from the coordinator.", registry=r)
        self.bytes_out = Counter("codream_node_sent_bytes_total",
                                 "Serialized result bytes handed to the coordinator.", registry=r)
        self.round = Gauge("codream_node_round", "Round of the latest task.", registry=r)
        self.accuracy = Gauge("codream_node_accuracy",
                              "This node's model's test accuracy at its latest evaluation.", registry=r)
        self.loss = Gauge("codream_node_loss", "This node's model's test loss at its latest evaluation.",
                          registry=r)

    def joined(self, round_index: int) -> None:
        self.joins.inc()
        self.member.set(1)
        self._on_membership(True)

    def left(self) -> None:
        self.member.set(0)
        self._on_membership(False)

    def task_done(self, task: pb.Task, result: pb.TaskResult, seconds: float) -> None:
        kind = task.WhichOneof("body") or "none"
        self.tasks.labels(kind, result.WhichOneof("body") or "none").inc()
        self.task_seconds.labels(kind).observe(seconds)
        self.bytes_in.inc(task.ByteSize())
        self.bytes_out.inc(result.ByteSize())
        self.round.set(task.round)
        if result.WhichOneof("body") == "eval_report":
            self.accuracy.set(result.eval_report.accuracy)
            self.loss.set(result.eval_report.loss)
