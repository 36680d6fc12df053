"""`codream coordinator`: serving flags to CoordinatorSettings; signals to a graceful stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from codream.cli.run_config import add_config_flags, config_flags, load_run_config

if TYPE_CHECKING:
    from coordinator.service import CoordinatorSettings

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
DEFAULT_HEALTH_PORT = 50052
DEFAULT_METRICS_PORT = 9090


def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: any free one)")
    parser.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT,
                        help="plaintext gRPC health port (0: any free one)")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                        help="Prometheus /metrics over HTTP (0: any free one)")
    parser.add_argument("--no-metrics", action="store_true", help="serve no metrics endpoint")
    parser.add_argument("--node-ids", help="comma-separated roster (default node-0..node-{clients-1})")
    parser.add_argument("--min-nodes", type=int, default=0, help="start with this many ready (0: all)")
    parser.add_argument("--join-timeout", type=float, default=600.0)
    parser.add_argument("--task-timeout", type=float, default=900.0)
    parser.add_argument("--step-timeout", type=float, default=300.0)
    parser.add_argument("--secagg-timeout", type=float, default=60.0)
    parser.add_argument("--rejoin-wait", type=float, default=0.0,
                        help="at each round's start, wait this long for absent nodes to rejoin")
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0)
    parser.add_argument("--liveness-seconds", type=float, default=30.0)
    parser.add_argument("--grace-seconds", type=float, default=10.0)
    parser.add_argument("--max-message-mb", type=int, default=256)
    parser.add_argument("--tokens-file", help="TOML [tokens] node id = secret (bearer credentials)")
    parser.add_argument("--tls-cert", help="server certificate (PEM)")
    parser.add_argument("--tls-key", help="server private key (PEM)")
    parser.add_argument("--tls-client-ca", help="CA for node certificates: turns on mTLS")
    parser.add_argument("--ready-file", help="write the bound ports here (JSON) once serving")
    parser.add_argument("--after-run", choices=("exit", "serve"), default="exit",
                        help="serve: once the run is complete keep serving health and metrics (and "
                             "refuse joins) until SIGTERM, as a long-running Kubernetes pod must")


def settings_from_args(args: argparse.Namespace) -> CoordinatorSettings:
    # Deferred: the coordinator's modules load grpc, which `codream simulate` must not (the
    # parser that simulate builds holds this subcommand too).
    from coordinator.network_transport import Timeouts
    from coordinator.security import ServerSecurity, load_tokens
    from coordinator.service import CoordinatorSettings

    tokens = load_tokens(args.tokens_file) if args.tokens_file else {}
    security = ServerSecurity(args.tls_cert, args.tls_key, args.tls_client_ca, tokens)
    node_ids = tuple(n.strip() for n in (args.node_ids or "").split(",") if n.strip())
    return CoordinatorSettings(
        host=args.host, port=args.port, health_port=args.health_port,
        metrics_port=None if args.no_metrics else args.metrics_port, node_ids=node_ids,
        min_nodes=args.min_nodes, join_timeout=args.join_timeout,
        timeouts=Timeouts(args.task_timeout, args.step_timeout, args.secagg_timeout, args.rejoin_wait),
        security=security, max_message_bytes=args.max_message_mb * 2**20,
        heartbeat_seconds=args.heartbeat_seconds, liveness_seconds=args.liveness_seconds,
        grace_seconds=args.grace_seconds, ready_file=args.ready_file,
    )


def run_coordinator(args: argparse.Namespace) -> int:
    # Deferred: grpc, which `codream simulate` must not load (see settings_from_args).
    from coordinator.network_transport import Stopped
    from coordinator.service import CoordinatorService

    config = load_run_config(args.config, os.environ, config_flags(args))
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"codream coordinator: {error}", file=sys.stderr)
        return 2
    service = CoordinatorService(config, settings)

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping gracefully", signum)
        threading.Thread(target=service.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    try:
        summary = service.run()
    except Stopped as error:
        log.warning("%s", error)
        service.stop()  # wait for it here: interpreter exit joins the server's worker threads
        return 0
    except TimeoutError as error:
        log.error("%s", error)
        service.stop(0)
        return 1
    except Exception:
        log.exception("the run failed")
        service.stop(0)
        return 1
    print(f"{config.strategy} over gRPC: final mean client accuracy "
          f"{summary.get('final_mean_client_accuracy', float('nan')):.4f}", flush=True)
    if args.after_run == "serve":
        service.hold()
        service.stopping.wait()
    service.stop()
    return 0


def add_coordinator_command(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("coordinator", help="serve a federation: nodes dial in")
    add_config_flags(parser)
    add_serving_flags(parser)
    parser.set_defaults(func=run_coordinator)
    return parser
