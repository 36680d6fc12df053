"""`codream coordinator`: the gRPC server, health and reflection, and the run it orchestrates.

Serving: the Coordinator service (TLS/mTLS or plaintext) with reflection on the main port,
the standard health service on a plaintext port of its own (for Kubernetes probes) and
Prometheus metrics over HTTP on a third (run progress and gRPC call counts). Running:
wait for the nodes, resume from the checkpoint if there is one, drive the round logic over the
network, checkpoint after every round, write the run directory, tell the nodes to stop.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from codream.atomic_files import atomic_write_text
from codream.config import RunConfig, to_toml
from codream.data import load_dataset
from codream.devices import resolve_device
from codream.node_build import client_partitions
from codream.round_logic import build_coordinator
from codream.round_protocol import RoundReport
from codream.run_outputs import final_summary, partition_summary, write_run_outputs
from coordinator.checkpoint import config_fingerprint, load_checkpoint, save_checkpoint
from coordinator.data_fit import DataShape, FederationData
from coordinator.dispatch import Dispatcher
from coordinator.encoded_tasks import add_coordinator_to_server
from coordinator.federation import Federation
from coordinator.identity_book import IdentityBook
from coordinator.membership import Membership
from coordinator.network_transport import NetworkTransport, Stopped, Timeouts
from coordinator.run_metrics import CoordinatorMetrics
from coordinator.security import ServerSecurity, server_credentials
from coordinator.servicer import Admission, CoordinatorServicer
from protos.channel_options import server_options
from protos.codream.v1 import codream_pb2 as pb
from protos.grpc_metrics import ServerMetricsInterceptor
from protos.metrics_http import MetricsEndpoint

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name  # codream.v1.Coordinator
SPARE_WORKERS = 16  # threads beyond the members' budget: quick and refused calls
QUEUED_CALLS = 1024  # calls waiting for a thread before the core refuses more
HANDLER_DRAIN_SECONDS = 10.0  # for handlers still running once the server has stopped


@dataclass(frozen=True)
class CoordinatorSettings:
    """How the coordinator serves (the computation itself is the RunConfig)."""

    host: str = "0.0.0.0"
    port: int = 50051
    health_port: int = 50052
    metrics_port: int | None = None  # Prometheus /metrics over HTTP (0: any free port); None: off
    node_ids: tuple[str, ...] = ()  # the roster; empty: node-0 .. node-{clients-1}
    min_nodes: int = 0  # 0: every node on the roster
    join_timeout: float = 600.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    security: ServerSecurity = field(default_factory=ServerSecurity)
    max_message_bytes: int = 256 * 2**20
    keepalive_seconds: float = 30.0
    heartbeat_seconds: float = 2.0
    liveness_seconds: float = 30.0
    grace_seconds: float = 10.0
    workers: int = 0  # 0: enough for every roster node's budget of open calls, and some
    calls_per_node: int = 6  # calls one node id may hold open at once (a member needs 2)
    concurrent_joins: int = 8  # Join calls in progress at once
    ready_file: str | None = None  # JSON with the bound ports, written once serving
    # node id -> raw Ed25519 identity public key; a key for every member: authenticated secagg
    identities: Mapping[str, bytes] = field(default_factory=dict)


def run_data_shape(config: RunConfig) -> DataShape:
    """The federation's data shape: the run's data set's, which the coordinator loads anyway (the
    partition summary, the server model's test split; cached, so `run` does not read it again).
    `start` sets it before serving, so nodes are checked against it from the first Ready on
    (`coordinator.data_fit`)."""
    dataset = load_dataset(config.dataset)
    return DataShape(dataset.input_shape, dataset.num_classes)


class CoordinatorService:
    def __init__(self, config: RunConfig, settings: CoordinatorSettings):
        self.config = config
        self.settings = settings
        roster = settings.node_ids or tuple(f"node-{i}" for i in range(config.clients))
        if len(roster) != config.clients:
            raise ValueError(f"the roster names {len(roster)} nodes but clients = {config.clients}")
        self.run_dir = Path(config.out)
        self.run_id = secrets.token_hex(8)
        self.membership = Membership(roster, liveness_seconds=settings.liveness_seconds)
        self.dispatcher = Dispatcher(self.membership, self.run_id)
        self.federation = Federation(self.membership, self.dispatcher, to_toml(config),
                                     settings.heartbeat_seconds)
        self.health = health.HealthServicer()
        self.metrics = CoordinatorMetrics()
        self.metrics.track_members(self.membership.live, len(roster))
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.stopping = threading.Event()
        self.server: grpc.Server | None = None
        self.health_server: grpc.Server | None = None
        self.port = self.health_port = self.metrics_port = 0

    # ---- serving --------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        roster = self.membership.node_ids
        # before any node can call: every Ready is checked against the run's data set
        self.federation.data = FederationData(run_data_shape(self.config))
        # Admission authenticates every call before its handler runs and caps each node id's
        # open calls, so the long-held ones (polls, heartbeats) never exceed `held`: those
        # threads are always there for members. Refused and quick calls share the spare
        # threads and queue briefly; the core's cap only bounds that queue (a flood beyond it
        # is RESOURCE_EXHAUSTED, which a node backs off from without leaving).
        held = s.calls_per_node * len(roster)
        workers = s.workers or held + SPARE_WORKERS
        self.admission = Admission(s.security, roster, s.calls_per_node, s.concurrent_joins)
        options = server_options(s.max_message_bytes, s.keepalive_seconds)
        self._workers = futures.ThreadPoolExecutor(workers, thread_name_prefix="rpc")
        self.server = grpc.server(self._workers,
                                  options=options, maximum_concurrent_rpcs=workers + QUEUED_CALLS,
                                  interceptors=[ServerMetricsInterceptor(self.metrics.registry),
                                                self.admission])
        # the pinned roster, and the identity certificates nodes present under mTLS
        self.identities = IdentityBook(s.identities)
        servicer = CoordinatorServicer(self.federation, s.security, idle_seconds=s.liveness_seconds,
                                       identities=self.identities)
        add_coordinator_to_server(servicer, self.server)  # tasks go out as encoded once
        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        credentials = server_credentials(s.security)
        address = f"{s.host}:{s.port}"
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))
        self.health_server = grpc.server(futures.ThreadPoolExecutor(2))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.health_port = self.health_server.add_insecure_port(f"{s.host}:{s.health_port}")
        if not self.port or not self.health_port:
            raise OSError(f"could not bind {address} or health port {s.health_port}")
        if s.metrics_port is not None:
            self.metrics_endpoint = MetricsEndpoint(self.metrics.registry, s.host, s.metrics_port)
            self.metrics_port = self.metrics_endpoint.port
        self.server.start()
        self.health_server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("coordinator %s serving on %s:%d (health on %d, metrics on %s)", self.run_id, s.host,
                 self.port, self.health_port, self.metrics_port or "none")
        if s.ready_file:
            atomic_write_text(Path(s.ready_file), json.dumps(
                {"port": self.port, "health_port": self.health_port, "metrics_port": self.metrics_port,
                 "pid": os.getpid(), "run_id": self.run_id}))

    def hold(self) -> None:
        """After a finished run: keep health and metrics up (results stay scrapable and the pod
        stays Ready), refuse joins with the reason, until stop() (SIGTERM)."""
        self.federation.closed_reason = f"run {self.run_id} is complete; nothing to join"
        self.federation.accepting = False
        log.info("the run is complete; serving health and metrics until stopped")

    def stop(self, grace: float | None = None) -> None:
        """Graceful: NOT_SERVING first, no new joins, in-flight calls get `grace` seconds."""
        grace = self.settings.grace_seconds if grace is None else grace
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        self.federation.accepting = False
        self.dispatcher.stop()
        if self.server is not None:
            self.server.stop(grace).wait()
            self._drain_handlers()
        if self.health_server is not None:
            self.health_server.stop(0)
        if self.metrics_endpoint is not None:  # last: the final counts stay scrapable until here
            self.metrics_endpoint.close()
            self.metrics_endpoint = None

    def _drain_handlers(self) -> None:
        """Waits for the handlers still running after the server stopped (their calls are
        cancelled, but a heartbeat's end still retires its membership and logs that), then
        ends the worker threads, so no thread of this service outlives `stop`."""
        if not self.admission.wait_idle(HANDLER_DRAIN_SECONDS):
            log.warning("%s call handler(s) still running %.0f s after the server stopped",
                        sum(self.admission.open_calls().values()), HANDLER_DRAIN_SECONDS)
        self._workers.shutdown(wait=False, cancel_futures=True)

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        config = self.config
        torch.set_num_threads(config.threads)  # part of the run: the same bits as simulate
        torch.manual_seed(config.seed)
        dataset = load_dataset(config.dataset)
        logic = build_coordinator(config, dataset, resolve_device(config.device))
        checkpoint = self.run_dir / "checkpoint.pt"
        fingerprint = config_fingerprint(config)
        state = load_checkpoint(checkpoint, fingerprint)
        if state is not None:
            logic.load_state_dict(state)
            log.info("resumed from %s: next round %d", checkpoint, logic.next_round)
        if logic.next_round <= config.rounds:  # a finished run (a restarted pod) needs no nodes
            self._wait_for_nodes()
        transport = NetworkTransport(config, self.membership, self.dispatcher, self.settings.timeouts,
                                     self.metrics, identities=self.identities)
        progress = self.run_dir / "progress.jsonl"

        def on_report(report: RoundReport) -> None:
            metrics = report.metrics
            if transport.secure is not None:
                metrics["secure_sessions"] = transport.secure.sessions_started
                metrics["clipped_elements"] = transport.secure.clipped
            metrics["wire_bytes"] = {node: {"sent_to": a, "received_from": b}
                                     for node, (a, b) in sorted(transport.wire_bytes.items())}
            save_checkpoint(checkpoint, logic, fingerprint)
            self.metrics.round_completed(report.round, metrics)
            with progress.open("a") as stream:
                stream.write(json.dumps({"round": report.round,
                                         "mean_client_accuracy": metrics["mean_client_accuracy"],
                                         "server_accuracy": metrics.get("server_accuracy")}) + "\n")

        self.run_dir.mkdir(parents=True, exist_ok=True)
        transport.drive(logic.run(transport.live_nodes), on_report, self.stopping)
        summary: dict[str, Any] = {"strategy": config.strategy, "dataset": config.dataset,
                                   "transport": "grpc", "secure_aggregation": config.secagg.enabled,
                                   "coordinator_run": self.run_id}
        summary.update(partition_summary(config, dataset, client_partitions(config, dataset)))
        summary.update(final_summary(logic.history))
        summary["wall_seconds"] = time.perf_counter() - started
        write_run_outputs(self.run_dir, config, dataset, logic.history, summary, logic)
        self._shut_down_nodes()
        return summary

    def _wait_for_nodes(self) -> None:
        needed = self.settings.min_nodes or len(self.membership.node_ids)
        present = self.membership.wait_for(needed, self.settings.join_timeout, self.stopping)
        if self.stopping.is_set():
            raise Stopped("stopped while waiting for nodes to join")
        if len(present) < needed:
            raise TimeoutError(f"{len(present)} of {needed} nodes ready after "
                               f"{self.settings.join_timeout:.0f} s")

    def _shut_down_nodes(self) -> None:
        self.membership.expect_departures()  # nodes leaving now is the normal end, not a warning
        members = self.membership.live()
        entries = [self.dispatcher.post(m, pb.Task(task_id="shutdown", shutdown=pb.Shutdown(
            reason="the run is complete")), lambda result: True) for m in members]
        # Nodes acknowledge by leaving (their heartbeat ends); give them a moment to pull it.
        self.dispatcher.gather(entries, 5.0)
