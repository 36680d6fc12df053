"""The coordinator's Prometheus endpoint, scraped over HTTP while a real run goes on.

A real CoordinatorService on loopback with raw nodes; the text is parsed by prometheus-client's
own parser, so a malformed exposition fails here as it would in Prometheus.
"""

from __future__ import annotations

import time

import pytest
from service_helpers import (
    CALL_TIMEOUT,
    Code,
    assert_refused,
    sample,
    scrape,
    serve,
    serving,
    tiny_config,
)

from protos.codream.v1 import codream_pb2 as pb
from protos.serde import PROTOCOL

SERVICE = "codream.v1.Coordinator"


def _handled(samples: dict, method: str, code: str) -> float:
    return sample(samples, "grpc_server_handled_total", grpc_type="unary", grpc_service=SERVICE,
                  grpc_method=method, grpc_code=code)


def test_counters_move_during_a_round_and_the_run_is_described(tmp_path):
    config = tiny_config(tmp_path, **{"dream.global_steps": 3})
    mid_round: dict = {}

    def look_mid_round(node, task, result) -> bool:
        # At round 1's soft labels, all three dream steps are done and round 1 is not.
        if task.WhichOneof("body") == "soft_labels" and not mid_round:
            mid_round.update(scrape(served.service.metrics_port))
        return False

    with serving(config, metrics_port=0) as served:
        assert served.service.metrics_port > 0
        before = scrape(served.service.metrics_port)
        assert sample(before, "codream_members") == 0
        assert sample(before, "codream_roster_nodes") == 2
        nodes = [served.node(f"node-{i}").enter() for i in range(2)]
        joined = scrape(served.service.metrics_port)
        assert _handled(joined, "Join", "OK") == 2 and _handled(joined, "Ready", "OK") == 2
        assert sample(joined, "codream_members") == 2
        served.start_run()
        serve(nodes, intercept=look_mid_round)
        served.wait_run()
        after = scrape(served.service.metrics_port)

    assert sample(mid_round, "codream_rounds_completed_total") == 1  # round 0 (evaluation only)
    assert sample(mid_round, "codream_phase_duration_seconds_count", phase="dream_step") == 3
    assert sample(mid_round, "codream_clients_per_step_sum", phase="dream_step") == 6  # 2 nodes × 3
    assert sample(after, "codream_rounds_completed_total") == 2
    assert sample(after, "codream_round") == 1
    for phase, count in (("dream_step", 3), ("soft_labels", 1), ("acquire_knowledge", 1), ("evaluate", 2)):
        assert sample(after, "codream_phase_duration_seconds_count", phase=phase) == count, phase
    assert sample(after, "codream_round_duration_seconds_count") == 2
    assert sample(after, "codream_round_duration_seconds_sum") > 0
    assert sample(after, "codream_last_step_clients", phase="soft_labels") == 2
    assert sample(after, "codream_secure_sessions_total") >= 2  # dream steps and soft labels
    assert sample(after, "codream_dropouts_total", phase="dream_step") == 0
    for node in ("node-0", "node-1"):
        for name in ("codream_sent_bytes_total", "codream_received_bytes_total"):
            assert sample(after, name, node=node) > sample(mid_round, name, node=node) > 0, (name, node)
        assert sample(after, "codream_client_accuracy", node=node) == pytest.approx(0.5)
    assert sample(after, "codream_mean_client_accuracy") == pytest.approx(0.5)
    assert 0.0 <= sample(after, "codream_server_accuracy") <= 1.0
    assert ("codream_server_accuracy", ()) in after
    exchanges = _handled(after, "Exchange", "OK") + _handled(after, "SubmitResult", "OK")
    assert exchanges > _handled(mid_round, "Exchange", "OK") + _handled(mid_round, "SubmitResult", "OK")
    assert sample(after, "grpc_server_handled_total", grpc_type="client_stream", grpc_service=SERVICE,
                  grpc_method="Heartbeat", grpc_code="OK") <= 2


def test_refusals_are_counted_by_method_and_code(tmp_path):
    with serving(tiny_config(tmp_path), metrics_port=0) as served:
        stub = served.stub("node-0", token="not-the-token")
        assert_refused(lambda: stub.Join(pb.JoinRequest(node_id="node-0", protocol=PROTOCOL),
                                         timeout=CALL_TIMEOUT), Code.UNAUTHENTICATED)
        good = served.stub("node-1")
        assert_refused(lambda: good.Join(pb.JoinRequest(node_id="node-1", protocol="codream.v0"),
                                         timeout=CALL_TIMEOUT), Code.INVALID_ARGUMENT)
        assert_refused(lambda: good.PullTask(pb.PullTaskRequest(member_id="nobody", wait_seconds=0),
                                             timeout=CALL_TIMEOUT), Code.FAILED_PRECONDITION)
        samples = scrape(served.service.metrics_port)
    assert _handled(samples, "Join", "UNAUTHENTICATED") == 1
    assert _handled(samples, "Join", "INVALID_ARGUMENT") == 1
    assert _handled(samples, "PullTask", "FAILED_PRECONDITION") == 1
    assert _handled(samples, "Join", "OK") == 0
    assert sample(samples, "grpc_server_started_total", grpc_type="unary", grpc_service=SERVICE,
                  grpc_method="Join") == 2


def test_a_node_that_skips_is_counted_as_a_dropout(tmp_path):
    config = tiny_config(tmp_path, **{"secagg.enabled": False, "dream.global_steps": 2})

    def node_1_skips_dream_steps(node, task, result) -> bool:
        if node.node_id != "node-1" or task.WhichOneof("body") != "dream_step":
            return False
        node.submit(pb.TaskResult(member_id=node.member_id, task_id=task.task_id,
                                  sequence=task.sequence, skip=pb.Skip(reason="out of memory")))
        return True

    with serving(config, metrics_port=0) as served:
        nodes = [served.node(f"node-{i}").enter() for i in range(2)]
        served.start_run()
        serve(nodes, intercept=node_1_skips_dream_steps)
        served.wait_run()
        samples = scrape(served.service.metrics_port)
    assert sample(samples, "codream_dropouts_total", phase="dream_step") == 2
    assert sample(samples, "codream_clients_per_step_sum", phase="dream_step") == 2  # node-0 alone
    assert sample(samples, "codream_dropouts_total", phase="soft_labels") == 0


def test_no_endpoint_unless_asked_and_the_port_is_released_on_stop(tmp_path):
    with serving(tiny_config(tmp_path)) as served:
        assert served.service.metrics_port == 0 and served.service.metrics_endpoint is None
    with serving(tiny_config(tmp_path), metrics_port=0) as served:
        port = served.service.metrics_port
        scrape(port)
    with pytest.raises(OSError):
        scrape(port)


def test_a_taken_metrics_port_fails_the_start(tmp_path):
    with serving(tiny_config(tmp_path), metrics_port=0) as served:
        taken = served.service.metrics_port
        with pytest.raises(OSError):
            with serving(tiny_config(tmp_path / "second"), metrics_port=taken):
                pass


def test_streamed_replies_are_counted_and_a_vanished_peer_is_cancelled(tmp_path):
    """Server reflection is a bidirectional stream: the interceptor's streaming path counts it,
    and a client that goes away mid-stream is not counted as an UNKNOWN server error."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    labels = {"grpc_type": "bidi_stream", "grpc_service": "grpc.reflection.v1alpha.ServerReflection",
              "grpc_method": "ServerReflectionInfo"}
    with serving(tiny_config(tmp_path), metrics_port=0) as served:
        assert SERVICE in ProtoReflectionDescriptorDatabase(served.bare_channel()).get_services()
        served.channels[-1].close()  # the stream is still open: this ends it from the client side
        deadline = time.monotonic() + CALL_TIMEOUT

        def handled(samples: dict) -> dict[str, float]:
            return {code: sample(samples, "grpc_server_handled_total", grpc_code=code, **labels)
                    for code in ("OK", "CANCELLED", "UNKNOWN")}

        while not sum(handled(samples := scrape(served.service.metrics_port)).values()):
            assert time.monotonic() < deadline, "the ended stream was never counted"
            time.sleep(0.05)
    assert sample(samples, "grpc_server_started_total", **labels) == 1
    # The request stream either ends (OK) or raises under the handler (CANCELLED), by timing.
    assert handled(samples)["UNKNOWN"] == 0 and sum(handled(samples).values()) == 1, handled(samples)
