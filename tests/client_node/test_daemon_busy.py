"""A coordinator too busy for a call (RESOURCE_EXHAUSTED) is backed off from, and the call
retried with the same membership: the node never re-joins for it (re-joining would cost it its
place in the round and add load). Against the scripted fake of test_daemon."""

import threading

import grpc
import pytest
from test_daemon import CODE, Done, FakeCoordinator, RpcError, Stream, evaluate, joined, run_daemon

from client_node.backoff import Backoff
from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_OK, NodeDaemon
from client_node.heartbeat import Heartbeat
from client_node.node_options import NodeOptions
from protos.codream.v1 import codream_pb2 as pb

BUSY = RpcError(CODE.RESOURCE_EXHAUSTED, "node 'node-a' already has 6 calls open; retry later")


def test_a_busy_pull_is_retried_with_the_same_membership():
    code, fake, sleeps, _ = run_daemon(joins=[joined("m1")], pulls=[BUSY, BUSY, evaluate(1)])
    assert code == EXIT_OK and len(fake.sent("Join")) == 1
    assert [r.member_id for r in fake.sent("SubmitResult")] == ["m1"]
    assert len(sleeps) == 2 and all(0 < s <= 2.4 for s in sleeps)


def test_a_busy_exchange_hands_in_the_same_result_again_without_re_joining():
    code, fake, sleeps, _ = run_daemon(
        joins=[joined("m1")], pulls=[evaluate(1), evaluate(2)],
        submits=[BUSY, BUSY, pb.SubmitReply(), pb.SubmitReply()])
    assert code == EXIT_OK and len(fake.sent("Join")) == 1
    assert [(r.member_id, r.sequence) for r in fake.sent("SubmitResult")] == [
        ("m1", 1), ("m1", 1), ("m1", 1), ("m1", 2)]


def test_a_busy_ready_is_retried():
    code, fake, _, _ = run_daemon(joins=[joined("m1")], readies=[BUSY, pb.ReadyReply()],
                                  pulls=[evaluate(1)])
    assert code == EXIT_OK and len(fake.sent("Join")) == 1 and len(fake.sent("Ready")) == 2


def test_the_unpatched_path_re_joined_on_a_busy_pull():
    """What a lost link still does (and what RESOURCE_EXHAUSTED did): a new membership."""
    code, fake, _, _ = run_daemon(joins=[joined("m1"), joined("m2")],
                                  pulls=[RpcError(CODE.UNAVAILABLE), evaluate(1)])
    assert code == EXIT_OK and len(fake.sent("Join")) == 2


def test_a_busy_plain_submit_is_retried():
    stop = threading.Event()
    fake = FakeCoordinator(stop, submits=[BUSY, BUSY, pb.SubmitReply()])
    options = NodeOptions("127.0.0.1:1", "node-a", ChannelSecurity(), device="cpu")
    daemon = NodeDaemon(options, stop, connect=fake.connect, sleep=lambda s: None)
    daemon._submit(fake, pb.TaskResult(member_id="m1", task_id="t", sequence=1, ack=pb.Ack()))
    assert len(fake.sent("SubmitResult")) == 3 and daemon.busy_retries == 2


class Refused(Done):
    """A Heartbeat future the coordinator refused as busy."""

    def exception(self, timeout=None):
        return self.value


class Stub:
    def __init__(self):
        self.opened = []

        class Method:
            def future(inner, beats):
                stream = Refused(BUSY) if not self.opened else Stream(beats)
                self.opened.append(stream)
                return stream
        self.Heartbeat = Method()


def test_a_heartbeat_refused_as_busy_is_reopened_after_a_back_off_for_the_same_membership():
    stub, now = Stub(), [0.0]
    heartbeat = Heartbeat(stub, "m1", 0.01, busy=Backoff(start=0.5, jitter=0.0), clock=lambda: now[0])
    assert heartbeat.ended()
    assert heartbeat.reopen_if_busy() and len(stub.opened) == 1  # back-off not over yet
    now[0] = 0.4
    assert heartbeat.reopen_if_busy() and len(stub.opened) == 1
    now[0] = 0.6
    assert heartbeat.reopen_if_busy() and len(stub.opened) == 2 and heartbeat.reopened == 1
    assert not heartbeat.ended()
    heartbeat.close()
    assert stub.opened[1].sent[0] == pb.Beat(member_id="m1", sequence=0)


@pytest.mark.parametrize("code", [CODE.CANCELLED, CODE.UNAVAILABLE])
def test_a_heartbeat_that_ended_otherwise_is_not_reopened(code):
    stub = Stub()
    stub.Heartbeat.future = lambda beats: Refused(RpcError(code))
    heartbeat = Heartbeat(stub, "m1", 0.01)
    assert heartbeat.ended() and not heartbeat.reopen_if_busy()
    assert isinstance(heartbeat._future.exception(), grpc.RpcError)
