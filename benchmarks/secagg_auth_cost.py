"""What authenticated secure aggregation costs per secure dream step over gRPC, n = 4, 16, 64.

For each data set size (digits: dreams 256 x 1 x 8 x 8; MNIST: 256 x 1 x 28 x 28) and each n it
starts a real CoordinatorService (127.0.0.1, port 0) in this process and n real NodeDaemons
(gRPC clients, several node threads per worker process, real NodeTaskLogic: the node's model
computes its dream update), and times one CoDream dream step (NetworkTransport.broadcast of a
summed DreamStep) two ways on the same nodes:

  unauthenticated  SecureRounds without identities: advertise, share keys, masked input, unmask
  authenticated    SecureRounds relaying every node's Ed25519 identity key: advertisements and
                   survivor lists signed and checked, plus the consistency round before unmasking

A node holds one secure session at a time, so the variants alternate by runs of steps (each
run a new session) rather than step by step; the order alternates between repeats. Every
process is pinned to ONE CPU and torch runs one thread; the nodes take turns to compute (as in
benchmarks/rounds.py), so the figures are total work, not a parallel speed-up. Each session
re-keys every secagg.steps_per_block steps; the block set-up (advertise + share keys) is timed
apart and amortised over the block: amortised = median steady step + median set-up / steps per
block. The nodes hold an identity key but no roster (they check relayed keys against nothing,
which costs a byte comparison less than a roster lookup), so the same nodes serve both variants.
Writes benchmarks/results/secagg_auth_cost.json (the command that made it included).

    .venv/bin/python benchmarks/secagg_auth_cost.py                 # the recorded run
    .venv/bin/python benchmarks/secagg_auth_cost.py --quick         # digits, n = 4, JSON in $TMPDIR
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
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rounds import cpu_seconds, pin, run_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "secagg_auth_cost.json"
VARIANTS = ("unauthenticated", "authenticated")
TARGET_EXTRA, TARGET_N = 0.10, 16
DEFAULT_PLAN = "digits:4:2x6,digits:16:2x6,digits:64:1x4,mnist:4:2x4,mnist:16:2x3,mnist:64:1x2"


def identity_seed(index: int) -> bytes:
    """A fixed Ed25519 seed per node index (a benchmark, not a secret)."""
    return index.to_bytes(4, "big") * 8


def node_worker(port: int, indices: list[int], cpu: int | None, compute_lock, stop_all) -> None:
    """NodeDaemons for `indices` as threads, each with an identity key and no roster."""
    pin(cpu)
    logging.basicConfig(level=logging.ERROR)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from client_node.channel import ChannelSecurity
    from client_node.daemon import NodeDaemon
    from client_node.node_options import NodeOptions
    from client_node.node_setup import build_logic

    building = threading.Lock()  # model init seeds torch's global RNG: one node at a time

    def locked_build(config, index, device):
        with building:
            logic = build_logic(config, index, device)
        handle = logic.handle

        def one_at_a_time(task):
            with compute_lock:
                return handle(task)

        logic.handle = one_at_a_time
        return logic

    stop = threading.Event()
    daemons = [NodeDaemon(NodeOptions(f"127.0.0.1:{port}", f"node-{i}", ChannelSecurity(),
                                      device="cpu", pull_wait=10.0,
                                      identity_key=Ed25519PrivateKey.from_private_bytes(identity_seed(i))),
                          stop, build_logic=locked_build) for i in indices]
    threads = [threading.Thread(target=d.run, daemon=True) for d in daemons]
    for thread in threads:
        thread.start()
    stop_all.wait()
    stop.set()
    for thread in threads:
        thread.join(30.0)


class SetupTimer:
    """Times each SecureRounds block set-up (wall and CPU of every process) apart from steps,
    and the consistency round (wall) of authenticated steps."""

    def __init__(self, secure, pids: list[int]) -> None:
        self.wall = self.cpu = self.consistency = 0.0
        self.rounds: dict[str, float] = {}  # wall of each round of a step (and of the set-up)
        set_up, consistency, one_round = secure._set_up_block, secure._consistency, secure._round

        def timed_round(session, indices, make_task, kind, *args, **kwargs):
            wall0 = time.perf_counter()
            one_round(session, indices, make_task, kind, *args, **kwargs)
            self.rounds[kind.__name__] = self.rounds.get(kind.__name__, 0.0) + time.perf_counter() - wall0

        secure._round = timed_round

        def timed_consistency(*args):
            wall0 = time.perf_counter()
            survivors = consistency(*args)
            self.consistency += time.perf_counter() - wall0
            return survivors

        secure._consistency = timed_consistency

        def timed(session):
            wall0, cpu0 = time.perf_counter(), cpu_seconds(pids)
            set_up(session)
            self.wall += time.perf_counter() - wall0
            self.cpu += cpu_seconds(pids) - cpu0

        secure._set_up_block = timed

    def take(self) -> tuple[float, float, float, dict[str, float]]:
        out = (self.wall, self.cpu, self.consistency, self.rounds)
        self.wall = self.cpu = self.consistency = 0.0
        self.rounds = {}
        return out


def measure(dataset: str, n: int, repeats: int, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from codream.data import load_dataset
    from codream.local_dreaming import initial_dreams
    from codream.messages import DreamStep
    from codream.round_protocol import Broadcast
    from coordinator.network_transport import NetworkTransport, Timeouts
    from coordinator.service import CoordinatorService, CoordinatorSettings

    config = run_config(n, args.model, args.batch, tempfile.mkdtemp(prefix="codream-auth-"), dataset)
    shape = (config.dream.batch_size, *load_dataset(config.dataset).input_shape)
    size = 1
    for extent in shape:
        size *= extent
    started = time.perf_counter()
    service = CoordinatorService(config, CoordinatorSettings(host="127.0.0.1", port=0, health_port=0,
                                                             grace_seconds=1.0))
    service.start()
    procs = min(n, args.procs)
    context = mp.get_context("spawn")
    stop_all, compute_lock = context.Event(), context.Lock()
    workers = [context.Process(target=node_worker, daemon=True, args=(
        service.port, list(range(n))[p::procs], args.cpu, compute_lock, stop_all))
        for p in range(procs)]
    for worker in workers:
        worker.start()
    pids = [w.pid for w in workers]
    try:
        joined = service.membership.wait_for(n, 600.0)
        if len(joined) < n:
            raise RuntimeError(f"only {len(joined)} of {n} nodes joined")
        startup_s = time.perf_counter() - started
        roster = {f"node-{i}": Ed25519PrivateKey.from_private_bytes(identity_seed(i)).public_key()
                  .public_bytes_raw() for i in range(n)}
        transports = {
            "unauthenticated": NetworkTransport(config, service.membership, service.dispatcher, Timeouts()),
            "authenticated": NetworkTransport(config, service.membership, service.dispatcher, Timeouts(),
                                              identities=roster),
        }
        timers = {v: SetupTimer(t.secure, pids) for v, t in transports.items()}
        dreams = initial_dreams(1234, shape)
        rows: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        counter = 0
        runs = [(VARIANTS, args.warmup, False)]  # untimed: torch's first calls, caches
        runs += [(VARIANTS if r % 2 == 0 else VARIANTS[::-1], steps, True) for r in range(repeats)]
        for order, count, timed in runs:
            for variant in order:
                transport = transports[variant]
                transport.secure.session = None  # a new session: the node left the other one
                for _ in range(count):
                    counter += 1
                    task = DreamStep(f"bench/{variant}/{counter}", 1, 0, counter, 1234, shape, dreams)
                    wall0, cpu0 = time.perf_counter(), cpu_seconds(pids)
                    total = transport.broadcast(Broadcast(task, size=size)).total
                    wall, cpu = time.perf_counter() - wall0, cpu_seconds(pids) - cpu0
                    setup_wall, setup_cpu, consistency, rounds = timers[variant].take()
                    if not timed:
                        continue
                    if len(total.contributors) != n:
                        raise RuntimeError(f"{task.task_id}: {len(total.contributors)} of {n} summed: "
                                           f"{dict(total.excluded)}")
                    session = transport.secure.session
                    assert session is not None
                    assert session.server.config.authenticated == (variant == "authenticated")
                    rows[variant].append({"wall": wall, "cpu": cpu, "setup_wall": setup_wall,
                                          "setup_cpu": setup_cpu, "consistency": consistency,
                                          "rounds": rounds})
    finally:
        stop_all.set()
        for worker in workers:
            worker.join(30)
        service.stop(1.0)
    return summarise(dataset, n, size, repeats, steps, rows, startup_s, config.secagg.steps_per_block)


def summarise(dataset, n, size, repeats, steps, rows, startup_s, spb) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": dataset, "n": n, "d": size, "repeats": repeats,
                           "steps_per_run": steps, "steps_per_block": spb, "startup_s": startup_s}
    for variant, vrows in rows.items():
        steady = [r["wall"] - r["setup_wall"] for r in vrows]
        steady_cpu = [r["cpu"] - r["setup_cpu"] for r in vrows]
        setups = [r["setup_wall"] for r in vrows if r["setup_wall"] > 0]
        setups_cpu = [r["setup_cpu"] for r in vrows if r["setup_wall"] > 0]
        fig = {"steps_timed": len(vrows), "blocks_timed": len(setups),
               "step_s_median": statistics.median(steady), "step_s_mean": statistics.fmean(steady),
               "step_cpu_s_median": statistics.median(steady_cpu),
               "setup_s_per_block": statistics.median(setups),
               "setup_cpu_s_per_block": statistics.median(setups_cpu),
               "consistency_round_s_median": statistics.median(r["consistency"] for r in vrows),
               # each round of a steady step (a step that set up no block), median wall seconds
               "step_rounds_s_median": {
                   kind: statistics.median(r["rounds"].get(kind, 0.0) for r in vrows
                                           if r["setup_wall"] == 0)
                   for kind in ("MaskedInput", "ConsistencySignature", "UnmaskResponse")}}
        fig["amortised_s"] = fig["step_s_median"] + fig["setup_s_per_block"] / spb
        fig["amortised_cpu_s"] = fig["step_cpu_s_median"] + fig["setup_cpu_s_per_block"] / spb
        out[variant] = fig
    auth, plain = out["authenticated"], out["unauthenticated"]
    out["ratio_wall"] = auth["amortised_s"] / plain["amortised_s"]
    out["ratio_cpu"] = auth["amortised_cpu_s"] / plain["amortised_cpu_s"]
    out["ratio_steady_step_wall"] = auth["step_s_median"] / plain["step_s_median"]
    out["ratio_setup_wall"] = auth["setup_s_per_block"] / plain["setup_s_per_block"]
    if n == TARGET_N:
        out["target_extra_le_10pct"] = out["ratio_wall"] <= 1 + TARGET_EXTRA
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=DEFAULT_PLAN,
                        help="comma-separated DATASET:N:REPEATSxSTEPS (steps per run of a variant)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps of each variant before the timed runs, per n")
    parser.add_argument("--model", default="cnn", help="every node's model (default: cnn)")
    parser.add_argument("--batch", type=int, default=256, help="dream batch B")
    parser.add_argument("--procs", type=int, default=4, help="node worker processes (at most n)")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the one CPU every process is pinned to")
    parser.add_argument("--quick", action="store_true", help="digits, n = 4, 2 x 2 steps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.plan = "digits:4:2x2"
    out = args.out or (Path(tempfile.gettempdir()) / "secagg_auth_quick.json" if args.quick else RESULTS)
    logging.basicConfig(level=logging.ERROR)
    load_start = os.getloadavg()
    pin(args.cpu)
    import grpc
    import torch

    print(f"pinned to CPU {args.cpu}; load average {load_start[0]:.2f}; model {args.model}, "
          f"B = {args.batch}; plan {args.plan}", flush=True)
    print(f"{'data':>6} {'n':>3} | {'unauth s':>8} {'auth s':>8} | {'ratio':>5} {'cpu':>5} "
          f"{'step':>5} {'setup':>5}", flush=True)
    started = time.perf_counter()
    results = []
    for item in args.plan.split(","):
        dataset, n, runs = item.split(":")
        repeats, steps = (int(v) for v in runs.split("x"))
        r = measure(dataset, int(n), repeats, steps, args)
        results.append(r)
        print(f"{dataset:>6} {int(n):>3} | {r['unauthenticated']['amortised_s']:>8.4f} "
              f"{r['authenticated']['amortised_s']:>8.4f} | {r['ratio_wall']:>5.3f} "
              f"{r['ratio_cpu']:>5.3f} {r['ratio_steady_step_wall']:>5.3f} "
              f"{r['ratio_setup_wall']:>5.2f}", flush=True)
    print("s/step amortised (median steady step + median block set-up / steps_per_block); ratio: "
          "authenticated / unauthenticated wall, cpu: the same in CPU seconds of all processes; "
          "step, setup: the ratios of the steady step and of the block set-up alone")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "grpcio": grpc.__version__, "pinned_cpu": args.cpu, "torch_threads": 1,
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "config": {"plan": args.plan, "warmup_steps_per_variant": args.warmup, "model": args.model,
                   "dream_batch": args.batch,
                   "worker_processes": args.procs, "partition": "iid",
                   "secagg": "repo defaults (complete graph, threshold: smallest majority, "
                             "steps_per_block 10, dream_clip 10)",
                   "transport": "plaintext loopback, no tokens (identity keys given to the nodes "
                                "directly; mTLS would cost both variants the same)",
                   "nodes": "identity key, no roster: they accept both variants; the check "
                            "against a roster or CA happens once per session, at SecAggBegin"},
        "meaning": {
            "amortised_s": "median steady step (wall minus block set-up) + median block set-up / "
                           "steps_per_block, seconds",
            "ratio_wall": "authenticated / unauthenticated amortised_s (the target: <= 1.10 at n = 16)",
            "ratio_cpu": "the same in CPU seconds of every process (coordinator + node workers)",
            "step_rounds_s_median": "wall seconds of each round of a steady step: the masked "
                                    "input (the nodes compute), the consistency round "
                                    "(authenticated only), the unmasking",
            "repeats x steps_per_run": "each variant runs `repeats` runs of `steps_per_run` steps, "
                                       "a new session per run, the order alternating",
        },
        "total_wall_s": time.perf_counter() - started,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
