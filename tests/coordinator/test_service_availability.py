"""Availability under abuse, over real gRPC on 127.0.0.1: floods that hold nothing members need.

While a 3-node secure run goes on (real node daemons), 5,000 unauthenticated Joins arrive from
8 threads and 300 Heartbeat streams that never beat are opened with the bearer token of a roster
node that never joins. Admission refuses the Joins at once (UNAUTHENTICATED) and all but that
node's budget of streams (RESOURCE_EXHAUSTED); the idle ones are closed after the liveness
window. The run completes with every honest node in every step, each on its first membership.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures

import grpc
import pytest
from service_helpers import CALL_TIMEOUT, metrics, serving, tiny_config

from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_OK, NodeDaemon
from client_node.node_options import NodeOptions
from coordinator.dispatch import Dispatcher
from coordinator.federation import Federation
from coordinator.membership import Membership
from coordinator.security import ServerSecurity, generate_tokens
from coordinator.servicer import CoordinatorServicer
from protos.codream.v1 import codream_pb2 as pb
from protos.codream.v1 import codream_pb2_grpc as pb_grpc
from protos.serde import PROTOCOL

pytestmark = pytest.mark.integration

HONEST = ("node-0", "node-1", "node-2")
JOINS, JOIN_THREADS, IDLE_STREAMS = 5000, 8, 300
LIVENESS = 4.0  # seconds: the idle streams are closed after this


def _never(stop: threading.Event):
    """A request stream that sends nothing until `stop`."""
    stop.wait()
    return
    yield  # a generator


def _join_flood(target: str, count: int, threads: int) -> tuple[Counter, float]:
    """`count` Joins without any credential, over `threads` threads; their codes and seconds."""
    codes: Counter = Counter()
    lock = threading.Lock()
    per_thread = count // threads

    def flood() -> None:
        channel = grpc.insecure_channel(target)
        stub = pb_grpc.CoordinatorStub(channel)
        mine: Counter = Counter()
        for _ in range(per_thread):
            try:
                stub.Join(pb.JoinRequest(node_id="node-0", protocol=PROTOCOL), timeout=CALL_TIMEOUT)
                mine["OK"] += 1
            except grpc.RpcError as error:
                mine[error.code().name] += 1
        channel.close()
        with lock:
            codes.update(mine)

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(flood) for _ in range(threads)]:
            future.result()
    return codes, time.perf_counter() - started


def _idle_heartbeats(channel: grpc.Channel, count: int, stop: threading.Event) -> list[grpc.Future]:
    stub = pb_grpc.CoordinatorStub(channel)
    return [stub.Heartbeat.future(_never(stop), timeout=60.0) for _ in range(count)]


def _codes(calls: list[grpc.Future], timeout: float) -> Counter:
    codes: Counter = Counter()
    for call in calls:
        try:
            call.result(timeout=timeout)
            codes["OK"] += 1
        except grpc.FutureTimeoutError:
            codes["STILL_OPEN"] += 1
        except grpc.RpcError as error:
            codes[error.code().name] += 1
    return codes


def test_floods_of_joins_and_idle_heartbeats_leave_a_secure_run_whole(tmp_path):
    config = tiny_config(tmp_path / "run", clients=4, **{"dream.global_steps": 2})
    with serving(config, min_nodes=3, liveness_seconds=LIVENESS, heartbeat_seconds=0.5) as served:
        daemons = []
        for node in HONEST:
            options = NodeOptions(coordinator=served.target, node_id=node, device="cpu", pull_wait=1.0,
                                  security=ChannelSecurity(token=served.tokens[node]))
            daemon, codes = NodeDaemon(options), []
            thread = threading.Thread(target=lambda d=daemon, c=codes: c.append(d.run()), daemon=True)
            thread.start()
            daemons.append((daemon, thread, codes))
        assert len(served.service.membership.wait_for(3, 60.0)) == 3  # built and ready
        stop_idle = threading.Event()
        idle_channel = served.channel("node-3")  # a roster node that never joins
        idle = _idle_heartbeats(idle_channel, IDLE_STREAMS, stop_idle)
        started = time.perf_counter()
        served.start_run()
        join_codes, join_seconds = _join_flood(served.target, JOINS, JOIN_THREADS)
        try:
            summary = served.wait_run()
            run_seconds = time.perf_counter() - started
            idle_codes = _codes(idle, CALL_TIMEOUT)  # the admitted ones: closed once idle
        finally:
            stop_idle.set()
            for daemon, thread, _ in daemons:
                daemon.stop.set()
                thread.join(CALL_TIMEOUT)
        memberships = served.service.membership.joins
        refused = dict(served.service.admission.refused)
        rounds = metrics(config.out)["rounds"]

    figures = (f"{JOINS} unauthenticated joins in {join_seconds:.2f} s ({JOINS / join_seconds:.0f}/s "
               f"refused: {dict(join_codes)}); {IDLE_STREAMS} idle heartbeats: {dict(idle_codes)}; "
               f"admission refused {refused}; run {run_seconds:.1f} s")
    print(figures)
    assert join_codes == Counter({"UNAUTHENTICATED": JOINS}), figures
    # node-3's budget of open calls held a few streams until they were closed as idle
    assert idle_codes["RESOURCE_EXHAUSTED"] >= IDLE_STREAMS - 6 and idle_codes["OK"] == 0, figures
    assert idle_codes["CANCELLED"] + idle_codes["RESOURCE_EXHAUSTED"] == IDLE_STREAMS, figures
    assert [codes for _, _, codes in daemons] == [[EXIT_OK]] * 3
    assert memberships == 3, "an honest node re-joined"  # each kept its first membership
    for round_metrics in rounds:
        assert sorted(round_metrics["clients"]) == list(HONEST)
        assert round_metrics.get("excluded", {}) == {}, round_metrics["excluded"]
    assert rounds[-1]["fewest_clients_per_dream_step"] == 3
    assert sorted(summary["final_client_accuracy"]) == list(HONEST)


def test_the_unpatched_server_let_idle_heartbeats_take_every_worker():
    """The old set-up: the core's cap of 2n + 8 calls, taken before anyone is authenticated,
    and no idle close: 14 never-beating streams make a member's Join RESOURCE_EXHAUSTED."""
    roster = ("node-0", "node-1", "node-2")
    tokens = generate_tokens(roster)
    security = ServerSecurity(tokens=tokens)
    membership = Membership(roster)
    federation = Federation(membership, Dispatcher(membership, "run"), "", 1.0)
    workers = 2 * len(roster) + 8
    server = grpc.server(futures.ThreadPoolExecutor(workers), maximum_concurrent_rpcs=workers)
    pb_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(federation, security), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    channels = []
    try:
        def channel(node):
            from client_node.channel import open_channel
            made = open_channel(f"127.0.0.1:{port}", node, ChannelSecurity(token=tokens[node]))
            channels.append(made)
            grpc.channel_ready_future(made).result(timeout=CALL_TIMEOUT)
            return made

        idle = _idle_heartbeats(channel("node-2"), workers, stop)
        time.sleep(0.5)  # every stream is in a handler, waiting for its first beat
        stub = pb_grpc.CoordinatorStub(channel("node-0"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Join(pb.JoinRequest(node_id="node-0", protocol=PROTOCOL), timeout=CALL_TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        stop.set()
        for call in idle:
            call.cancel()
        for made in channels:
            made.close()
        server.stop(0)


def test_idle_reflection_streams_share_a_small_cap_and_members_still_get_in(tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    with serving(tiny_config(tmp_path / "run")) as served:
        stop = threading.Event()
        stub = reflection_pb2_grpc.ServerReflectionStub(served.bare_channel())
        calls = [stub.ServerReflectionInfo(_never(stop), timeout=60.0) for _ in range(20)]
        try:
            deadline = time.monotonic() + CALL_TIMEOUT
            while sum(c.done() for c in calls) < 20 - 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            refused = [c for c in calls if c.done()]
            assert len(refused) == 16, len(refused)
            assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            node = served.node("node-0").enter()  # a member's calls are not behind them
            assert served.service.membership.get(node.member_id).node_id == "node-0"
        finally:
            stop.set()
            for call in calls:
                call.cancel()
