"""`codream cluster`: a coordinator and N node processes on 127.0.0.1, with a progress bar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from codream.cli import preflight, run_directory
from codream.cli.parsing import add_command
from codream.cli.progress import progress_total, summary_line
from codream.cli.run_config import add_config_flags, config_flags, load_run_config
from codream.config import ConfigError, to_toml
from codream.html_report import write_report


def run_cluster(args: argparse.Namespace) -> int:
    # Deferred: the launcher writes credentials with the coordinator's security module, which
    # loads grpc, and `codream simulate` must not (its parser holds this subcommand too).
    from codream.cli.local_cluster import LocalCluster

    flags = config_flags(args)
    if flags["clients"] is not None and str(flags["clients"]).strip() != str(args.nodes):
        raise ConfigError(f"--clients: a cluster has one client per node process: give --nodes "
                          f"only (got --clients {flags['clients']} and --nodes {args.nodes})")
    flags["clients"] = args.nodes
    config = load_run_config(args.config, os.environ, flags, flag_names={"clients": "--nodes"},
                             check=preflight.check_run)
    preflight.check_device(args.node_device, "--node-device")
    run_dir = Path(config.out)
    run_directory.check_new_run(run_dir, args.force)  # a new cluster is a new run: its nodes too
    run_directory.clear(run_dir)
    run_directory.create(run_dir)
    config_file = run_dir / "cluster-config.toml"
    config_file.write_text(to_toml(config))
    cluster = LocalCluster(run_dir, args.nodes, ["--config", str(config_file)],
                           node_args=["--device", args.node_device], tls=args.tls,
                           log_json=args.log_json)
    bar = tqdm(total=progress_total(config), desc=f"{config.strategy} cluster, {args.nodes} nodes",
               unit="round", disable=args.no_progress)
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
    if cluster.gather_models() and (run_dir / "report.html").is_file():
        write_report(run_dir)  # again, so the page lists the nodes' models too
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
    if (run_dir / "models").is_dir():
        print(f"trained models: {run_dir / 'models'} (codream evaluate/predict MODEL, "
              f"codream.load_model(PATH) in Python)")
    return 0


def _show_progress(path: Path, bar: Any, seen: int) -> int:
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


def add_cluster_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "cluster", "a coordinator and N nodes as processes on 127.0.0.1")
    add_config_flags(parser)
    parser.add_argument("--nodes", type=int, default=4, metavar="N",
                        help="node processes (sets clients)")
    parser.add_argument("--node-device", default="auto", metavar="DEVICE",
                        help="auto | cpu | cuda | cuda:N for every node")
    parser.add_argument("--tls", action="store_true",
                        help="mTLS with a generated dev PKI; secure aggregation authenticated by "
                        "the identity keys the node certificates carry (mTLS-bound)")
    run_directory.add_force_flag(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_cluster)
    return parser
