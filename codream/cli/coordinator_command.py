"""`codream coordinator`: serving flags to CoordinatorSettings; signals to a graceful stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codream.cli import preflight, run_directory
from codream.cli.parsing import add_command
from codream.cli.run_config import add_config_flags, config_flags, load_run_config
from codream.config import ConfigError, RunConfig

if TYPE_CHECKING:
    from coordinator.service import CoordinatorSettings

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
DEFAULT_HEALTH_PORT = 50052
DEFAULT_METRICS_PORT = 9090
# ServerSecurity's fields as the flags that set them, for its messages.
_SECURITY_FLAGS = {"client_ca_file": "--tls-client-ca", "cert_file": "--tls-cert",
                   "key_file": "--tls-key", "tokens": "--tokens-file"}


def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: any free one)")
    parser.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT,
                        help="plaintext gRPC health port (0: any free one)")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                        help="Prometheus /metrics over HTTP (0: any free one)")
    parser.add_argument("--no-metrics", action="store_true", help="serve no metrics endpoint")
    parser.add_argument("--node-ids", metavar="IDS",
                        help="comma-separated roster, one id per client (default: node-0 .. "
                             "node-{clients-1})")
    parser.add_argument("--min-nodes", type=int, default=0, metavar="N",
                        help="start once this many nodes are ready (0: all)")
    parser.add_argument("--join-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="seconds to wait for the nodes to join before giving up")
    parser.add_argument("--task-timeout", type=float, default=900.0, metavar="SECONDS",
                        help="seconds a node may take for one task (training, distilling)")
    parser.add_argument("--step-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="seconds a node may take for one dream or soft-label step")
    parser.add_argument("--secagg-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="seconds per secure-aggregation phase (keys, shares, unmasking)")
    parser.add_argument("--rejoin-wait", type=float, default=0.0, metavar="SECONDS",
                        help="at each round's start, seconds to wait for absent nodes to rejoin")
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0, metavar="SECONDS",
                        help="seconds between a node's heartbeats")
    parser.add_argument("--liveness-seconds", type=float, default=30.0, metavar="SECONDS",
                        help="a node silent this many seconds has left")
    parser.add_argument("--grace-seconds", type=float, default=10.0, metavar="SECONDS",
                        help="on SIGTERM, seconds in-flight calls get to finish")
    parser.add_argument("--max-message-mb", type=int, default=256, metavar="MIB",
                        help="largest gRPC message, in MiB (2^20 bytes)")
    parser.add_argument("--tokens-file", metavar="FILE",
                        help="TOML [tokens] node id = secret (bearer credentials)")
    parser.add_argument("--identities", metavar="TOML",
                        help="[identities] node id = hex raw Ed25519 public key, every roster node's: "
                             "turns on authenticated secure aggregation (relayed to the nodes, who "
                             "check it against their own --peer-identities)")
    parser.add_argument("--tls-cert", metavar="PEM", help="server certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="server private key")
    parser.add_argument("--tls-client-ca", metavar="PEM",
                        help="CA for node certificates: turns on mTLS")
    parser.add_argument("--ready-file", metavar="FILE",
                        help="write the bound ports here (JSON) once serving")
    parser.add_argument("--after-run", choices=("exit", "serve"), default="exit",
                        help="serve: once the run is complete keep serving health and metrics (and "
                             "refuse joins) until SIGTERM, as a long-running Kubernetes pod must")


def _check_serving_flags(args: argparse.Namespace, clients: int) -> tuple[str, ...]:
    """The roster; ConfigError naming the flag at fault for anything the service would refuse."""
    for flag, port in (("--port", args.port), ("--health-port", args.health_port),
                       ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{flag}: must be in [0, 65535], got {port}")
    for flag, seconds in (("--join-timeout", args.join_timeout), ("--task-timeout", args.task_timeout),
                          ("--step-timeout", args.step_timeout),
                          ("--secagg-timeout", args.secagg_timeout),
                          ("--heartbeat-seconds", args.heartbeat_seconds),
                          ("--liveness-seconds", args.liveness_seconds)):
        if not seconds > 0:
            raise ConfigError(f"{flag}: must be > 0 seconds, got {seconds:g}")
    for flag, seconds in (("--rejoin-wait", args.rejoin_wait), ("--grace-seconds", args.grace_seconds)):
        if not seconds >= 0:
            raise ConfigError(f"{flag}: must be >= 0 seconds, got {seconds:g}")
    if args.max_message_mb <= 0:
        raise ConfigError(f"--max-message-mb: must be > 0, got {args.max_message_mb}")
    node_ids = tuple(n.strip() for n in (args.node_ids or "").split(",") if n.strip())
    if node_ids and len(node_ids) != clients:
        raise ConfigError(f"--node-ids: names {len(node_ids)} nodes but the run has {clients} "
                          f"clients (--clients); give one id per client")
    if len(set(node_ids)) != len(node_ids):
        raise ConfigError(f"--node-ids: names a node twice in {','.join(node_ids)}")
    if not 0 <= args.min_nodes <= clients:
        raise ConfigError(f"--min-nodes: must be in [0, {clients}] (0: all clients), "
                          f"got {args.min_nodes}")
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                       ("--tls-client-ca", args.tls_client_ca), ("--tokens-file", args.tokens_file)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag}: no such file {path}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert/--tls-key: give both (the server's certificate and its "
                          "private key) for TLS, or neither for plaintext")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise ConfigError("--tls-client-ca: mTLS needs --tls-cert and --tls-key too")
    return node_ids


def settings_from_args(args: argparse.Namespace, clients: int) -> CoordinatorSettings:
    """CoordinatorSettings from the serving flags; ConfigError names the flag at fault
    (`clients`: the run's, to check --node-ids and --min-nodes against)."""
    # Deferred: the coordinator's modules load grpc, which `codream simulate` must not (the
    # parser that simulate builds holds this subcommand too).
    from coordinator.network_transport import Timeouts
    from coordinator.security import ServerSecurity, load_tokens
    from coordinator.service import CoordinatorSettings

    node_ids = _check_serving_flags(args, clients)
    identities = read_identities(getattr(args, "identities", None),
                                 node_ids or tuple(f"node-{i}" for i in range(clients)))
    try:
        tokens = load_tokens(args.tokens_file) if args.tokens_file else {}
    except ValueError as error:
        raise ConfigError(f"--tokens-file: {error}") from error
    try:
        security = ServerSecurity(args.tls_cert, args.tls_key, args.tls_client_ca, tokens)
    except ValueError as error:
        message = str(error)
        for field, flag in _SECURITY_FLAGS.items():
            message = message.replace(f"ServerSecurity.{field}", flag).replace(field, flag)
        raise ConfigError(message) from error
    return CoordinatorSettings(
        host=args.host, port=args.port, health_port=args.health_port,
        metrics_port=None if args.no_metrics else args.metrics_port, node_ids=node_ids,
        min_nodes=args.min_nodes, join_timeout=args.join_timeout,
        timeouts=Timeouts(args.task_timeout, args.step_timeout, args.secagg_timeout, args.rejoin_wait),
        security=security, max_message_bytes=args.max_message_mb * 2**20,
        heartbeat_seconds=args.heartbeat_seconds, liveness_seconds=args.liveness_seconds,
        grace_seconds=args.grace_seconds, ready_file=args.ready_file, identities=identities,
    )


def read_identities(path: str | None, roster: Sequence[str]) -> dict[str, bytes]:
    """--identities: a key for every roster node (else a session would fall back to
    unauthenticated, which pinned nodes refuse); ConfigError names the flag."""
    from codream.cli.identities import load_roster

    if path is None:
        return {}
    try:
        identities = load_roster(path)
    except ValueError as error:
        raise ConfigError(f"--identities: {error}") from None
    missing = [node for node in roster if node not in identities]
    if missing:
        raise ConfigError(f"--identities {path}: no key for {', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''} (every roster node needs one)")
    return {node: identities[node] for node in roster}


def check_authentication(config: RunConfig, identities: Mapping[str, bytes],
                         client_ca: str | None) -> None:
    """secagg.authentication = "required" needs a source of identity keys: --identities, or mTLS
    (--tls-client-ca), whose node certificates may carry them; ConfigError names the setting."""
    secagg = config.secagg
    if secagg.enabled and secagg.authentication == "required" and not identities and not client_ca:
        raise ConfigError('secagg.authentication = "required": the coordinator has no identity '
                          "keys to relay; give --identities, or mTLS (--tls-client-ca) with node "
                          "certificates that carry identity keys (`codream certs` writes them)")


def prepare_run_directory(config: RunConfig, force: bool) -> None:
    """--out: resume its checkpoint (refused, naming the fields, if it is another run's);
    outputs without a checkpoint are refused; --force starts afresh."""
    from coordinator.checkpoint import CheckpointMismatch, config_fingerprint, load_checkpoint

    run_dir = Path(config.out)
    run_directory.check_resumable(run_dir, force)
    if force:
        run_directory.clear(run_dir, run_directory.COORDINATOR_ENTRIES)
    try:
        load_checkpoint(run_dir / run_directory.CHECKPOINT, config_fingerprint(config))
    except CheckpointMismatch as error:
        raise ConfigError(f"--out {run_dir}: {error}, or add --force to start afresh") from error
    run_directory.create(run_dir)


def run_coordinator(args: argparse.Namespace) -> int:
    # Deferred: grpc, which `codream simulate` must not load (see settings_from_args).
    from coordinator.network_transport import Stopped
    from coordinator.service import CoordinatorService

    config = load_run_config(args.config, os.environ, config_flags(args), check=preflight.check_run)
    settings = settings_from_args(args, config.clients)
    check_authentication(config, settings.identities, args.tls_client_ca)
    prepare_run_directory(config, args.force)
    service = CoordinatorService(config, settings)

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping gracefully", signum)
        threading.Thread(target=service.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service.start()
    except (OSError, RuntimeError) as error:  # a port taken or not bindable: say which flags
        service.stop(0)
        raise ConfigError(f"--host/--port/--health-port/--metrics-port: cannot serve on "
                          f"{settings.host}: {error}") from error
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
    log.info("the run is complete: %s", config.out)
    print(f"{config.strategy} over gRPC: final mean client accuracy "
          f"{summary.get('final_mean_client_accuracy', float('nan')):.4f}", flush=True)
    if args.after_run == "serve":
        service.hold()
        service.stopping.wait()
    service.stop()
    return 0


def add_coordinator_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "coordinator", "serve a federation: nodes dial in")
    add_config_flags(parser)
    add_serving_flags(parser)
    run_directory.add_force_flag(parser, "start afresh: delete what an earlier run wrote in --out "
                                         "(its checkpoint too) instead of resuming it")
    parser.set_defaults(func=run_coordinator)
    return parser
