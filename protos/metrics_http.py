"""The Prometheus scrape endpoint both daemons serve: one private registry per process part.

Each service gets a registry of its own (not prometheus_client's global one), so that a
coordinator and nodes running in one interpreter, as in the tests, never mix their series.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


class MetricsEndpoint:
    """`GET /metrics` in the Prometheus text format on HOST:PORT (port 0: any free one)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
