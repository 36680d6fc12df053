"""The daemon's connection loop against a scripted fake stub: status codes -> what the node does.

No network: `connect` is injected and returns the fake; back-off sleeps are recorded, not slept.
"""

import threading

import grpc
import pytest
import torch
from torch import nn

from client_node.backoff import Backoff
from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_AUTH, EXIT_CONFIG, EXIT_OK, NodeDaemon
from client_node.node_options import NodeOptions
from codream.config import RunConfig, to_toml
from codream.node_logic import LocalData, NodeTaskLogic
from protos.codream.v1 import codream_pb2 as pb

CONFIG = RunConfig(dataset="digits", clients=2, models=("mlp",), weighting="equal")
CODE = grpc.StatusCode


class RpcError(grpc.RpcError):
    def __init__(self, code, details=""):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class Done:
    """A finished grpc future."""

    def __init__(self, value):
        self.value = value

    def result(self, timeout=None):
        if isinstance(self.value, Exception):
            raise self.value
        return self.value

    def done(self):
        return True

    def cancel(self):
        return False


class Stream:
    """The Heartbeat call: open until the node ends its request stream."""

    def __init__(self, beats):
        self.beats, self.sent = beats, []

    def result(self, timeout=None):
        self.sent = list(self.beats)  # ends once the daemon closes the membership
        return pb.HeartbeatSummary(received=len(self.sent))

    def done(self):
        return False

    def cancel(self):
        return False


class Method:
    def __init__(self, fake, name, script):
        self.fake, self.name, self.script = fake, name, list(script)

    def __call__(self, request, timeout=None):
        self.fake.calls.append((self.name, request))
        if not self.script:
            self.fake.stop.set()  # the script is spent: the operator stops the node
            return pb.Task()
        value = self.script.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    def future(self, request, timeout=None):
        if self.name == "Heartbeat":
            self.fake.streams.append(Stream(request))
            return self.fake.streams[-1]
        try:
            return Done(self(request, timeout))
        except grpc.RpcError as error:
            return Done(error)


class Exchange:
    """Exchange is SubmitResult then PullTask in one call: the fake plays both scripts."""

    def __init__(self, fake):
        self.fake = fake

    def future(self, request, timeout=None):
        try:
            if request.HasField("result"):
                self.fake.SubmitResult(request.result, timeout)
            return Done(self.fake.PullTask(request.pull, timeout))
        except grpc.RpcError as error:
            return Done(error)


class FakeCoordinator:
    def __init__(self, stop, joins=(), pulls=(), submits=(), readies=()):
        self.stop, self.calls, self.streams, self.connections = stop, [], [], 0
        self.Join = Method(self, "Join", joins)
        self.Ready = Method(self, "Ready", readies or [pb.ReadyReply()] * 10)
        self.PullTask = Method(self, "PullTask", pulls)
        self.SubmitResult = Method(self, "SubmitResult", submits or [pb.SubmitReply()] * 10)
        self.Heartbeat = Method(self, "Heartbeat", [])
        self.Exchange = Exchange(self)

    def connect(self, options):
        self.connections += 1
        return self, lambda: None

    def sent(self, name):
        return [request for called, request in self.calls if called == name]


def joined(member="m1", run="run-a", config=CONFIG, index=1):
    return pb.JoinReply(member_id=member, coordinator_run=run, run_config_toml=to_toml(config),
                        node_index=index, heartbeat_seconds=0.01)


def tiny_logic(config, index, device):
    generator = torch.Generator().manual_seed(index)
    x, y = torch.randn(12, 1, 8, 8, generator=generator), torch.arange(12) % 10
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return NodeTaskLogic(f"node-{index}", model, LocalData(x, y, x, y), config, device, seed=index)


def run_daemon(**script):
    stop = threading.Event()
    fake = FakeCoordinator(stop, **script)
    sleeps, builds = [], []

    def build(config, index, device, whole_dataset=False):
        builds.append((config, index, device))
        assert whole_dataset  # --dataset is the node's own: it trains on all of it
        return tiny_logic(config, index, device)

    options = NodeOptions("127.0.0.1:1", "node-a", ChannelSecurity(), device="cpu",
                          dataset="mnist", pull_wait=0.5)
    daemon = NodeDaemon(options, stop, connect=fake.connect, build_logic=build,
                        sleep=sleeps.append, backoff=Backoff(random_unit=lambda: 0.5))
    return daemon.run(), fake, sleeps, builds


def evaluate(sequence, round_index=0):
    return pb.Task(task_id=f"e{sequence}", round=round_index, coordinator_run="run-a",
                   sequence=sequence, evaluate=pb.Evaluate())


def shutdown():
    return pb.Task(task_id="bye", sequence=99, shutdown=pb.Shutdown(reason="done"))


def test_join_ready_pull_submit_until_shutdown():
    code, fake, sleeps, builds = run_daemon(joins=[joined()],
                                            pulls=[pb.Task(), evaluate(1), shutdown()])
    assert code == EXIT_OK and sleeps == []
    assert fake.sent("Join") == [pb.JoinRequest(node_id="node-a", protocol="codream.v1")]
    ready = fake.sent("Ready")[0]
    assert (ready.member_id, ready.weight, ready.num_samples, ready.model, ready.device,
            ready.resumed_round) == ("m1", 1.0, 12, "mlp", "cpu", -1)
    config, index, device = builds[0]
    assert (config.device, config.dataset, index, device) == ("cpu", "mnist", 1, torch.device("cpu"))
    results = fake.sent("SubmitResult")
    assert [r.WhichOneof("body") for r in results] == ["eval_report", "ack"]
    assert (results[0].member_id, results[0].task_id, results[0].sequence) == ("m1", "e1", 1)
    assert fake.sent("PullTask")[0] == pb.PullTaskRequest(member_id="m1", wait_seconds=0.5)
    beats = fake.streams[0].sent
    assert beats and beats[0] == pb.Beat(member_id="m1", sequence=0)


def test_a_stale_membership_rejoins_and_keeps_the_built_model():
    code, fake, sleeps, builds = run_daemon(
        joins=[joined("m1"), joined("m2", run="run-b")],
        # the coordinator restarted: the exchange handing in task 1 and the plain pull after it
        # both find the membership unknown; the node re-joins on the pull's refusal
        pulls=[evaluate(1), RpcError(CODE.FAILED_PRECONDITION, "unknown member"),
               RpcError(CODE.FAILED_PRECONDITION, "unknown member"), evaluate(1)],
    )
    assert code == EXIT_OK and len(builds) == 1 and fake.connections == 2
    assert sleeps == [0.2]
    assert [r.member_id for r in fake.sent("SubmitResult")] == ["m1", "m2"]
    assert fake.sent("Ready")[1].resumed_round == 0  # it holds round 0's snapshot
    assert len(fake.streams) == 2 and all(s.sent for s in fake.streams)  # both closed


def test_a_changed_run_config_rebuilds_the_model():
    other = RunConfig(dataset="digits", clients=2, models=("cnn",), weighting="equal")
    code, _, _, builds = run_daemon(
        joins=[joined("m1"), joined("m2", config=other)],
        pulls=[RpcError(CODE.UNAVAILABLE, "gone")],
    )
    assert code == EXIT_OK and [b[0].models for b in builds] == [("mlp",), ("cnn",)]


@pytest.mark.parametrize("code", [CODE.UNAUTHENTICATED, CODE.PERMISSION_DENIED])
def test_a_refused_credential_exits_3(code):
    exit_code, fake, sleeps, builds = run_daemon(joins=[RpcError(code, "bad token")])
    assert exit_code == EXIT_AUTH and builds == [] and sleeps == []


def test_join_retries_with_backoff_while_the_old_membership_closes():
    code, fake, sleeps, _ = run_daemon(
        joins=[RpcError(CODE.ALREADY_EXISTS), RpcError(CODE.UNAVAILABLE),
               RpcError(CODE.DEADLINE_EXCEEDED), joined()],
        pulls=[evaluate(1)],
    )
    assert code == EXIT_OK and sleeps == [0.2, 0.4, 0.8] and len(fake.sent("SubmitResult")) == 1


def test_a_refused_result_is_declined_with_a_skip_and_the_node_goes_on_pulling():
    code, fake, sleeps, _ = run_daemon(
        joins=[joined()], pulls=[evaluate(1), evaluate(2)],
        submits=[RpcError(CODE.INVALID_ARGUMENT, "wrong shape"), pb.SubmitReply(), pb.SubmitReply()],
    )
    assert code == EXIT_OK and sleeps == [] and len(fake.sent("Join")) == 1
    submitted = fake.sent("SubmitResult")
    assert [r.sequence for r in submitted] == [1, 1, 2]
    # the refused report is followed by a Skip naming why, so the phase need not wait for it
    assert submitted[1].WhichOneof("body") == "skip" and "wrong shape" in submitted[1].skip.reason


def test_a_stale_result_is_only_logged():
    code, fake, sleeps, _ = run_daemon(
        joins=[joined()], pulls=[evaluate(1), evaluate(2)],
        submits=[RpcError(CODE.FAILED_PRECONDITION, "phase closed"), pb.SubmitReply()],
    )
    assert code == EXIT_OK and [r.sequence for r in fake.sent("SubmitResult")] == [1, 2]


def test_a_lost_link_during_an_exchange_rejoins():
    """The reply may have carried the next task: only a new membership releases it."""
    code, fake, sleeps, _ = run_daemon(
        joins=[joined("m1"), joined("m2")], pulls=[evaluate(1), evaluate(2)],
        submits=[RpcError(CODE.UNAVAILABLE), pb.SubmitReply()],
    )
    assert code == EXIT_OK and len(fake.sent("Join")) == 2
    assert [r.member_id for r in fake.sent("SubmitResult")] == ["m1", "m2"]


def test_a_lost_link_on_a_plain_submit_is_retried_with_the_same_membership():
    """Submitting alone (the last result when stopping): retried with back-off."""
    stop = threading.Event()
    fake = FakeCoordinator(stop, submits=[RpcError(CODE.UNAVAILABLE), RpcError(CODE.UNAVAILABLE),
                                          pb.SubmitReply()])
    sleeps = []
    options = NodeOptions("127.0.0.1:1", "node-a", ChannelSecurity(), device="cpu")
    daemon = NodeDaemon(options, stop, connect=fake.connect, sleep=sleeps.append,
                        backoff=Backoff(random_unit=lambda: 0.5))
    daemon._submit(fake, pb.TaskResult(member_id="m1", task_id="t", sequence=1, ack=pb.Ack()))
    assert len(fake.sent("SubmitResult")) == 3 and sleeps == [pytest.approx(0.2, rel=0.21),
                                                               pytest.approx(0.4, rel=0.21)]


def test_a_config_the_node_cannot_build_exits_2():
    bad = pb.JoinReply(member_id="m", run_config_toml="clients = 0\n", node_index=0)
    code, _, _, builds = run_daemon(joins=[bad])
    assert code == EXIT_CONFIG and builds == []


def test_stop_before_start_exits_0_without_dialling():
    stop = threading.Event()
    stop.set()
    fake = FakeCoordinator(stop)
    options = NodeOptions("127.0.0.1:1", "node-a", ChannelSecurity())
    assert NodeDaemon(options, stop, connect=fake.connect).run() == EXIT_OK
    assert fake.connections == 0


def test_backoff_doubles_from_0_2_to_a_cap_of_5_with_20_percent_jitter():
    middle = Backoff(random_unit=lambda: 0.5)
    assert [middle.next_delay() for _ in range(7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5, 5])
    low, high = Backoff(random_unit=lambda: 0.0), Backoff(random_unit=lambda: 1.0)
    assert [low.next_delay() for _ in range(2)] == pytest.approx([0.16, 0.32])
    assert [high.next_delay() for _ in range(7)][-1] == pytest.approx(6.0)
    middle.reset()
    assert middle.next_delay() == pytest.approx(0.2)
