"""What operators rely on: the health service, server reflection, and mTLS on the node port."""

from __future__ import annotations

import threading

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from service_helpers import (
    CALL_TIMEOUT,
    Code,
    assert_refused,
    metrics,
    serve,
    serving,
    tiny_config,
)

from client_node.channel import ChannelSecurity
from codream.cli.dev_certificates import generate_dev_pki
from coordinator.security import ServerSecurity
from coordinator.service import SERVICE_NAME
from protos.codream.v1 import codream_pb2 as pb
from protos.codream.v1 import codream_pb2_grpc as pb_grpc
from protos.serde import PROTOCOL

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def served(tmp_path):
    with serving(tiny_config(tmp_path / "run")) as served:
        yield served


def _health(served) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(served.bare_channel(served.service.health_port))


def _status(health, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT).status


# ---- health -----------------------------------------------------------------------------------
def test_health_reports_serving_for_the_server_and_the_coordinator_service(served):
    assert SERVICE_NAME == "codream.v1.Coordinator"
    assert served.service.health_port not in (0, served.service.port)
    health = _health(served)
    assert _status(health, "") == SERVING
    assert _status(health, SERVICE_NAME) == SERVING
    assert_refused(lambda: _status(health, "codream.v1.Nope"), Code.NOT_FOUND)


def test_health_turns_not_serving_as_soon_as_stop_begins(served):
    """NOT_SERVING during the grace period, while an in-flight call still drains."""
    node = served.node("node-0").enter()  # its open Heartbeat keeps stop(grace) waiting
    late = pb_grpc.CoordinatorStub(served.channel("node-1"))
    health = _health(served)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=CALL_TIMEOUT)
    assert next(watch).status == SERVING

    stopper = threading.Thread(target=served.service.stop, args=(CALL_TIMEOUT,), name="stop")
    stopper.start()
    try:
        assert next(watch).status == NOT_SERVING  # pushed when the stop begins
        assert stopper.is_alive()  # still in its grace period: the heartbeat is open
        assert _status(health, "") == NOT_SERVING
        assert _status(health, SERVICE_NAME) == NOT_SERVING
        error = assert_refused(lambda: late.Join(pb.JoinRequest(node_id="node-1", protocol=PROTOCOL),
                                                 timeout=CALL_TIMEOUT), Code.UNAVAILABLE)
        assert error.details()
    finally:
        node.leave()  # the last in-flight call ends, so the stop need not wait out its grace
        stopper.join(CALL_TIMEOUT)
    assert not stopper.is_alive()
    watch.cancel()


# ---- reflection -------------------------------------------------------------------------------
def test_reflection_on_the_main_port_describes_the_coordinator_service(served):
    database = ProtoReflectionDescriptorDatabase(served.bare_channel())
    services = set(database.get_services())
    assert {SERVICE_NAME, "grpc.reflection.v1alpha.ServerReflection"} <= services
    service = descriptor_pool.DescriptorPool(database).FindServiceByName(SERVICE_NAME)
    assert [m.name for m in service.methods] == ["Join", "Ready", "Heartbeat", "PullTask", "SubmitResult",
                                                "Exchange"]
    heartbeat = service.methods_by_name["Heartbeat"]
    assert heartbeat.client_streaming and not heartbeat.server_streaming
    assert service.methods_by_name["SubmitResult"].input_type.full_name == "codream.v1.TaskResult"


# ---- mTLS -------------------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path):
    return generate_dev_pki(tmp_path / "pki", ["node-0", "node-1"])


def _node_security(pki, node_id: str | None) -> ChannelSecurity:
    if node_id is None:
        return ChannelSecurity(ca_file=str(pki.ca_cert))
    return ChannelSecurity(ca_file=str(pki.ca_cert), cert_file=str(pki.node_certs[node_id]),
                           key_file=str(pki.node_keys[node_id]))


def _join(channel, node_id: str = "node-0") -> pb.JoinReply:
    return pb_grpc.CoordinatorStub(channel).Join(pb.JoinRequest(node_id=node_id, protocol=PROTOCOL),
                                                 timeout=CALL_TIMEOUT)


def test_mtls_admits_a_node_by_its_certificate_and_refuses_one_without(tmp_path, pki):
    security = ServerSecurity(cert_file=str(pki.server_cert), key_file=str(pki.server_key),
                              client_ca_file=str(pki.ca_cert))
    config = tiny_config(tmp_path / "run", **{"secagg.enabled": False})
    with serving(config, security=security) as served:
        # No client certificate: the TLS handshake fails, no call reaches the coordinator.
        bare = served.channel("node-0", security=_node_security(pki, None), wait_ready=False)
        assert_refused(lambda: _join(bare), Code.UNAVAILABLE)
        # A certificate from another CA, and plaintext, fail the same way.
        stranger = generate_dev_pki(tmp_path / "other-pki", ["node-0"])
        foreign = ChannelSecurity(ca_file=str(pki.ca_cert), cert_file=str(stranger.node_certs["node-0"]),
                                  key_file=str(stranger.node_keys["node-0"]))
        assert_refused(lambda: _join(served.channel("node-0", security=foreign, wait_ready=False)),
                       Code.UNAVAILABLE)
        assert_refused(lambda: _join(served.channel("node-0", security=ChannelSecurity(),
                                                    wait_ready=False)), Code.UNAVAILABLE)
        # A valid certificate is the identity: it cannot claim another node id.
        impostor = served.channel("node-0", security=_node_security(pki, "node-1"))
        assert_refused(lambda: _join(impostor), Code.PERMISSION_DENIED,
                       "certificate identifies node 'node-1', metadata claims 'node-0'")
        # The health port stays plaintext for the probes.
        assert _status(_health(served), "") == SERVING
        # Nodes with their own certificates join and run to the end.
        nodes = [served.node(n, security=_node_security(pki, n)).enter() for n in ("node-0", "node-1")]
        assert [n.member_id != "" for n in nodes] == [True, True]
        served.start_run()
        serve(nodes, done=served.finished)
        served.wait_run()
        assert sorted(metrics(config.out)["rounds"][-1]["clients"]) == ["node-0", "node-1"]


def test_a_plaintext_main_port_is_not_reachable_over_tls(served, pki):
    """The other way round: a TLS node cannot talk to a plaintext coordinator by mistake."""
    channel = served.channel("node-0", security=_node_security(pki, "node-0"), wait_ready=False)
    assert_refused(lambda: _join(channel), Code.UNAVAILABLE)
    assert grpc.channel_ready_future(served.channel("node-0")).result(timeout=CALL_TIMEOUT) is None


# ---- a finished run (what a Kubernetes pod restart meets) --------------------------------------
def test_a_restarted_coordinator_of_a_finished_run_needs_no_nodes_and_then_holds(tmp_path):
    config = tiny_config(tmp_path / "run")
    with serving(config) as first:
        nodes = [first.node(f"node-{i}").enter() for i in range(2)]
        first.start_run()
        serve(nodes)
        finished = first.wait_run()
    # join_timeout 0.5 s: were it to wait for nodes, none come and the run would time out
    with serving(config, join_timeout=0.5) as restarted:
        restarted.start_run()
        again = restarted.wait_run(timeout=CALL_TIMEOUT)
        restarted.service.hold()
        stub = restarted.stub("node-0")
        assert_refused(lambda: stub.Join(pb.JoinRequest(node_id="node-0", protocol=PROTOCOL),
                                         timeout=CALL_TIMEOUT), Code.UNAVAILABLE, "is complete")
        health = _health(restarted)
        assert _status(health, SERVICE_NAME) == SERVING  # held: still Ready for its pod
    assert again["final_mean_client_accuracy"] == finished["final_mean_client_accuracy"]
    assert [r["round"] for r in metrics(config.out)["rounds"]] == [0, 1]
