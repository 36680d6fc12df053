"""What the coordinator tells Prometheus about a run: rounds, phases, participation, traffic.

Fed by the transport (one observation per broadcast phase and per wire message) and by the
service (one per completed round); it holds no run state of its own, so a restarted coordinator
simply starts its counters again, as Prometheus expects of a restarted process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from codream.messages import kind_of

_ROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_CLIENT_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


def phase_name(task: Any) -> str:
    """A task's phase label: its wire field (DreamStep → dream_step, FedAvgTrain → fedavg_train)."""
    return kind_of(task).wire_field


class CoordinatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rounds = Counter("codream_rounds_completed_total", "Rounds completed (and checkpointed).",
                              registry=r)
        self.last_round = Gauge("codream_round", "Index of the last completed round.", registry=r)
        self.round_seconds = Histogram("codream_round_duration_seconds", "Wall time of a whole round.",
                                       buckets=_ROUND_BUCKETS, registry=r)
        self.phase_seconds = Histogram(
            "codream_phase_duration_seconds",
            "Wall time of one broadcast phase (a dream step, soft labels, local training...).",
            ("phase",), buckets=_PHASE_BUCKETS, registry=r)
        self.clients_per_step = Histogram(
            "codream_clients_per_step", "Nodes whose contribution entered a summed step.",
            ("phase",), buckets=_CLIENT_BUCKETS, registry=r)
        self.last_clients = Gauge("codream_last_step_clients",
                                  "Nodes whose contribution entered the latest summed step.",
                                  ("phase",), registry=r)
        self.dropouts = Counter(
            "codream_dropouts_total",
            "Nodes left out of a phase: silent past the deadline, skipped, refused or dropped out of "
            "a secure step (one count per node per phase).", ("phase",), registry=r)
        self.bytes_in = Counter("codream_received_bytes_total",
                                "Serialized task-result bytes received from a node.", ("node",),
                                registry=r)
        self.bytes_out = Counter("codream_sent_bytes_total", "Serialized task bytes sent to a node.",
                                 ("node",), registry=r)
        self.client_accuracy = Gauge("codream_client_accuracy",
                                     "A node's test accuracy at the last completed round.", ("node",),
                                     registry=r)
        self.mean_accuracy = Gauge("codream_mean_client_accuracy",
                                   "Mean test accuracy of the nodes at the last completed round.",
                                   registry=r)
        self.server_accuracy = Gauge("codream_server_accuracy",
                                     "Test accuracy of the server model trained on dreams only.",
                                     registry=r)
        self.secure_sessions = Counter("codream_secure_sessions_total",
                                       "Secure-aggregation sessions (key agreements) started.",
                                       registry=r)
        self.clipped = Counter("codream_clipped_elements_total",
                               "Values clipped to the fixed-point range before secure summing.",
                               registry=r)
        self.participants = Gauge("codream_round_participants",
                                  "Nodes sampled for the last completed round (clients_per_round; "
                                  "every live node when sampling is off).", registry=r)
        self.secure_degree = Gauge("codream_secure_degree",
                                   "Neighbours per node in the last round's secure sessions (n - 1 "
                                   "on the complete graph, k under SecAgg+).", registry=r)
        self._secure_seen = (0, 0)

    def track_members(self, live: Callable[[], Iterable[Any]], roster: int) -> None:
        """Live members are counted when scraped, so the gauge is never stale."""
        Gauge("codream_members", "Nodes currently joined and heart-beating.", registry=self.registry
              ).set_function(lambda: float(len(list(live()))))
        Gauge("codream_roster_nodes", "Nodes on the roster.", registry=self.registry).set(roster)

    # ---- fed by the transport ----------------------------------------------------------------
    def phase(self, phase: str, seconds: float, contributors: int | None, dropped: int) -> None:
        self.phase_seconds.labels(phase).observe(seconds)
        if contributors is not None:
            self.clients_per_step.labels(phase).observe(contributors)
            self.last_clients.labels(phase).set(contributors)
        if dropped:
            self.dropouts.labels(phase).inc(dropped)

    def wire(self, node: str, sent: int, received: int) -> None:
        if sent:
            self.bytes_out.labels(node).inc(sent)
        if received:
            self.bytes_in.labels(node).inc(received)

    def secure_totals(self, sessions: int, clipped: int) -> None:
        """The secure rounds keep running totals; the counters take the difference."""
        seen_sessions, seen_clipped = self._secure_seen
        self.secure_sessions.inc(max(0, sessions - seen_sessions))
        self.clipped.inc(max(0, clipped - seen_clipped))
        self._secure_seen = (max(sessions, seen_sessions), max(clipped, seen_clipped))

    # ---- fed by the service ----------------------------------------------------------------
    def round_completed(self, round_index: int, metrics: Mapping[str, Any]) -> None:
        self.rounds.inc()
        self.last_round.set(round_index)
        self.round_seconds.observe(float(metrics.get("seconds", 0.0)))
        for node, values in metrics.get("clients", {}).items():
            self.client_accuracy.labels(node).set(values["accuracy"])
        self.mean_accuracy.set(metrics.get("mean_client_accuracy", float("nan")))
        self.participants.set(len(metrics.get("participants", metrics.get("clients", {}))))
        sessions = metrics.get("secure_graph") or []
        if sessions:
            self.secure_degree.set(max(int(s["degree"]) for s in sessions))
        if metrics.get("server_accuracy") is not None:
            self.server_accuracy.set(metrics["server_accuracy"])
