"""Learning benchmark: CoDream against Centralized, Independent and FedAvg on MNIST-5k, K = 4.

Three tables from one command, every run in the same process pool on the same machine:
- the main table: mean ± std of client test accuracy over seeds (Dirichlet(0.5): 3 seeds,
  IID: 2), bytes per client per round and wall time, for each method, with Independent also on
  the heterogeneous architectures (the fair baseline for heterogeneous CoDream);
- the ablation (seed 0, Dirichlet(0.5), one and four architectures): one row per technique
  switched against the chosen defaults;
- the communication frontier: global steps S and local steps M against the server model's
  accuracy (dream quality) and bytes.
It writes benchmarks/results/learning{_profile}.json (with the command and every setting) and
the per-round curves of every method as learning{_profile}_curves.png beside it.

    .venv/bin/python benchmarks/learning.py                 # the tables (CPU, 53 min on 2 cores as set now)
    .venv/bin/python benchmarks/learning.py --profile smoke # a one-minute check of the script
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HETERO = "cnn,vgg,resnet8,mlp"
# The baselines train locally with plain CE (FedAvg with the balanced loss: 92.8 against 94.2,
# seed 0); Independent also runs with CoDream's logit-adjusted local loss (`_balanced` rows).
COMMON: dict[str, Any] = {}
CODREAM = {
    "warmup_epochs": 10, "rounds": 3, "local_epochs": 0, "train.local_loss": "balanced",
    "dream.batch_size": 256, "dream.global_steps": 12, "dream.batches_per_round": 2,
    "dream.update_norm": "rms", "dream.bn_reduction": "mean", "dream.warm_start": True,
    "distill.epochs": 10, "distill.lr": 0.05, "distill.local_loss": "balanced",
    "server_model.steps": 600,
}
# M = 3 local Adam steps per global step: FedAdam, against DistAdam's M = 1 (the frontier)
FEDADAM = {"dream.local_steps": 3, "dream.local_optimizer": "adam", "dream.local_lr": 0.1}
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "mnist", "clients": 4, "seeds": {"dirichlet:0.5": [0, 1, 2], "iid": [0, 1]},
        "baseline_epochs": 20, "common": COMMON, "codream": CODREAM, "hetero_models": HETERO,
        "ablation": {"partition": "dirichlet:0.5", "seed": 0, "rows": {
            "plain CE warm-up (train.local_loss = ce)": {"train.local_loss": "ce"},
            "fresh dreams every round (dream.warm_start = false)": {"dream.warm_start": False},
        }},
        "frontier": {"partition": "dirichlet:0.5", "seed": 0, "rows": {
            "2 batches of S=7, M=1 (DistAdam)": {"dream.global_steps": 7},
            "2 batches of S=7, M=3 (FedAdam, local Adam)": {**FEDADAM, "dream.global_steps": 7},
            "2 batches of S=5, M=3 (FedAdam)": {**FEDADAM, "dream.global_steps": 5},
            "the same with B=240 (under 18 MB)": {**FEDADAM, "dream.global_steps": 5,
                                                  "dream.batch_size": 240},
        }},
    },
    "smoke": {
        "dataset": "digits", "clients": 4, "seeds": {"dirichlet:0.5": [0]},
        "baseline_epochs": 4, "common": COMMON,
        "codream": {**CODREAM, "warmup_epochs": 3, "rounds": 1, "dream.batch_size": 64,
                    "dream.global_steps": 5, "distill.epochs": 1, "server_model.steps": 50},
        "hetero_models": HETERO,
        "ablation": {"partition": "dirichlet:0.5", "seed": 0,
                     "rows": {"no update balancing": {"dream.update_norm": "none"}}},
        "frontier": {"partition": "dirichlet:0.5", "seed": 0,
                     "rows": {"S=2, M=2": {"dream.global_steps": 2, "dream.local_steps": 2}}},
    },
}
PROFILES["gpu"] = {**copy.deepcopy(PROFILES["cpu"]), "device": "cuda",
                   "codream": {**CODREAM, "rounds": 20, "dream.batch_size": 512}}

METHODS = ("centralized", "independent", "independent_hetero", "independent_balanced",
           "independent_balanced_hetero", "fedavg", "codream", "codream_hetero")


def method_config(method: str, partition: str, seed: int, profile: dict[str, Any],
                  variant: dict[str, Any] | None = None) -> dict[str, Any]:
    """The RunConfig fields (dotted) of one run; baselines get the same local-data epochs."""
    flat = {"dataset": profile["dataset"], "clients": profile["clients"], "partition": partition,
            "seed": seed, "models": "cnn", "device": profile.get("device", "cpu"), "out": "unused",
            **profile["common"]}
    epochs = profile["baseline_epochs"]
    if method.startswith(("centralized", "independent")):
        flat.update(strategy=method.split("_")[0], warmup_epochs=epochs, rounds=0)
        if "_balanced" in method:  # Independent with CoDream's logit-adjusted local loss
            flat["train.local_loss"] = "balanced"
    elif method == "fedavg":
        flat.update(strategy="fedavg", rounds=epochs, local_epochs=1)
    else:
        flat.update(strategy="codream", **profile["codream"])
    if method.endswith("_hetero"):
        flat["models"] = profile["hetero_models"]
    flat.update(variant or {})
    return flat


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from codream.config import RunConfig, build, dotted
    from codream.simulation import simulate

    torch.set_num_threads(job["threads"])
    config = build(RunConfig, dotted(job["config"]))
    started = time.perf_counter()
    result = simulate(config, None)
    summary = result.summary
    out = {
        "table": job["table"], "row": job["row"], "method": job["method"],
        "partition": config.partition, "seed": config.seed,
        "mean_client_accuracy": summary["final_mean_client_accuracy"],
        "client_accuracy": summary["final_client_accuracy"],
        "bytes_per_client_per_round": summary["bytes_sent_per_client_per_round"]
        + summary["bytes_received_per_client_per_round"],
        "wall_seconds": time.perf_counter() - started,
        "curve": [m["mean_client_accuracy"] for m in result.history],
        "client_curves": {node: [m["clients"][node]["accuracy"] for m in result.history]
                          for node in result.history[-1]["clients"]},
    }
    if "final_server_accuracy" in summary:
        out["server_accuracy"] = summary["final_server_accuracy"]
        out["server_curve"] = [m.get("server_accuracy") for m in result.history]
    print(f"  {job['table']:9s} {job['row'][:34]:34s} {job['method']:18s} {config.partition:13s} "
          f"seed {config.seed}: {out['mean_client_accuracy']:.4f}"
          + (f" (server {out['server_accuracy']:.4f})" if "server_accuracy" in out else "")
          + f"  {out['wall_seconds']:.0f}s", flush=True)
    return out


def jobs_for(profile: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    jobs = []

    def add(table: str, row: str, method: str, partition: str, seed: int,
            variant: dict[str, Any] | None = None) -> None:
        jobs.append({"table": table, "row": row, "method": method, "threads": threads,
                     "config": method_config(method, partition, seed, profile, variant)})

    for partition, seeds in profile["seeds"].items():
        for seed in seeds:
            for method in METHODS:
                add("main", method, method, partition, seed)
    for table in ("ablation", "frontier"):
        spec = profile[table]
        for row, variant in spec["rows"].items():
            for method in ("codream", "codream_hetero") if table == "ablation" else ("codream",):
                add(table, row, method, spec["partition"], spec["seed"], variant)
    # Longest first, so parallel workers finish together.
    jobs.sort(key=lambda j: (j["method"].startswith("codream"), j["method"].endswith("hetero")),
              reverse=True)
    return jobs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def main_table(runs: list[dict[str, Any]], profile: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    main = [r for r in runs if r["table"] == "main"]
    for partition in profile["seeds"]:
        for method in (*METHODS, "server_model", "server_model_hetero"):
            source = method.replace("server_model", "codream")
            key = "server_accuracy" if method.startswith("server_model") else "mean_client_accuracy"
            chosen = [r for r in main if r["method"] == source and r["partition"] == partition]
            values = [100 * r[key] for r in chosen if key in r]
            if not values:
                continue
            mean, std = _mean_std(values)
            rows.append({
                "partition": partition, "method": method, "accuracy_mean": mean, "accuracy_std": std,
                "bytes_per_client_per_round": statistics.fmean(
                    r["bytes_per_client_per_round"] for r in chosen),
                "wall_seconds": statistics.fmean(r["wall_seconds"] for r in chosen),
                "seeds": len(values),
            })
    return rows


def variant_table(runs: list[dict[str, Any]], profile: dict[str, Any], table: str
                  ) -> list[dict[str, Any]]:
    """One row per variant, beside the chosen defaults on the same partition and seed."""
    spec = profile[table]
    base = {r["method"]: r for r in runs if r["table"] == "main" and r["partition"] == spec["partition"]
            and r["seed"] == spec["seed"]}
    rows = []
    for row in ("chosen defaults", *spec["rows"]):
        found = base if row == "chosen defaults" else {
            r["method"]: r for r in runs if r["table"] == table and r["row"] == row}
        entry: dict[str, Any] = {"row": row}
        for method, run in sorted(found.items()):
            if method not in ("codream", "codream_hetero"):
                continue
            entry[method] = 100 * run["mean_client_accuracy"]
            entry[method.replace("codream", "server")] = 100 * run.get("server_accuracy", float("nan"))
            entry[f"{method}_bytes"] = run["bytes_per_client_per_round"]
        rows.append(entry)
    return rows


def print_tables(table: list[dict[str, Any]], ablation: list[dict[str, Any]],
                 frontier: list[dict[str, Any]]) -> None:
    print(f"\n{'partition':14s} {'method':20s} {'accuracy %':>14s} {'MB/client/round':>16s} "
          f"{'wall s':>7s}")
    for row in table:
        print(f"{row['partition']:14s} {row['method']:20s} "
              f"{row['accuracy_mean']:7.2f} ± {row['accuracy_std']:4.2f} "
              f"{row['bytes_per_client_per_round'] / 1e6:16.2f} {row['wall_seconds']:7.0f}")
    for name, rows in (("ablation", ablation), ("frontier", frontier)):
        print(f"\n{name:40s} {'codream':>8s} {'server':>7s} {'hetero':>7s} {'server':>7s} {'MB':>7s}")
        for r in rows:
            print(f"{r['row'][:40]:40s} {r.get('codream', float('nan')):8.2f} "
                  f"{r.get('server', float('nan')):7.2f} {r.get('codream_hetero', float('nan')):7.2f} "
                  f"{r.get('server_hetero', float('nan')):7.2f} "
                  f"{r.get('codream_bytes', float('nan')) / 1e6:7.2f}")


def plot_curves(runs: list[dict[str, Any]], profile: dict[str, Any], path: Path) -> None:
    """Mean client accuracy per round of every method (mean over seeds), one panel a partition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    partitions = list(profile["seeds"])
    fig, axes = plt.subplots(1, len(partitions), figsize=(6 * len(partitions), 4.2), squeeze=False)
    main = [r for r in runs if r["table"] == "main"]
    names = (*METHODS, "server_model", "server_model_hetero")
    for ax, partition in zip(axes[0], partitions, strict=True):
        for method in names:
            source = method.replace("server_model", "codream")
            key = "server_curve" if method.startswith("server_model") else "curve"
            curves = [r[key] for r in main if r["method"] == source and r["partition"] == partition
                      and key in r]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean = [statistics.fmean(c[i] for c in curves if c[i] is not None) if any(
                c[i] is not None for c in curves) else float("nan") for i in range(length)]
            first = 1 if source == "fedavg" else 0
            rounds = list(range(first, first + length))
            style = "--" if method.startswith("server_model") else "-"
            color = f"C{names.index(method)}"
            if length == 1:  # a baseline trained in one go: its final accuracy as a level
                ax.axhline(100 * mean[0], linestyle=":", linewidth=1.2, label=f"{method} (final)",
                           color=color)
            else:
                ax.plot(rounds, [100 * v for v in mean], style, marker="o", markersize=3,
                        label=method, color=color)
        ax.set_title(f"{profile['dataset']}, K = {profile['clients']}, {partition}")
        ax.set_xlabel("round")
        ax.set_ylabel("mean client test accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs in parallel (each single-threaded unless --jobs 1)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
    jobs = jobs_for(profile, threads)
    started = time.perf_counter()
    print(f"{len(jobs)} runs, {args.jobs} at a time, profile {args.profile}", flush=True)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.map(run_one, jobs, chunksize=1)
    else:
        runs = [run_one(job) for job in jobs]
    total = time.perf_counter() - started
    table = main_table(runs, profile)
    ablation = variant_table(runs, profile, "ablation")
    frontier = variant_table(runs, profile, "frontier")
    print_tables(table, ablation, frontier)
    print(f"\ntotal wall time {total:.0f} s")
    suffix = "" if args.profile == "cpu" else f"_{args.profile}"
    out = Path(args.out or Path(__file__).parent / "results" / f"learning{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    curves = out.with_name(out.stem + "_curves.png")
    plot_curves(runs, profile, curves)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "profile": args.profile, "settings": profile, "threads_per_run": threads,
        "method_configs": {m: method_config(m, "<partition>", 0, profile) for m in METHODS},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "total_wall_seconds": total, "table": table, "ablation": ablation, "frontier": frontier,
        "curves_png": curves.name, "runs": runs,
    }, indent=2))
    print(f"wrote {out} and {curves.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
