"""`codream coordinator` and `codream cluster`: flags to settings, signals to a graceful stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

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


def settings_from_args(args: argparse.Namespace) -> Any:
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


def _cmd_coordinator(args: argparse.Namespace) -> int:
    from codream.cli import _flags, load_run_config
    from coordinator.network_transport import Stopped
    from coordinator.service import CoordinatorService

    config = load_run_config(args.config, os.environ, _flags(args))
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


def add_coordinator_command(commands: Any, add_config_flags: Any) -> None:
    parser = commands.add_parser("coordinator", help="serve a federation: nodes dial in")
    add_config_flags(parser)
    add_serving_flags(parser)
    parser.set_defaults(func=_cmd_coordinator)


def _cmd_cluster(args: argparse.Namespace) -> int:
    import json
    import shutil
    from pathlib import Path

    from tqdm import tqdm

    from codream.cli import _flags, load_run_config, summary_line
    from codream.config import to_toml
    from coordinator.local_cluster import LocalCluster

    flags = _flags(args)
    flags["clients"] = args.nodes
    config = load_run_config(args.config, os.environ, flags)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "progress.jsonl").unlink(missing_ok=True)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # a new cluster is a new run
    shutil.rmtree(run_dir / "state", ignore_errors=True)  # and its nodes start afresh
    config_file = run_dir / "cluster-config.toml"
    config_file.write_text(to_toml(config))
    cluster = LocalCluster(run_dir, args.nodes, ["--config", str(config_file)],
                           node_args=["--device", args.node_device], tls=args.tls,
                           log_json=args.log_json)
    total = config.rounds + (0 if config.strategy == "fedavg" else 1)
    bar = tqdm(total=total, desc=f"{config.strategy} cluster, {args.nodes} nodes", unit="round",
               disable=args.no_progress)
    seen = 0
    try:
        cluster.start()
        print(f"coordinator on 127.0.0.1:{cluster.port} (health {cluster.health_port}); "
              f"logs in {cluster.logs}", file=sys.stderr)
        coordinator = cluster.processes["coordinator"]
        while coordinator.poll() is None:
            seen = _show_progress(run_dir / "progress.jsonl", bar, seen)
            try:
                coordinator.wait(0.5)
            except Exception:  # noqa: BLE001 — still running
                pass
            crashed = [n for n in cluster.node_ids if cluster.processes[n].poll() not in (None, 0)]
            if crashed:
                print(f"node(s) {', '.join(crashed)} exited with errors; see {cluster.logs}",
                      file=sys.stderr)
        _show_progress(run_dir / "progress.jsonl", bar, seen)
        bar.close()
        codes = cluster.wait_all(30.0)
    finally:
        cluster.stop()
    print("exit codes: " + ", ".join(f"{k} {v}" for k, v in codes.items()))
    metrics_file = run_dir / "metrics.json"
    if codes.get("coordinator") != 0 or not metrics_file.is_file():
        print(f"the run did not finish; see {cluster.logs}", file=sys.stderr)
        return 1
    summary = json.loads(metrics_file.read_text()).get("summary", {})
    secure = "on" if config.secagg.enabled else "off"
    print(summary_line(f"{config.strategy} on a {args.nodes}-node cluster (secure aggregation {secure})",
                       summary))
    print(f"wall {summary.get('wall_seconds', 0):.1f} s; run directory: {run_dir}")
    return 0


def _show_progress(path: Any, bar: Any, seen: int) -> int:
    import json

    if not path.is_file():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        entry = json.loads(line)
        postfix = {"acc": f"{entry['mean_client_accuracy']:.3f}"}
        if entry.get("server_accuracy") is not None:
            postfix["server"] = f"{entry['server_accuracy']:.3f}"
        bar.set_postfix(postfix)
        bar.update(1)
    return len(lines)


def add_cluster_command(commands: Any, add_config_flags: Any) -> None:
    parser = commands.add_parser("cluster", help="a coordinator and N nodes as processes on 127.0.0.1")
    add_config_flags(parser)
    parser.add_argument("--nodes", type=int, default=4, help="node processes (sets clients)")
    parser.add_argument("--node-device", default="auto", help="auto | cpu | cuda for every node")
    parser.add_argument("--tls", action="store_true", help="mTLS with a generated dev PKI")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_cmd_cluster)
