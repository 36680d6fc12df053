"""Load benchmark: one secure digits-size dream step over gRPC at n = 16 … 512 nodes, SecAgg+.

For each configuration it starts a real CoordinatorService (127.0.0.1, port 0) in this process
and n real NodeDaemons (real node logic: data partition, model, dream step) as threads in a few
worker processes (`benchmarks/rounds.py`'s `node_worker`), and times `--steps` secure
DreamSteps (one secagg block: its key set-up falls in the first step) broadcast through
`NetworkTransport` under SecAgg+ (`secagg.graph = "auto"`, switch-over forced to 8 members,
so every session uses Bell et al.'s degree and threshold). A `S/n` configuration samples S
of the n nodes (`Broadcast.to`, drawn by `codream.client_sampling` as a round would): only they
compute and sum, the others idle in their long polls. Then, with the gRPC side shut down, it
builds the same nodes in process and times the same step there, plain (Σ handle + PlainSummer:
the bare step) and secure (+ InProcessSecureSummer: what `codream simulate` does, a whole
session per sum).

Reported per configuration: wall seconds per step (amortised over the block, the first step's
set-up included; also the median steady step), the coordinator's CPU seconds per step (its
process, a fresh one per configuration, while only it and the driver run there), its RSS
(VmRSS / VmHWM, before any in-process node exists), bytes per participating node per step
(protobuf sizes: its masked upload, and everything up and down with the secagg rounds and
set-up), the session's graph, degree and
threshold, and the ratios of the gRPC step to the in-process ones. Like with like, as in
rounds.py: every process pinned to ONE CPU, torch one thread, gRPC nodes computing one at a
time, so a ratio is total work, not a parallel speed-up. The sums are checked against the
in-process secure sum (the same fixed-point sum: equal to the quantum).

Holding hundreds of gRPC nodes on one CPU: daemons start one build apart, the nodes' heartbeat
is 10 s (liveness 40 s), node processes run at nice 5 with the compute lock around every task
they run, and every process switches threads every 0.5 ms (`--heartbeat`, `--node-nice`,
`--switch-interval`; each result records them). A configuration that fails (its nodes not all
live within `--join-timeout`, or a step that does not sum them all) is recorded with its error
and the coordinator's RSS then; the file is written after every configuration, and `--merge`
keeps the results already there for configurations not run again, each with its command.

    .venv/bin/python benchmarks/scale.py --configs 16,64              # quick check (~3 min)
    .venv/bin/python benchmarks/scale.py                              # 16,64,256,512,50/512
    .venv/bin/python benchmarks/scale.py --spread --procs 15          # a many-core machine
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rounds import node_worker, pin, worker_cpu_seconds  # noqa: E402 — benchmarks share it

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
TARGETS = {"ratio_at_256_max": 2.0, "coordinator_rss_gib_at_512_max": 2.0}


def parse_config(spec: str) -> tuple[int, int]:
    """"n" (every node sums) or "S/n" (S sampled of n)."""
    if "/" in spec:
        sampled, n = (int(v) for v in spec.split("/"))
        return n, sampled
    return int(spec), int(spec)


def run_config(n: int, sampled: int, args: argparse.Namespace, out: str):
    from codream.config import RunConfig, build, dotted

    return build(RunConfig, dotted({
        "dataset": "digits", "clients": n, "partition": "iid", "min_client_size": 2,
        "models": args.model, "device": "cpu", "seed": 0, "out": out,
        "dream.batch_size": args.batch, "clients_per_round": sampled if sampled < n else 0,
        "secagg.graph": "auto", "secagg.complete_up_to": 8,
        "secagg.steps_per_block": args.steps}))


def memory_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


class Traffic:
    """Wraps the dispatcher's post to read each step's messages off afterwards."""

    def __init__(self, dispatcher) -> None:
        self.entries: list = []
        post = dispatcher.post

        def recording(member, task, accept, shared=None):
            entry = post(member, task, accept, shared)
            self.entries.append(entry)
            return entry

        dispatcher.post = recording

    def take(self) -> list:
        entries, self.entries = self.entries, []
        return entries


def _time_block_setup(secure) -> dict[str, float]:
    """Times the secure rounds' block set-up (key advertisement and share dealing)."""
    spent = {"wall": 0.0, "cpu": 0.0}
    set_up = secure._set_up_block

    def timed(session):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        set_up(session)
        spent["wall"] += time.perf_counter() - wall0
        spent["cpu"] += time.process_time() - cpu0

    secure._set_up_block = timed
    return spent


def measure(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codream.aggregation import PlainSummer
    from codream.client_sampling import draw_participants
    from codream.data import load_dataset
    from codream.local_dreaming import initial_dreams
    from codream.messages import DreamStep
    from codream.node_build import build_node, client_partitions, node_id
    from codream.round_protocol import Broadcast
    from codream.secure_summer import InProcessSecureSummer
    from coordinator.network_transport import NetworkTransport, Timeouts
    from coordinator.service import CoordinatorService, CoordinatorSettings

    n, sampled = parse_config(spec)
    config = run_config(n, sampled, args, tempfile.mkdtemp(prefix="codream-scale-"))
    dataset = load_dataset(config.dataset)
    shape = (config.dream.batch_size, *dataset.input_shape)
    size = int(np.prod(shape))
    memory_before = memory_kib()

    started = time.perf_counter()
    service = CoordinatorService(config, CoordinatorSettings(
        host="127.0.0.1", port=0, health_port=0, grace_seconds=1.0,
        heartbeat_seconds=args.heartbeat, liveness_seconds=max(30.0, 4 * args.heartbeat)))
    service.start()
    procs = min(n, args.procs)
    context = mp.get_context("spawn")
    stop_all, results = context.Event(), context.Queue()
    cpus = sorted(os.sched_getaffinity(0)) if args.spread else []
    compute_lock = None if args.spread else context.Lock()
    workers = [context.Process(target=node_worker, daemon=True, args=(
        service.port, list(range(n))[p::procs],
        cpus[(p + 1) % len(cpus)] if args.spread else args.cpu, compute_lock, stop_all, results),
        kwargs={"stagger": True, "nice": args.node_nice, "pull_wait": 30.0,
                "lock_all_tasks": True, "switch_interval": args.switch_interval}) for p in range(procs)]
    for worker in workers:
        worker.start()
    pids = [w.pid for w in workers]
    joined = len(service.membership.wait_for(n, args.join_timeout))
    if joined < n:
        raise RuntimeError(f"{joined} of {n} nodes live after {args.join_timeout:.0f} s")
    startup_s = time.perf_counter() - started
    live = [m.node_id for m in service.membership.live()]
    to = draw_participants(live, config.seed, 1, sampled, 2) if sampled < n else None
    members = list(to) if to is not None else live
    transport = NetworkTransport(config, service.membership, service.dispatcher,
                                 Timeouts(step=600, secagg_round=600))
    # warm-up: one secure step of a smaller batch (a session of its own, as its length differs),
    # so first-call costs (torch, secagg code paths) stay out of the timed block
    small = (2, *dataset.input_shape)
    transport.broadcast(Broadcast(DreamStep("scale/warm", 1, 0, 1, 99, small, initial_dreams(99, small)),
                                  size=int(np.prod(small)), to=to))
    traffic = Traffic(service.dispatcher)
    setup = _time_block_setup(transport.secure)
    dreams = initial_dreams(1234, shape)

    grpc_rows = []
    for step in range(args.steps):
        task = DreamStep(f"scale/{step}", 1, 0, step + 1, 1234, shape, dreams)
        wall0, cpu0, workers0 = time.perf_counter(), time.process_time(), worker_cpu_seconds(pids)
        total = transport.broadcast(Broadcast(task, size=size, to=to)).total
        grpc_rows.append({"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0,
                          "cpu_nodes": worker_cpu_seconds(pids) - workers0, "total": total,
                          "entries": traffic.take()})
        if len(total.contributors) != len(members):
            raise RuntimeError(f"{task.task_id}: {len(total.contributors)} of {len(members)} summed: "
                               f"{dict(total.excluded)}")
    memory_served = memory_kib()
    stop_all.set()
    for _ in workers:
        results.get(timeout=120)
    for worker in workers:
        worker.join(60)
    service.stop(1.0)

    parts = client_partitions(config, dataset)
    nodes = {node_id(i): build_node(config, i, dataset, parts, torch.device("cpu"))
             for i in range(n) if node_id(i) in set(members)}
    secure_summer = InProcessSecureSummer(config.secagg, {k: v.weight for k, v in nodes.items()})
    inproc: dict[str, list[float]] = {"plain": [], "secure": []}
    inproc_totals = []
    warm = DreamStep("scale/warm", 1, 0, 1, 99, small, initial_dreams(99, small))
    secure_summer.sum({k: v.handle(warm) for k, v in nodes.items()}, int(np.prod(small)), warm)
    for step in range(args.inproc_steps):
        task = DreamStep(f"scale/{step}", 1, 0, step + 1, 1234, shape, dreams)
        for variant, summer in (("plain", PlainSummer()), ("secure", secure_summer)):
            wall0 = time.perf_counter()
            contributions = {name: node.handle(task) for name, node in nodes.items()}
            total = summer.sum(contributions, size, task)
            inproc[variant].append(time.perf_counter() - wall0)
            if variant == "secure":
                inproc_totals.append(total)

    steps = len(grpc_rows)
    amortised = sum(r["wall"] for r in grpc_rows) / steps
    participants = len(members)

    def per_node(kinds: tuple[str, ...] | None, column: str) -> float:
        total = 0
        for row in grpc_rows:
            for entry in row["entries"]:
                body = (entry.shared.task if entry.shared is not None else entry.task).WhichOneof("body")
                if kinds is None or body in kinds:
                    total += getattr(entry, column)
        return total / (participants * steps)

    plain_s, secure_s = statistics.median(inproc["plain"]), statistics.median(inproc["secure"])
    protocol = dict(grpc_rows[0]["total"].protocol)
    return {
        "config": spec, "n": n, "participants": participants, "d": size,
        "payload_bytes": 4 * size, "steps": steps, "startup_s": startup_s,
        "secure_graph": protocol,
        "grpc_step_s_amortised": amortised,
        "grpc_step_s_median_steady": statistics.median(r["wall"] for r in grpc_rows[1:] or grpc_rows),
        "grpc_first_step_s_with_block_setup": grpc_rows[0]["wall"],
        "block_setup_s": setup["wall"],  # AdvertiseKeys + ShareKeys of the timed block
        "block_setup_coordinator_cpu_s": setup["cpu"],
        "coordinator_cpu_s_per_step": sum(r["cpu"] for r in grpc_rows) / steps,
        "node_processes_cpu_s_per_step": sum(r["cpu_nodes"] for r in grpc_rows) / steps,
        "coordinator_rss_mib": memory_served["VmRSS"] / 1024,
        "coordinator_peak_rss_mib": memory_served["VmHWM"] / 1024,
        "coordinator_rss_mib_before_service": memory_before["VmRSS"] / 1024,
        "coordinator_rss_kib_per_node": (memory_served["VmHWM"] - memory_before["VmRSS"]) / n,
        "coordinator_cpu_ms_per_participant_per_step": (
            1e3 * sum(r["cpu"] for r in grpc_rows) / steps / participants),
        "bytes_per_node_per_step": {
            "masked_upload": per_node(("dream_step",), "received_bytes"),
            "dream_task_download": per_node(("dream_step",), "sent_bytes"),
            "all_up": per_node(None, "received_bytes"),
            "all_down": per_node(None, "sent_bytes"),
        },
        "inproc_plain_step_s_median": plain_s,
        "inproc_secure_step_s_median": secure_s,
        "ratio_to_inproc_plain": amortised / plain_s,
        "ratio_to_inproc_secure": amortised / secure_s,
        "max_abs_diff_grpc_vs_inproc_secure": max(
            float(np.abs(r["total"].total - t.total).max())
            for r, t in zip(grpc_rows, inproc_totals, strict=False)),
    }


def _measure_in_child(spec: str, args: argparse.Namespace, queue) -> None:
    """One configuration in a fresh process, so its RSS is its own and not the previous ones'."""
    logging.basicConfig(level=logging.ERROR)
    pin(args.cpu)
    # The grpc server hands every call event to one Python thread (its completion-queue loop),
    # which re-takes the GIL after each poll; while another coordinator thread computes, each
    # take may wait out the switch interval (CPython: 5 ms). Shorter, so hundreds of nodes'
    # calls are not throttled by it.
    sys.setswitchinterval(args.switch_interval)
    try:
        queue.put(measure(spec, args))
    except BaseException as error:  # noqa: BLE001 — reported by the parent
        memory = memory_kib()  # this process is the coordinator's: what it held when it failed
        queue.put({"config": spec, "error": repr(error),
                   "coordinator_rss_mib_at_failure": memory["VmRSS"] / 1024,
                   "coordinator_peak_rss_mib_at_failure": memory["VmHWM"] / 1024})
        raise


def measure_fresh(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure_in_child, args=(spec, args, queue))
    child.start()
    result = queue.get()
    child.join(120)
    return result  # {"config", "error"} when the configuration failed: recorded, not raised

def _kept_results(out: Path, rerun: list[str]) -> list[dict[str, Any]]:
    """`--merge`: the results already in `out` for configurations not run now, each with the
    command that made it (a file from before per-result commands: its top-level command)."""
    if not out.exists():
        return []
    old = json.loads(out.read_text())
    kept = []
    for r in old.get("results", []):
        if r["config"] not in rerun:
            kept.append({**r, "command": r.get("command", old.get("command"))})
    return kept


def _order(r: dict[str, Any]) -> tuple[int, int]:
    n, sampled = parse_config(r["config"])
    return n, sampled


def _targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_n = {r["config"]: r for r in results}
    targets: dict[str, Any] = {}
    if "256" in by_n:
        r = by_n["256"]
        targets["ratio_at_256_le_2"] = ("not measured: " + r["error"] if "error" in r else
                                        r["ratio_to_inproc_plain"] <= 2.0)
        if "error" not in r:
            targets["ratio_at_256_le_2_vs_inproc_secure"] = r["ratio_to_inproc_secure"] <= 2.0
    if "512" in by_n:
        r = by_n["512"]
        targets["coordinator_rss_at_512_lt_2gib"] = ("not measured: " + r["error"] if "error" in r
                                                     else r["coordinator_peak_rss_mib"] < 2048)
    uploads = [r["bytes_per_node_per_step"]["masked_upload"] for r in results if "error" not in r]
    if uploads:
        targets["upload_independent_of_n"] = (max(uploads) - min(uploads)) / min(uploads) < 0.01
    return targets


def _write_report(args: argparse.Namespace, command: str, load_start, started: float,
                  kept: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """Written after every configuration, so a later one that fails or runs out of time leaves
    the earlier figures; every result carries the command that made it."""
    import grpc
    import torch

    everything = sorted([*kept, *results], key=_order)
    commands = list(dict.fromkeys(r["command"] for r in everything))
    report = {
        "command": commands[0] if len(commands) == 1 else commands,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "grpcio": grpc.__version__, "pinned_cpu": args.cpu,
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "settings": {"model": args.model, "dream_batch": args.batch, "steps": args.steps,
                     "spread": args.spread,
                     "inproc_steps": args.inproc_steps, "worker_processes": args.procs,
                     "secagg": "graph auto, complete_up_to 8 (SecAgg+ at every n), corrupt 0.05, "
                               "dropout 0.1, steps_per_block = steps, unauthenticated",
                     "transport": "plaintext loopback, no tokens"},
        "meaning": {
            "grpc_step_s_amortised": "mean wall s over one secagg block of steps, the first "
                                     "step's key set-up included",
            "coordinator_cpu_s_per_step": "CPU s of this process (coordinator + driver, no "
                                          "in-process node yet) per step, set-up amortised",
            "coordinator_rss_mib": "VmRSS / VmHWM of this process after the gRPC steps, before "
                                   "the in-process nodes are built",
            "bytes_per_node_per_step": "protobuf sizes per participating node per step: its masked "
                                       "upload, its dream task, and everything up / down (secagg "
                                       "rounds and the block set-up amortised)",
            "ratio_to_inproc_plain": "grpc amortised / in-process Σ handle + PlainSummer (the bare "
                                     "step); every process on one CPU, gRPC nodes computing one at "
                                     "a time: total work, not a parallel speed-up",
            "ratio_to_inproc_secure": "the same over codream simulate's secure step (a whole "
                                      "one-shot session per sum)",
        },
        "targets": {**TARGETS, "met": _targets(everything)},
        "total_wall_s": time.perf_counter() - started,  # of the latest command
        "results": everything,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="16,64,256,512,50/512",
                        help="comma-separated: n (all sum) or S/n (S sampled of n)")
    parser.add_argument("--steps", type=int, default=10, help="gRPC steps: one secagg block")
    parser.add_argument("--inproc-steps", type=int, default=3, help="in-process steps per variant")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch", type=int, default=256, help="dream batch (digits: d = 64·B)")
    parser.add_argument("--procs", type=int, default=8, help="node worker processes")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the one CPU every process is pinned to")
    parser.add_argument("--spread", action="store_true",
                        help="one CPU per process (the coordinator on the first, worker p on the "
                             "(p+1)-th), nodes computing in parallel: a wall-clock figure, not "
                             "like with like")
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="the nodes' heartbeat period, s (the coordinator's liveness window: "
                             "4x, at least 30 s); the service's default 2 s costs hundreds of "
                             "beats a second at n = 512 on the one CPU")
    parser.add_argument("--node-nice", type=int, default=5,
                        help="niceness of the node worker processes: the coordinator on the same "
                             "CPU is served first, as on a core of its own (0: equal shares)")
    parser.add_argument("--switch-interval", type=float, default=0.0005,
                        help="sys.setswitchinterval of the coordinator and node processes, s "
                             "(CPython's default: 0.005)")
    parser.add_argument("--join-timeout", type=float, default=240.0,
                        help="s for every node to be live before a configuration is given up")
    parser.add_argument("--merge", action="store_true",
                        help="keep the results already in --out for configurations not run now "
                             "(each records the command that made it)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.spread:
        args.cpu = min(os.sched_getaffinity(0))
    logging.basicConfig(level=logging.ERROR)
    load_start = os.getloadavg()
    pin(args.cpu)
    print(f"pinned to CPU {args.cpu}; load {load_start[0]:.2f}; {args.model}, B = {args.batch}, "
          f"{args.steps} gRPC steps", flush=True)
    print(f"{'config':>7} | {'graph':>15} | {'grpc s':>7} {'setup':>6} {'coord cpu':>9} "
          f"{'rss MiB':>7} | {'up B':>7} {'all up':>7} | {'inproc':>7} {'in+sec':>7} | "
          f"{'ratio':>5} {'r.sec':>5}", flush=True)
    command = " ".join([".venv/bin/python", *sys.argv])
    harness = {"heartbeat_s": args.heartbeat, "node_nice": args.node_nice,
               "switch_interval_s": args.switch_interval, "staggered_start": True,
               "compute_lock": "every node task" if not args.spread else None,
               "pull_wait_s": 30.0, "steps": args.steps, "inproc_steps": args.inproc_steps}
    kept = _kept_results(args.out, args.configs.split(",")) if args.merge else []
    started, results = time.perf_counter(), []
    for spec in args.configs.split(","):
        r = {**measure_fresh(spec, args), "command": command, "harness": harness,
             "load_average_after": os.getloadavg()}
        results.append(r)
        _write_report(args, command, load_start, started, kept, results)
        if "error" in r:
            print(f"{spec:>7} | failed: {r['error']}", flush=True)
            continue
        g, b = r["secure_graph"], r["bytes_per_node_per_step"]
        print(f"{spec:>7} | {g['graph']:>8} k{g['degree']:>2} t{g['threshold']:>2} | "
              f"{r['grpc_step_s_amortised']:>7.3f} {r['block_setup_s']:>6.2f} "
              f"{r['coordinator_cpu_s_per_step']:>9.3f} {r['coordinator_rss_mib']:>7.0f} | "
              f"{b['masked_upload']:>7.0f} {b['all_up']:>7.0f} | "
              f"{r['inproc_plain_step_s_median']:>7.3f} {r['inproc_secure_step_s_median']:>7.3f} | "
              f"{r['ratio_to_inproc_plain']:>5.2f} {r['ratio_to_inproc_secure']:>5.2f}", flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
