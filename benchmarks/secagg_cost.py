"""Benchmark of secagg (Bonawitz et al. 2017 / SecAgg+): client and server seconds vs the cipher.

Runs each configuration end to end in one process (every client masks, the server unmasks and the
sum is checked) for two steps of a session, times every client's masking and the server's step at
the second step (warm, as a client in its own process would run it), and compares both with the
cipher limit measured on this machine: the same number of AES-256-CTR mask expansions (keystream
+ in-place uint32 add) plus the same number of X25519 key agreements. Writes
benchmarks/results/secagg.json and prints a table.

    python benchmarks/secagg_cost.py            # full run (a few minutes on 2 cores)
    python benchmarks/secagg_cost.py --quick    # small sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from secagg import InProcessSession, SecAggConfig  # noqa: E402
from secagg.prg import MaskExpander  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "secagg.json"

FULL = [  # (n, d, dropped fraction, graph)
    (10, 100_000, 0.0, "complete"),
    (10, 100_000, 0.1, "complete"),
    (10, 1_000_000, 0.0, "complete"),
    (10, 1_000_000, 0.1, "complete"),
    (100, 100_000, 0.0, "complete"),
    (100, 100_000, 0.1, "complete"),
    (100, 1_000_000, 0.0, "complete"),
    (100, 1_000_000, 0.1, "complete"),
    (500, 100_000, 0.1, "complete"),
    (1000, 100_000, 0.1, "secagg+"),
]
QUICK = [(10, 10_000, 0.1, "complete"), (50, 10_000, 0.1, "secagg+")]


def keystream_rates(nbytes: int = 4_000_000, reps: int = 30) -> dict[str, float]:
    """GB/s of AES-256-CTR and ChaCha20 keystream on this machine (update_into on zeros)."""
    zeros, out, key = bytes(nbytes), bytearray(nbytes + 16), os.urandom(32)
    ciphers = {
        "aes256_ctr": lambda: Cipher(algorithms.AES(key), modes.CTR(bytes(16))),
        "chacha20": lambda: Cipher(algorithms.ChaCha20(key, bytes(16)), None),
    }
    rates = {}
    for name, make in ciphers.items():
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            make().encryptor().update_into(zeros, out)
            best = min(best, time.perf_counter() - start)
        rates[name] = nbytes / best / 1e9
    return rates


class CipherLimit:
    """Seconds for E mask expansions (keystream + uint32 add) of length L plus K key agreements."""

    def __init__(self) -> None:
        self._expansion: dict[int, float] = {}
        a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
        reps = 2000
        start = time.perf_counter()
        for _ in range(reps):
            a.exchange(b)
        self.agreement_s = (time.perf_counter() - start) / reps

    def expansion_s(self, length: int) -> float:
        """Median over 7 trials of the seconds per expansion; re-measured before every case."""
        expander, acc = MaskExpander(length), np.zeros(length, dtype=np.uint32)
        per_trial = max(5, 4_000_000 // length)
        trials = []
        for _ in range(7):
            keys = [os.urandom(32) for _ in range(per_trial)]
            start = time.perf_counter()
            for key in keys:
                expander.add_into(acc, key)
            trials.append((time.perf_counter() - start) / per_trial)
        self._expansion[length] = statistics.median(trials)
        return self._expansion[length]

    def seconds(self, expansions: int, agreements: int, length: int) -> float:
        return expansions * self._expansion[length] + agreements * self.agreement_s


def _timed_setup(server, clients) -> tuple[dict[int, float], float]:
    """Rounds 0-1 of a block, timed per client and for the server's relaying."""
    n = len(clients)
    client_setup = {i: 0.0 for i in range(n)}
    server_setup = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        advert = clients[i].advertise_keys()
        t1 = time.perf_counter()
        server.receive_advertise(advert)
        client_setup[i] += t1 - t0
        server_setup += time.perf_counter() - t1
    for i in range(n):
        t0 = time.perf_counter()
        directory = server.key_directory(i)
        t1 = time.perf_counter()
        shares = clients[i].share_keys(directory)
        t2 = time.perf_counter()
        server.receive_share_keys(shares)
        client_setup[i] += t2 - t1
        server_setup += (t1 - t0) + (time.perf_counter() - t2)
    for i in range(n):
        t0 = time.perf_counter()
        delivery = server.share_delivery(i)
        t1 = time.perf_counter()
        clients[i].receive_shares(delivery)
        client_setup[i] += time.perf_counter() - t1
        server_setup += t1 - t0
    return client_setup, server_setup


def _timed_step(server, clients, step: int, rng, d: int, dropped: set[int]):
    """One step: every client not in `dropped` masks (timed), then unmasking (timed)."""
    n = len(clients)
    inputs = {i: rng.uniform(-0.5, 0.5, d).astype(np.float32) for i in range(n) if i not in dropped}
    client_mask, server_step = {}, 0.0
    for i in sorted(inputs):
        t0 = time.perf_counter()
        message = clients[i].masked_input(step, inputs[i])
        t1 = time.perf_counter()
        server.receive_masked_input(message)
        client_mask[i] = t1 - t0
        server_step += time.perf_counter() - t1
    client_unmask = {}
    t0 = time.perf_counter()
    survivors = server.close_inputs()
    requests = {i: server.unmask_request(i) for i in survivors}
    server_step += time.perf_counter() - t0
    for i in survivors:
        t0 = time.perf_counter()
        response = clients[i].unmask(requests[i])
        t1 = time.perf_counter()
        server.receive_unmask(response)
        client_unmask[i] = t1 - t0
        server_step += time.perf_counter() - t1
    t0 = time.perf_counter()
    result = server.finish_step()
    finish = time.perf_counter() - t0
    return client_mask, client_unmask, server_step + finish, finish, inputs, result


def run_case(n: int, d: int, frac: float, graph: str, limit: CipherLimit) -> dict:
    config = SecAggConfig(n_clients=n, dim=d, clip=1.0, graph=graph, steps_per_block=1)
    session = InProcessSession.create(config)
    server, clients = session.server, session.clients
    rng = np.random.default_rng(n + d)
    dropped = set(rng.choice(n, int(round(frac * n)), replace=False).tolist())

    # Block 0 (setup + step 0) warms every client up: its scratch buffers exist, as they would in
    # deployment, where each client runs in its own process for a whole session. Block 1 (setup +
    # step 1) is the one timed. Clients drop at step 1, so its server step also unmasks the
    # dropped clients' pairwise masks.
    _timed_setup(server, clients)
    cold_mask, _, _, _, _, _ = _timed_step(server, clients, 0, rng, d, set())
    client_setup, server_setup = _timed_setup(server, clients)
    client_mask, client_unmask, server_step, finish, inputs, result = _timed_step(
        server, clients, 1, rng, d, dropped
    )
    survivors = result.survivors
    expected = np.sum([inputs[i].astype(np.float64) for i in survivors], axis=0)
    max_err = float(np.abs(result.total - expected).max())
    assert max_err <= result.error_bound, (max_err, result.error_bound)

    length = config.vector_length
    limit.expansion_s(length)  # measured now, under the same machine load as the case
    neighbours = {i: len(clients[i].alive) for i in survivors}  # after the step: minus dropped
    degree = int(statistics.median(len(server.graph[i]) for i in survivors))
    client_limit = limit.seconds(degree + 1, degree, length)  # self mask + one per neighbour
    pairs = sum(len(server.graph[v] & set(survivors)) for v in dropped)
    server_limit = limit.seconds(len(survivors) + pairs, pairs, length)
    med_mask = statistics.median(client_mask.values())
    med_setup = statistics.median(client_setup.values())
    med_unmask = statistics.median(client_unmask.values())
    return {
        "n": n,
        "d": d,
        "graph": graph,
        "dropped_fraction": frac,
        "dropped": len(dropped),
        "threshold": config.threshold,
        "neighbourhood": config.neighbourhood_size,
        "client_setup_s": med_setup,
        "client_mask_s": med_mask,
        "client_mask_first_step_s": statistics.median(cold_mask.values()),
        "client_unmask_s": med_unmask,
        "client_total_s": med_setup + med_mask + med_unmask,
        "client_mask_limit_s": client_limit,
        "client_mask_ratio": med_mask / client_limit,
        "server_setup_s": server_setup,
        "server_step_s": server_step,
        "server_finish_step_s": finish,
        "server_total_s": server_setup + server_step,
        "server_limit_s": server_limit,
        "server_step_ratio": server_step / server_limit,
        "server_expansions": len(survivors) + pairs,
        "server_agreements": pairs,
        "max_abs_error": max_err,
        "error_bound": result.error_bound,
        "mean_live_neighbours": statistics.mean(neighbours.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rates = keystream_rates()
    limit = CipherLimit()
    print(f"keystream GB/s: {rates}; X25519 agreement {limit.agreement_s * 1e6:.1f} us")
    rows = []
    header = (
        f"{'n':>5} {'d':>8} {'graph':>8} {'drop':>5} | {'cl setup':>8} {'cl mask':>8} "
        f"{'limit':>7} {'ratio':>5} | {'srv step':>8} {'limit':>7} {'ratio':>5} "
        f"{'srv tot':>8}"
    )
    print(header)
    for n, d, frac, graph in QUICK if args.quick else FULL:
        row = run_case(n, d, frac, graph, limit)
        rows.append(row)
        print(
            f"{n:>5} {d:>8} {graph:>8} {frac:>5.0%} | {row['client_setup_s']:>8.3f} "
            f"{row['client_mask_s']:>8.3f} {row['client_mask_limit_s']:>7.3f} "
            f"{row['client_mask_ratio']:>5.2f} | {row['server_step_s']:>8.3f} "
            f"{row['server_limit_s']:>7.3f} {row['server_step_ratio']:>5.2f} "
            f"{row['server_total_s']:>8.3f}",
            flush=True,
        )
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "prg": "aes256_ctr",
        "keystream_gb_per_s": rates,
        "x25519_agreement_s": limit.agreement_s,
        "expansion_s": {str(k): v for k, v in limit._expansion.items()},
        "client_mask_timing": (
            "client_mask_s: median over clients of masked_input at step 1, the second step of the "
            "session (each client already masked step 0, so its scratch buffers are warm, as for a "
            "client that runs in its own process for a whole session); all clients share this "
            "process. client_mask_first_step_s: the same at step 0 (first call, cold). "
            "client_mask_limit_s: (neighbours + 1) AES-256-CTR expansions (keystream + in-place "
            "uint32 add over the whole vector, one warm buffer) + neighbours X25519 agreements, "
            "measured right after the case"
        ),
        "server_step_timing": (
            "setup and step of block 1 (steps_per_block = 1), in which the dropped clients drop"
        ),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
