"""Benchmark of one secure dream step over gRPC next to the same step in process, n = 4, 16, 64.

For each n it starts a real CoordinatorService (127.0.0.1, port 0) in this process and n real
NodeDaemons (gRPC clients, several node threads per worker process), builds the same n nodes
in process as `codream simulate` does, and times one CoDream dream step (DreamStep with the
dream batch, every node's Δ_k, one weighted sum) four ways, interleaved step by step so machine
load hits all four alike:

  inproc_plain   Σ_k NodeTaskLogic.handle, then PlainSummer           (the reference)
  inproc_secure  the same, then InProcessSecureSummer (simulate: one secagg session per sum)
  grpc_secure    NetworkTransport.broadcast of a summed DreamStep under secure aggregation
  grpc_plain     the same broadcast with secure aggregation off (clear contributions)

Like with like: every process (coordinator, benchmark driver, node workers) is pinned to ONE
CPU, torch runs one thread, and the gRPC nodes take turns to compute (a lock shared by the
workers; --interleave-compute drops it), as the in-process nodes do. The ratio grpc_secure /
inproc_plain is then the total work of the networked secure step over the bare step: what
serialisation, the gRPC stacks, the mailboxes and secagg add on top of the same node compute,
not a wall-clock figure for nodes on separate machines. Times are medians (other users'
processes preempt single steps); CPU seconds of all processes are reported beside them. The
secure session re-keys every secagg.steps_per_block steps; that block set-up is timed apart
and amortised over the block. Each n also checks that the gRPC sums equal the in-process ones
bit for bit. Bytes are protobuf message sizes (TaskResult / Task ByteSize, without gRPC and
HTTP/2 framing) per node per step, next to the payload of 4·d bytes (d = B·C·H·W float32
values). Writes benchmarks/results/rounds.json; prints a table.

    .venv/bin/python benchmarks/rounds.py                       # n = 4, 16, 64 (~4 min, 2 cores)
    .venv/bin/python benchmarks/rounds.py --quick               # n = 4, 3 steps, JSON in $TMPDIR
    .venv/bin/python benchmarks/rounds.py --nodes 16 --steps 30 --model mlp --batch 64
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "rounds.json"
VARIANTS = ("inproc_plain", "inproc_secure", "grpc_secure", "grpc_plain")
TARGET_RATIO, TARGET_RATIO_N, TARGET_EXPANSION = 1.25, 16, 1.05
_TICK = os.sysconf("SC_CLK_TCK")


def run_config(n: int, model: str, batch: int, out: str, dataset: str = "digits"):
    from codream.config import RunConfig, build, dotted

    return build(RunConfig, dotted({"dataset": dataset, "clients": n, "partition": "iid",
                                    "models": model, "device": "cpu", "seed": 0, "out": out,
                                    "dream.batch_size": batch}))


def pin(cpu: int | None) -> None:
    import torch

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of this process (all threads, exact) plus the workers' (from /proc, in ticks)."""
    return time.process_time() + worker_cpu_seconds(pids)


def worker_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    return total


# ---- node worker processes ------------------------------------------------------------------
def node_worker(port: int, indices: list[int], cpu: int | None, compute_lock, stop_all,
                results, stagger: bool = False, nice: int = 0, pull_wait: float = 10.0,
                lock_all_tasks: bool = False, switch_interval: float | None = None) -> None:
    """Runs NodeDaemons for `indices` as threads; reports each node's handle() times at the end.

    `compute_lock` (shared by every worker, or None) lets one node compute at a time, as the
    in-process reference does; without it, up to n/procs node threads per process interleave
    their torch kernels on the one CPU and inflate each other's compute (caches, switches).
    `stagger`: start each daemon only once the previous one has built its node, so a node's
    Join and Ready are one build apart (seen at n = 256 on one CPU: started at once, the daemons
    all join, then build one after another under the build lock, and the last ones reach Ready
    after the coordinator's 30 s liveness window, so their memberships lapse and they re-join).
    The rest are for hundreds of nodes on one CPU: `nice`, this process's niceness, so the
    coordinator sharing the CPU is served first; `pull_wait`, each node's long-poll wait, s;
    `lock_all_tasks`, the compute lock around every task a node runs (its secagg rounds too:
    key set-up, masking, unmasking), not only its handle(), so a block's set-up does not have
    every node thread computing at once; `switch_interval`, sys.setswitchinterval for this
    process (tens of node threads, each waking a few times a second, share its GIL)."""
    pin(cpu)
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    if nice:
        os.nice(nice)
    if lock_all_tasks and compute_lock is not None:
        from client_node.task_runner import TaskRunner

        run_task = TaskRunner.run

        def locked_run(self, *args, **kwargs):
            with compute_lock:
                return run_task(self, *args, **kwargs)

        TaskRunner.run = locked_run  # type: ignore[method-assign]
        handle_lock = None  # handle() runs inside a task: the lock is already held
    else:
        handle_lock = compute_lock
    logging.basicConfig(level=logging.ERROR)
    from client_node.channel import ChannelSecurity
    from client_node.daemon import NodeDaemon
    from client_node.node_options import NodeOptions
    from client_node.node_setup import build_logic

    timings: dict[str, dict[str, tuple[float, float]]] = {}
    building = threading.Lock()  # model init seeds torch's global RNG: one node at a time
    built = {i: threading.Event() for i in indices}

    def timed_build(config, index, device):
        with building, (compute_lock if lock_all_tasks and compute_lock is not None
                        else contextlib.nullcontext()):
            logic = build_logic(config, index, device)
        built[index].set()
        handle, mine = logic.handle, timings.setdefault(f"node-{index}", {})

        def timed_handle(task):
            with handle_lock or contextlib.nullcontext():
                cpu0, wall0 = time.thread_time(), time.perf_counter()  # torch: this thread
                reply = handle(task)
                mine[task.task_id] = (time.thread_time() - cpu0, time.perf_counter() - wall0)
            return reply

        logic.handle = timed_handle
        return logic

    stop = threading.Event()
    daemons = [NodeDaemon(NodeOptions(f"127.0.0.1:{port}", f"node-{i}", ChannelSecurity(),
                                      device="cpu", pull_wait=pull_wait), stop, build_logic=timed_build)
               for i in indices]
    threads = [threading.Thread(target=d.run, daemon=True) for d in daemons]
    for index, thread in zip(indices, threads, strict=True):
        thread.start()
        if stagger:
            built[index].wait(120.0)
    stop_all.wait()
    stop.set()
    for thread in threads:
        thread.join(30.0)
    results.put(timings)


# ---- one n --------------------------------------------------------------------------------
class Recorder:
    """Wraps the dispatcher's post and the secure block set-up so each step's traffic and set-up
    time can be read off afterwards; the coordinator code itself is untouched."""

    def __init__(self, dispatcher, secure, pids: list[int]) -> None:
        self.entries: list = []
        self.setup_wall = self.setup_cpu = 0.0
        post, set_up = dispatcher.post, secure._set_up_block

        def recording_post(member, task, accept, shared=None):
            entry = post(member, task, accept, shared)
            self.entries.append(entry)
            return entry

        def timed_set_up(session):
            wall0, cpu0 = time.perf_counter(), cpu_seconds(pids)
            set_up(session)
            self.setup_wall += time.perf_counter() - wall0
            self.setup_cpu += cpu_seconds(pids) - cpu0

        dispatcher.post, secure._set_up_block = recording_post, timed_set_up

    def take(self) -> dict[str, Any]:
        """Traffic since the last take, by task body: [tasks, bytes down, bytes up]."""
        by_kind: dict[str, list[int]] = {}
        for entry in self.entries:
            body = (entry.shared or entry.task).WhichOneof("body")  # a shared body is the task's
            row = by_kind.setdefault(body, [0, 0, 0])
            row[0] += 1
            row[1] += entry.sent_bytes
            row[2] += entry.received_bytes
        out = {"bytes": by_kind, "setup_wall": self.setup_wall, "setup_cpu": self.setup_cpu}
        self.entries, self.setup_wall, self.setup_cpu = [], 0.0, 0.0
        return out


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from codream.aggregation import PlainSummer
    from codream.data import load_dataset
    from codream.local_dreaming import initial_dreams
    from codream.messages import DreamStep
    from codream.node_build import build_node, client_partitions, node_id
    from codream.round_protocol import Broadcast
    from codream.secure_summer import InProcessSecureSummer
    from coordinator.network_transport import NetworkTransport, Timeouts
    from coordinator.service import CoordinatorService, CoordinatorSettings

    config = run_config(n, args.model, args.batch, tempfile.mkdtemp(prefix="codream-rounds-"),
                        args.dataset)
    dataset = load_dataset(config.dataset)
    shape = (config.dream.batch_size, *dataset.input_shape)  # (B, C, H, W)
    size = int(np.prod(shape))

    started = time.perf_counter()
    # The nodes get the run config with secure aggregation off, so they also answer the plain
    # variant (a node whose run requires secure aggregation refuses to send a clear update).
    plain_config = dataclasses.replace(config, secagg=dataclasses.replace(config.secagg, enabled=False))
    service = CoordinatorService(plain_config, CoordinatorSettings(host="127.0.0.1", port=0, health_port=0,
                                                             grace_seconds=1.0))
    service.start()
    procs = min(n, args.procs)
    context = mp.get_context("spawn")
    stop_all, results = context.Event(), context.Queue()
    compute_lock = None if args.interleave_compute else context.Lock()
    workers = [context.Process(target=node_worker, daemon=True, args=(
        service.port, list(range(n))[p::procs], args.cpu, compute_lock, stop_all, results))
        for p in range(procs)]
    for worker in workers:
        worker.start()
    pids = [w.pid for w in workers]
    joined = service.membership.wait_for(n, 300.0)
    if len(joined) < n:
        raise RuntimeError(f"only {len(joined)} of {n} nodes joined")
    startup_s = time.perf_counter() - started

    parts = client_partitions(config, dataset)
    nodes = {node_id(i): build_node(config, i, dataset, parts, torch.device("cpu")) for i in range(n)}
    secure_summer = InProcessSecureSummer(config.secagg, {k: v.weight for k, v in nodes.items()})
    secure = NetworkTransport(config, service.membership, service.dispatcher, Timeouts())
    plain = NetworkTransport(plain_config, service.membership, service.dispatcher, Timeouts())
    recorder = Recorder(service.dispatcher, secure.secure, pids)
    dreams = initial_dreams(1234, shape)  # (B, C, H, W): the same batch every step

    def inproc(task, summer):
        compute = 0.0
        contributions = {}
        for name, node in nodes.items():
            t0 = time.thread_time()
            contributions[name] = node.handle(task)
            compute += time.thread_time() - t0
        return summer.sum(contributions, size, task), compute

    def one_step(variant: str, step: int) -> dict[str, Any]:
        task = DreamStep(f"bench/{variant}/{step}", 1, 0, step + 1, 1234, shape, dreams)
        recorder.take()
        wall0, main0, workers0 = time.perf_counter(), time.process_time(), worker_cpu_seconds(pids)
        compute = None
        if variant == "inproc_plain":
            total, compute = inproc(task, PlainSummer())
        elif variant == "inproc_secure":
            total, compute = inproc(task, secure_summer)
        else:
            transport = secure if variant == "grpc_secure" else plain
            total = transport.broadcast(Broadcast(task, size=size)).total
        main, workers = time.process_time() - main0, worker_cpu_seconds(pids) - workers0
        row = {"wall": time.perf_counter() - wall0, "cpu": main + workers, "cpu_main": main,
               "cpu_workers": workers,
               "compute": compute, "task_id": task.task_id, "total": total, **recorder.take()}
        if len(total.contributors) != n:
            raise RuntimeError(f"{task.task_id}: {len(total.contributors)} of {n} summed: "
                               f"{dict(total.excluded)}")
        return row

    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    warm: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for step in range(args.warmup + args.steps):
        for variant in VARIANTS:
            (warm if step < args.warmup else rows)[variant].append(one_step(variant, step))

    stop_all.set()
    node_times: dict[str, dict[str, tuple[float, float]]] = {}
    for _ in workers:
        node_times.update(results.get(timeout=60))
    for worker in workers:
        worker.join(30)
    service.stop(1.0)

    for variant in ("grpc_secure", "grpc_plain"):
        for row in rows[variant]:
            row["compute"] = sum(node_times[k][row["task_id"]][0] for k in node_times)
    first_setup = warm["grpc_secure"][0]["setup_wall"]
    return summarise(n, size, rows, startup_s, first_setup, config, secure, secure_summer)


def summarise(n, size, rows, startup_s, first_setup, config, secure, secure_summer) -> dict[str, Any]:
    payload = 4 * size
    spb = config.secagg.steps_per_block
    out: dict[str, Any] = {"n": n, "d": size, "payload_bytes": payload, "startup_s": startup_s,
                           "steps": len(rows["inproc_plain"])}
    for variant, vrows in rows.items():
        setups = [r["setup_wall"] for r in vrows if r["setup_wall"] > 0]
        steady = [r["wall"] - r["setup_wall"] for r in vrows]
        steady_cpu = [r["cpu"] - r["setup_cpu"] for r in vrows]
        fig = {"step_s_median": statistics.median(steady), "step_s_mean": statistics.fmean(steady),
               "cpu_s_mean": statistics.fmean(steady_cpu),
               "cpu_coordinator_process_s_mean": statistics.fmean(r["cpu_main"] for r in vrows),
               "cpu_node_processes_s_mean": statistics.fmean(r["cpu_workers"] for r in vrows),
               "node_compute_s_mean": statistics.fmean(r["compute"] for r in vrows)}
        if variant == "grpc_secure":
            fig["setup_s_per_block"] = statistics.median(setups) if setups else first_setup
            fig["setup_cpu_s_per_block"] = statistics.median(
                [r["setup_cpu"] for r in vrows if r["setup_cpu"] > 0] or [0.0])
            fig["first_block_setup_s"] = first_setup
            fig["blocks_timed"] = len(setups)
        out[variant] = fig
    sec, plain, ref = out["grpc_secure"], out["grpc_plain"], out["inproc_plain"]
    # Medians: other users' processes preempt single steps; CPU seconds do not see that at all.
    sec["amortised_s"] = sec["step_s_median"] + sec["setup_s_per_block"] / spb
    sec["amortised_s_from_means"] = sec["step_s_mean"] + sec["setup_s_per_block"] / spb
    sec["amortised_cpu_s"] = sec["cpu_s_mean"] + sec["setup_cpu_s_per_block"] / spb
    out["ratio_wall"] = sec["amortised_s"] / ref["step_s_median"]
    out["ratio_wall_from_means"] = sec["amortised_s_from_means"] / ref["step_s_mean"]
    out["ratio_cpu"] = sec["amortised_cpu_s"] / ref["cpu_s_mean"]
    out["grpc_cost_ratio"] = plain["step_s_median"] / ref["step_s_median"]
    out["secagg_share"] = 1 - plain["step_s_median"] / sec["amortised_s"]
    out["node_compute_inflation"] = sec["node_compute_s_mean"] / ref["node_compute_s_mean"]
    out["cpu_ms_per_node_beyond_compute"] = (
        1e3 * (sec["amortised_cpu_s"] - sec["node_compute_s_mean"]) / n)
    out["inproc_cpu_ms_per_node_beyond_compute"] = (
        1e3 * (ref["cpu_s_mean"] - ref["node_compute_s_mean"]) / n)
    out["bytes"] = traffic(rows, n, payload)
    out["max_abs_diff_grpc_vs_inproc"] = {
        "secure": max(float(np.abs(a["total"].total - b["total"].total).max())
                      for a, b in zip(rows["grpc_secure"], rows["inproc_secure"], strict=True)),
        "plain": max(float(np.abs(a["total"].total - b["total"].total).max())
                     for a, b in zip(rows["grpc_plain"], rows["inproc_plain"], strict=True)),
    }
    out["clipped_elements"] = {"grpc": secure.secure.clipped, "inproc": secure_summer.clipped}
    out["targets"] = {"upload_expansion_le_1.05": out["bytes"]["upload_expansion"] <= TARGET_EXPANSION}
    if n == TARGET_RATIO_N:
        out["targets"]["ratio_wall_le_1.25"] = out["ratio_wall"] <= TARGET_RATIO
        out["targets"]["ratio_cpu_le_1.25"] = out["ratio_cpu"] <= TARGET_RATIO
    return out


def traffic(rows, n: int, payload: int) -> dict[str, Any]:
    """Per node per step; the secure block set-up (advertise, share keys) amortised over steps."""
    def per_node_step(variant: str, kinds: tuple[str, ...] | None, column: int) -> float:
        total = sum(c[column] for r in rows[variant] for k, c in r["bytes"].items()
                    if kinds is None or k in kinds)
        return total / (n * len(rows[variant]))

    masked_up = per_node_step("grpc_secure", ("dream_step",), 2)
    task_down = per_node_step("grpc_secure", ("dream_step",), 1)
    all_up, all_down = per_node_step("grpc_secure", None, 2), per_node_step("grpc_secure", None, 1)
    return {
        "masked_contribution_up": masked_up, "dream_task_down": task_down,
        "all_up_with_unmask_and_setup": all_up, "all_down_with_unmask_and_setup": all_down,
        "plain_contribution_up": per_node_step("grpc_plain", ("dream_step",), 2),
        "plain_task_down": per_node_step("grpc_plain", ("dream_step",), 1),
        "upload_expansion": masked_up / payload,
        "download_expansion": task_down / payload,
        "upload_expansion_with_protocol": all_up / payload,
        "download_expansion_with_protocol": all_down / payload,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4,16,64", help="comma-separated node counts")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--model", default="cnn", help="every node's model (default: cnn)")
    parser.add_argument("--batch", type=int, default=256, help="dream batch B (d = B·C·H·W)")
    parser.add_argument("--dataset", default="digits", help="digits (8x8) | mnist (28x28)")
    parser.add_argument("--procs", type=int, default=4, help="node worker processes (at most n)")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the one CPU every process is pinned to")
    parser.add_argument("--no-pin", action="store_true", help="do not pin (not like with like)")
    parser.add_argument("--interleave-compute", action="store_true",
                        help="let gRPC nodes compute concurrently (default: one at a time)")
    parser.add_argument("--quick", action="store_true", help="n = 4, 3 steps: a smoke test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.steps, args.warmup = "4", 3, 1
    args.cpu = None if args.no_pin else args.cpu
    out = args.out or (Path(tempfile.gettempdir()) / "rounds_quick.json" if args.quick else RESULTS)
    logging.basicConfig(level=logging.ERROR)
    load_start = os.getloadavg()
    pin(args.cpu)
    import grpc
    import torch

    print(f"pinned to CPU {args.cpu}; load average {load_start[0]:.2f}; model {args.model}, "
          f"B = {args.batch}, {args.steps} timed steps (+{args.warmup} warm-up) per variant",
          flush=True)
    print(f"{'n':>3} | {'inproc':>7} {'in+sec':>7} | {'grpc+sec':>8} {'grpc':>7} | {'ratio':>5} "
          f"{'cpu':>5} {'secagg':>6} {'ms/node':>7} {'setup/blk':>9} | {'up×':>6} {'down×':>6} "
          f"{'up×all':>6}", flush=True)
    started = time.perf_counter()
    results = []
    for n in [int(v) for v in args.nodes.split(",")]:
        r = measure(n, args)
        results.append(r)
        b, sec = r["bytes"], r["grpc_secure"]
        print(f"{n:>3} | {r['inproc_plain']['step_s_median']:>7.4f} "
              f"{r['inproc_secure']['step_s_median']:>7.4f} | {sec['amortised_s']:>8.4f} "
              f"{r['grpc_plain']['step_s_median']:>7.4f} | {r['ratio_wall']:>5.2f} "
              f"{r['ratio_cpu']:>5.2f} {r['secagg_share']:>6.1%} "
              f"{r['cpu_ms_per_node_beyond_compute']:>7.2f} {sec['setup_s_per_block']:>9.3f} | "
              f"{b['upload_expansion']:>6.4f} {b['download_expansion']:>6.4f} "
              f"{b['upload_expansion_with_protocol']:>6.4f}", flush=True)
    print("s/step, medians. grpc+sec: steady step + block set-up / steps_per_block. ratio: "
          "grpc+sec / inproc (plain sum), every process on one CPU, so total work, not a parallel "
          "speed-up; cpu: the same in CPU seconds of all processes. secagg: 1 − grpc / grpc+sec. "
          "ms/node: CPU ms per node per step beyond the nodes' compute. up×, down×: masked result, "
          "dream task over payload 4·d; up×all: with unmask and set-up messages")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "grpcio": grpc.__version__, "pinned_cpu": args.cpu, "torch_threads": 1,
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "config": {"dataset": args.dataset, "partition": "iid", "model": args.model,
                   "dream_batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                   "worker_processes": args.procs,
                   "interleave_compute": args.interleave_compute, "secagg": "repo defaults (complete graph, "
                   "threshold: smallest majority, steps_per_block 10, dream_clip 10)",
                   "transport": "plaintext loopback, no tokens"},
        "meaning": {
            "variants": "inproc_plain: Σ_k handle() then PlainSummer (the reference); inproc_secure: "
                        "then InProcessSecureSummer, i.e. codream simulate: one whole secagg "
                        "session (keys, shares, masks, unmasking) per sum; grpc_secure / grpc_plain: "
                        "NetworkTransport.broadcast of a summed DreamStep with secagg on / off",
            "pinning": "every process (coordinator + driver, node workers) on one CPU, torch 1 "
                       "thread; gRPC nodes compute one at a time (a lock shared by the workers) "
                       "unless config.interleave_compute, as the in-process nodes do",
            "ratio_wall": "grpc_secure amortised s/step (median steady step + median block set-up "
                          "/ steps_per_block) over inproc_plain median s/step: total work of the "
                          "networked secure step over the bare step, not a speed-up of parallel "
                          "nodes; *_from_means: the same from means (sensitive to preemption)",
            "ratio_cpu": "the same in CPU seconds of all processes (coordinator + workers), blind "
                         "to preemption by other users' processes",
            "grpc_cost_ratio": "grpc_plain / inproc_plain (medians): the wire without secagg",
            "secagg_share": "1 − grpc_plain / grpc_secure amortised: the part secagg adds",
            "node_compute": "Σ_k CPU seconds of NodeTaskLogic.handle, measured inside each node "
                            "(thread_time); node_compute_inflation: gRPC nodes over in-process",
            "cpu_ms_per_node_beyond_compute": "(grpc_secure amortised CPU − node compute) / n",
            "cpu_split": "cpu_coordinator_process / cpu_node_processes: means over the timed "
                         "steps, block set-ups included where they fell",
            "bytes": "protobuf ByteSize per node per step (no gRPC/HTTP2 framing); payload = 4·d; "
                     "upload_expansion (the target) = masked TaskResult / payload; "
                     "download_expansion = DreamStep Task (dreams + secure step, share delivery on "
                     "a block's first step) / payload; *_with_protocol adds unmask and block "
                     "set-up messages, per step",
        },
        "targets": {"ratio_at_n16_max": TARGET_RATIO, "upload_expansion_max": TARGET_EXPANSION},
        "total_wall_s": time.perf_counter() - started,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
