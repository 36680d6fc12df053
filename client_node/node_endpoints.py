"""What a node serves, although it never serves the federation: health and metrics.

Kubernetes needs something to probe: a plaintext gRPC health service where "" is SERVING for
as long as the daemon runs (liveness: restart a wedged process) and `MEMBERSHIP_SERVICE` is
SERVING only while the node is joined (readiness: `kubectl get pods` shows nodes that cannot
reach the coordinator). Metrics go out over HTTP for Prometheus.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from client_node.connection import connect
from client_node.daemon import NodeDaemon
from client_node.node_metrics import NodeMetrics
from client_node.node_options import NodeOptions
from client_node.used_sessions import open_used_sessions
from protos.grpc_metrics import ClientMetricsInterceptor
from protos.metrics_http import MetricsEndpoint

log = logging.getLogger(__name__)

MEMBERSHIP_SERVICE = "codream.node.Membership"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class NodeEndpoints:
    """Health on `health_port` and metrics on `metrics_port` (0: any free one; None: off)."""

    def __init__(self, host: str, health_port: int | None, metrics_port: int | None,
                 registry: CollectorRegistry) -> None:
        self.health = health.HealthServicer()
        self.health_server: grpc.Server | None = None
        self.health_port = self.metrics_port = 0
        self.metrics: MetricsEndpoint | None = None
        if health_port is not None:
            self.health_server = grpc.server(futures.ThreadPoolExecutor(2))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{host}:{health_port}")
            if not self.health_port:
                raise OSError(f"could not bind the health port {host}:{health_port}")
            self.health.set("", _SERVING)
            self.health.set(MEMBERSHIP_SERVICE, _NOT_SERVING)
            self.health_server.start()
        if metrics_port is not None:
            try:
                self.metrics = MetricsEndpoint(registry, host, metrics_port)
            except OSError:
                self.close()
                raise
            self.metrics_port = self.metrics.port
        log.info("node endpoints on %s: health %s, metrics %s", host, self.health_port or "off",
                 self.metrics_port or "off")

    def set_member(self, joined: bool) -> None:
        self.health.set(MEMBERSHIP_SERVICE, _SERVING if joined else _NOT_SERVING)

    def close(self) -> None:
        self.health.enter_graceful_shutdown()
        if self.health_server is not None:
            self.health_server.stop(0)
            self.health_server = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None


def observed_daemon(options: NodeOptions, stop: threading.Event, host: str, health_port: int | None,
                    metrics_port: int | None) -> tuple[NodeDaemon, NodeEndpoints]:
    """A daemon wired to its endpoints: node metrics, gRPC call counts, membership readiness.
    The caller runs the daemon and closes the endpoints after it. The node's record of begun
    secure sessions is read first (UsedSessionsError if unreadable), before any port opens."""
    used_sessions = open_used_sessions(options)
    registry = CollectorRegistry()
    endpoints = NodeEndpoints(host, health_port, metrics_port, registry)
    calls = ClientMetricsInterceptor(registry)
    daemon = NodeDaemon(options, stop, connect=lambda o: connect(o, interceptors=(calls,)),
                        observer=NodeMetrics(registry, on_membership=endpoints.set_member),
                        used_sessions=used_sessions)
    return daemon, endpoints
