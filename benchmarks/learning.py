"""Learning benchmark: CoDream against Centralized, Independent and FedAvg on MNIST-5k, K = 4.

Prints one table (mean ± std of client test accuracy over seeds, bytes per client per round,
wall time) and writes it, with every setting used, to benchmarks/results/learning.json.

    .venv/bin/python benchmarks/learning.py                 # the committed table (CPU, ~40 min)
    .venv/bin/python benchmarks/learning.py --profile smoke # a 2-minute check of the script
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Settings shared by every method, so the comparison changes one thing at a time.
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "mnist", "clients": 4, "seeds": [0, 1], "partitions": ["iid", "dirichlet:0.5"],
        "baseline_epochs": 20, "warmup_epochs": 10, "rounds": 8,
        "dream": {"batch_size": 256, "global_steps": 50, "diversity": 5.0},
        "distill": {"epochs": 2, "kd_weight": 3.0, "buffer_batches": 8, "soft_labels": "class_counts"},
        "server_model": {"steps": 600},
        "hetero_models": "cnn,vgg,resnet8,mlp",
    },
    "smoke": {
        "dataset": "digits", "clients": 4, "seeds": [0], "partitions": ["dirichlet:0.5"],
        "baseline_epochs": 4, "warmup_epochs": 3, "rounds": 1,
        "dream": {"batch_size": 64, "global_steps": 5, "diversity": 5.0},
        "distill": {"epochs": 1},
        "server_model": {"steps": 50},
        "hetero_models": "cnn,vgg,resnet8,mlp",
    },
}
PROFILES["gpu"] = {**PROFILES["cpu"], "rounds": 20, "device": "cuda",
                   "dream": {**PROFILES["cpu"]["dream"], "batch_size": 512}}

METHODS = ("centralized", "independent", "fedavg", "codream", "codream_hetero")


def method_config(method: str, partition: str, seed: int, profile: dict[str, Any]) -> dict[str, Any]:
    """The RunConfig fields (dotted) for one method; baselines get the same local-data epochs."""
    common = {"dataset": profile["dataset"], "clients": profile["clients"], "partition": partition,
              "seed": seed, "models": "cnn", "device": profile.get("device", "cpu"),
              "out": "unused"}
    epochs = profile["baseline_epochs"]
    if method in ("centralized", "independent"):
        return {**common, "strategy": method, "warmup_epochs": epochs, "rounds": 0}
    if method == "fedavg":
        return {**common, "strategy": "fedavg", "rounds": epochs, "local_epochs": 1}
    flat = {**common, "strategy": "codream", "warmup_epochs": profile["warmup_epochs"],
            "rounds": profile["rounds"], "local_epochs": 0}
    for section in ("dream", "distill", "server_model"):
        flat.update({f"{section}.{k}": v for k, v in profile[section].items()})
    if method == "codream_hetero":
        flat["models"] = profile["hetero_models"]
    return flat


def run_one(job: tuple[str, str, int, dict[str, Any], int]) -> dict[str, Any]:
    method, partition, seed, profile, threads = job
    import torch

    from codream.config import RunConfig, build, dotted
    from codream.simulation import simulate

    torch.set_num_threads(threads)
    config = build(RunConfig, dotted(method_config(method, partition, seed, profile)))
    started = time.perf_counter()
    result = simulate(config, None)
    summary = result.summary
    out = {
        "method": method, "partition": partition, "seed": seed,
        "mean_client_accuracy": summary["final_mean_client_accuracy"],
        "client_accuracy": summary["final_client_accuracy"],
        "bytes_sent_per_client_per_round": summary["bytes_sent_per_client_per_round"],
        "bytes_received_per_client_per_round": summary["bytes_received_per_client_per_round"],
        "wall_seconds": time.perf_counter() - started,
        "curve": [m["mean_client_accuracy"] for m in result.history],
    }
    if "final_server_accuracy" in summary:
        out["server_accuracy"] = summary["final_server_accuracy"]
        out["server_curve"] = [m.get("server_accuracy") for m in result.history]
    print(f"  {method:15s} {partition:14s} seed {seed}: {out['mean_client_accuracy']:.4f}"
          + (f" (server {out['server_accuracy']:.4f})" if "server_accuracy" in out else "")
          + f"  {out['wall_seconds']:.0f}s", flush=True)
    return out


def summarise(runs: list[dict[str, Any]], partitions: list[str]) -> list[dict[str, Any]]:
    rows = []
    for partition in partitions:
        for method in (*METHODS, "server_model"):
            key = "server_accuracy" if method == "server_model" else "mean_client_accuracy"
            source = "codream" if method == "server_model" else method
            chosen = [r for r in runs if r["method"] == source and r["partition"] == partition]
            values = [100 * r[key] for r in chosen if key in r]
            if not values:
                continue
            rows.append({
                "partition": partition, "method": method,
                "accuracy_mean": statistics.fmean(values),
                "accuracy_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                "bytes_per_client_per_round": statistics.fmean(
                    r["bytes_sent_per_client_per_round"] + r["bytes_received_per_client_per_round"]
                    for r in chosen),
                "wall_seconds": statistics.fmean(r["wall_seconds"] for r in chosen),
                "seeds": len(values),
            })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'partition':14s} {'method':16s} {'accuracy %':>14s} {'bytes/client/round':>19s} "
          f"{'wall s':>7s}")
    for row in rows:
        print(f"{row['partition']:14s} {row['method']:16s} "
              f"{row['accuracy_mean']:7.2f} ± {row['accuracy_std']:4.2f} "
              f"{row['bytes_per_client_per_round']:19,.0f} {row['wall_seconds']:7.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs in parallel (each single-threaded unless --jobs 1)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
    jobs = [(m, p, s, profile, threads) for p in profile["partitions"] for s in profile["seeds"]
            for m in METHODS]
    # Longest first, so parallel workers finish together.
    jobs.sort(key=lambda j: j[0].startswith("codream"), reverse=True)
    started = time.perf_counter()
    print(f"{len(jobs)} runs, {args.jobs} at a time, profile {args.profile}", flush=True)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.map(run_one, jobs, chunksize=1)
    else:
        runs = [run_one(job) for job in jobs]
    total = time.perf_counter() - started
    rows = summarise(runs, profile["partitions"])
    print_table(rows)
    print(f"\ntotal wall time {total:.0f} s")
    suffix = "" if args.profile == "cpu" else f"_{args.profile}"
    out = Path(args.out or Path(__file__).parent / "results" / f"learning{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "profile": args.profile, "settings": profile,
        "method_configs": {m: method_config(m, "<partition>", 0, profile) for m in METHODS},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "total_wall_seconds": total, "table": rows, "runs": runs,
    }, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
