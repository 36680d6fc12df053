"""A node's health and metrics endpoints, alone and on real node daemons in a real run."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_OK
from client_node.node_endpoints import MEMBERSHIP_SERVICE, NodeEndpoints, observed_daemon
from client_node.node_options import NodeOptions

sys.path.insert(0, str(Path(__file__).parents[1] / "coordinator"))
from service_helpers import CALL_TIMEOUT, sample, scrape, serving, tiny_config  # noqa: E402

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT).status


def test_liveness_serves_from_the_start_and_readiness_follows_membership():
    endpoints = NodeEndpoints("127.0.0.1", 0, 0, CollectorRegistry())
    try:
        port = endpoints.health_port
        assert _status(port, "") == SERVING
        assert _status(port, MEMBERSHIP_SERVICE) == NOT_SERVING
        endpoints.set_member(True)
        assert _status(port, MEMBERSHIP_SERVICE) == SERVING
        endpoints.set_member(False)
        assert _status(port, MEMBERSHIP_SERVICE) == NOT_SERVING
        scrape(endpoints.metrics_port)  # an empty registry still answers
    finally:
        endpoints.close()
    with pytest.raises(grpc.RpcError):
        _status(port, "")


def test_endpoints_can_be_turned_off():
    endpoints = NodeEndpoints("127.0.0.1", None, None, CollectorRegistry())
    assert endpoints.health_port == 0 and endpoints.metrics_port == 0
    endpoints.close()


def test_real_daemons_report_their_tasks_calls_and_membership(tmp_path):
    config = tiny_config(tmp_path, **{"dream.global_steps": 2})
    with serving(config) as served:
        daemons = []
        for node in ("node-0", "node-1"):
            options = NodeOptions(coordinator=served.target, node_id=node, device="cpu", pull_wait=1.0,
                                  security=ChannelSecurity(token=served.tokens[node]))
            daemon, endpoints = observed_daemon(options, threading.Event(), "127.0.0.1", 0, 0)
            codes: list[int] = []
            thread = threading.Thread(target=lambda d=daemon, c=codes: c.append(d.run()), daemon=True)
            thread.start()
            daemons.append((daemon, endpoints, thread, codes))
        try:
            health_port = daemons[0][1].health_port
            deadline = time.monotonic() + CALL_TIMEOUT
            while _status(health_port, MEMBERSHIP_SERVICE) != SERVING:  # ready once joined
                assert time.monotonic() < deadline, "node-0 never became ready"
                time.sleep(0.05)
            served.start_run()
            served.wait_run()
            for _, _, thread, codes in daemons:
                thread.join(CALL_TIMEOUT)
                assert codes == [EXIT_OK]
            after = scrape(daemons[0][1].metrics_port)
            assert _status(health_port, MEMBERSHIP_SERVICE) == NOT_SERVING  # left at shutdown
            assert _status(health_port, "") == SERVING  # alive until the process ends
        finally:
            for daemon, endpoints, thread, _ in daemons:
                daemon.stop.set()
                thread.join(CALL_TIMEOUT)
                endpoints.close()

    assert sample(after, "codream_node_joins_total") == 1
    assert sample(after, "codream_node_joined") == 0
    assert sample(after, "codream_node_tasks_total", kind="dream_step", result="masked") == 2
    assert sample(after, "codream_node_tasks_total", kind="evaluate", result="eval_report") == 2
    assert sample(after, "codream_node_task_duration_seconds_count", kind="soft_labels") == 1
    assert sample(after, "codream_node_round") == 1
    assert 0.0 <= sample(after, "codream_node_accuracy") <= 1.0
    assert ("codream_node_accuracy", ()) in after
    assert sample(after, "codream_node_received_bytes_total") > 8 * 64 * 4  # at least the dreams
    assert sample(after, "codream_node_sent_bytes_total") > 0
    service = "codream.v1.Coordinator"
    for method in ("Join", "Ready"):
        assert sample(after, "grpc_client_handled_total", grpc_type="unary", grpc_service=service,
                      grpc_method=method, grpc_code="OK") == 1, method
    assert sample(after, "grpc_client_handled_total", grpc_type="unary", grpc_service=service,
                  grpc_method="Exchange", grpc_code="OK") >= 5
    assert sample(after, "grpc_client_handled_total", grpc_type="client_stream", grpc_service=service,
                  grpc_method="Heartbeat", grpc_code="OK") == 1


def test_after_run_wait_keeps_the_node_up_until_stopped(tmp_path):
    from codream.cli import make_parser

    config = tiny_config(tmp_path, **{"dream.global_steps": 1})
    with serving(config) as served:
        threads, stops, codes = [], [], []
        for node in ("node-0", "node-1"):
            token = tmp_path / f"{node}.token"
            token.write_text(served.tokens[node])
            args = make_parser().parse_args([
                "node", "--coordinator", served.target, "--node-id", node, "--token-file", str(token),
                "--device", "cpu", "--pull-wait", "1", "--listen-host", "127.0.0.1",
                "--health-port", "0", "--metrics-port", "0", "--after-run", "wait"])
            stop = threading.Event()
            thread = threading.Thread(target=lambda a=args, s=stop: codes.append(a.func(a, s)),
                                      daemon=True)
            thread.start()
            threads.append(thread)
            stops.append(stop)
        served.start_run()
        served.wait_run()
        time.sleep(1.0)  # the shutdown task has been pulled; an exiting node would be gone by now
        assert all(thread.is_alive() for thread in threads) and codes == []
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(CALL_TIMEOUT)
    assert codes == [EXIT_OK, EXIT_OK]
