"""Benchmark: what the Prometheus instrumentation costs, against the same work without it.

1. Per RPC: unary calls over real gRPC on loopback (the standard health service's Check, a
   real handler with a tiny message, so the fixed per-call cost dominates and any overhead
   shows), through a plain server and channel vs through ServerMetricsInterceptor and
   ClientMetricsInterceptor. Batches alternate plain/instrumented so drift hits both alike.
2. Per phase: the coordinator's bookkeeping for one broadcast phase of n nodes
   (CoordinatorMetrics.phase + one wire() per node), against the measured wall time of one
   secure digits dream step over gRPC from benchmarks/results/rounds.json when present.

Writes benchmarks/results/metrics_overhead.json and prints ratios.

    python benchmarks/metrics_overhead.py            # ~1 minute
    python benchmarks/metrics_overhead.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from coordinator.run_metrics import CoordinatorMetrics  # noqa: E402
from protos.grpc_metrics import ClientMetricsInterceptor, ServerMetricsInterceptor  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _server(interceptors: list) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=interceptors)
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _calls_per_second(stub: health_pb2_grpc.HealthStub, calls: int) -> float:
    request = health_pb2.HealthCheckRequest(service="")
    started = time.perf_counter()
    for _ in range(calls):
        stub.Check(request, timeout=10)
    return (time.perf_counter() - started) / calls


def per_rpc(calls: int, batches: int) -> dict:
    registry = CollectorRegistry()
    plain_server, plain_port = _server([])
    metered_server, metered_port = _server([ServerMetricsInterceptor(registry)])
    plain = grpc.insecure_channel(f"127.0.0.1:{plain_port}")
    metered = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{metered_port}"),
                                     ClientMetricsInterceptor(registry))
    stubs = {"plain": health_pb2_grpc.HealthStub(plain), "metered": health_pb2_grpc.HealthStub(metered)}
    for stub in stubs.values():  # warm up both connections
        _calls_per_second(stub, 200)
    seconds: dict[str, list[float]] = {"plain": [], "metered": []}
    for _ in range(batches):
        for name, stub in stubs.items():
            seconds[name].append(_calls_per_second(stub, calls))
    plain.close()
    metered.close()
    plain_server.stop(0)
    metered_server.stop(0)
    counted = registry.get_sample_value(
        "grpc_server_handled_total", {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health",
                                      "grpc_method": "Check", "grpc_code": "OK"})
    expected = 200 + calls * batches
    assert counted == expected, (counted, expected)  # the instrumented path really counted
    plain_s, metered_s = statistics.median(seconds["plain"]), statistics.median(seconds["metered"])
    return {"calls_per_batch": calls, "batches": batches, "plain_us_per_call": plain_s * 1e6,
            "metered_us_per_call": metered_s * 1e6, "added_us_per_call": (metered_s - plain_s) * 1e6,
            "ratio": metered_s / plain_s}


def per_phase(nodes: int, repeats: int) -> dict:
    metrics = CoordinatorMetrics()
    node_ids = [f"node-{i}" for i in range(nodes)]
    for node in node_ids:  # label children exist after the first round, as in a real run
        metrics.wire(node, 1, 1)
    started = time.perf_counter()
    for _ in range(repeats):
        metrics.phase("dream_step", 0.05, nodes, 0)
        for node in node_ids:
            metrics.wire(node, 70_000, 66_000)
    bookkeeping = (time.perf_counter() - started) / repeats
    result = {"nodes": nodes, "bookkeeping_us_per_phase": bookkeeping * 1e6}
    rounds = RESULTS / "rounds.json"
    if rounds.is_file():
        rows = [r for r in json.loads(rounds.read_text()).get("results", []) if r.get("n") == nodes]
        if rows:
            step = rows[0]["grpc_secure"]["step_s_median"]
            result.update({"grpc_secure_step_s (rounds.json)": step, "ratio": (step + bookkeeping) / step})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, batches = (300, 4) if args.quick else (2000, 10)
    rpc = per_rpc(calls, batches)
    phases = [per_phase(n, 200 if args.quick else 2000) for n in (4, 16, 64)]
    report = {"benchmark": "metrics_overhead", "quick": args.quick, "python": platform.python_version(),
              "grpc": grpc.__version__, "per_rpc": rpc, "per_phase": phases}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("metrics_overhead_quick.json" if args.quick else "metrics_overhead.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"per RPC (health Check on loopback): plain {rpc['plain_us_per_call']:.0f} µs, instrumented "
          f"{rpc['metered_us_per_call']:.0f} µs → ratio {rpc['ratio']:.3f} "
          f"(+{rpc['added_us_per_call']:.0f} µs per call, both ends)")
    for phase in phases:
        line = f"per phase, n={phase['nodes']}: bookkeeping {phase['bookkeeping_us_per_phase']:.1f} µs"
        if "ratio" in phase:
            line += f" → ratio {phase['ratio']:.5f} against a secure digits step over gRPC"
        print(line)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
