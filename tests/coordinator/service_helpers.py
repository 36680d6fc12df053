"""Shared helpers for the coordinator service tests: a real server on loopback, raw nodes.

`serving(...)` starts a `CoordinatorService` on 127.0.0.1 port 0 (health port 0) with bearer
tokens, optionally drives `service.run()` in a background thread, hands out channels opened
with `client_node.channel.open_channel`, and always stops the service and closes every channel.
A `RawNode` speaks the wire protocol with the generated stub; its answers come from a real
`TaskRunner` (so secure aggregation is the node's own code) over a scripted task logic that
returns made-up but well-formed replies instantly.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from client_node.channel import ChannelSecurity, open_channel
from client_node.task_runner import TaskRunner
from codream.aggregation import Contribution
from codream.config import RunConfig, build, dotted, merge
from codream.messages import (
    Ack,
    AcquireKnowledge,
    DreamStep,
    EvalReport,
    Evaluate,
    LoadParameters,
    SoftLabels,
    TrainLocal,
    TrainReport,
)
from codream.soft_labels import soft_label_size
from coordinator.network_transport import Timeouts
from coordinator.security import ServerSecurity, generate_tokens
from coordinator.service import CoordinatorService, CoordinatorSettings
from protos.codream.v1 import codream_pb2 as pb
from protos.codream.v1 import codream_pb2_grpc as pb_grpc
from protos.serde import PROTOCOL

CALL_TIMEOUT = 30.0  # generous: the machine is small and shared
RUN_TIMEOUT = 120.0
DIGITS_CLASSES = 10
DIGITS_SHAPE = (1, 8, 8)  # one digits image's (C, H, W), reported at Ready
DREAM_SIZE = 8 * 1 * 8 * 8  # dream.batch_size x digits' (C, H, W)
Code = grpc.StatusCode

TINY = {
    "dataset": "digits", "clients": 2, "rounds": 1, "warmup_epochs": 0, "local_epochs": 0,
    "partition": "iid", "models": ["mlp"], "device": "cpu", "seed": 3,
    "dream": {"batch_size": 8, "global_steps": 2},
    "server_model": {"steps": 5, "batch_size": 8},
    "distill": {"dream_batch_size": 8, "buffer_batches": 1, "epochs": 1},
    "train": {"batch_size": 64},
}


def tiny_config(out: Path, **overrides: Any) -> RunConfig:
    """The smallest CoDream run on digits; overrides by dotted name (`**{"secagg.enabled": False}`)."""
    return build(RunConfig, merge(TINY, dotted({"out": str(out), **overrides})))


# ---- a node's scripted task logic -------------------------------------------------------------
class ScriptedLogic:
    """Answers every method task at once with well-formed replies; records its contributions.

    `values(task_id, size)` gives w·v for a summed task (default: a constant, far from uniform).
    """

    def __init__(self, config: RunConfig, weight: float = 1.0,
                 values: Callable[[str, int], np.ndarray] | None = None) -> None:
        self.config = config
        self.weight = weight
        self.values = values or (lambda task_id, size: np.full(size, 0.25 * weight, np.float32))
        self.contributions: dict[str, Contribution] = {}

    def handle(self, task):
        if isinstance(task, (TrainLocal, AcquireKnowledge)):
            return TrainReport(num_samples=10, loss=1.0)
        if isinstance(task, Evaluate):
            return EvalReport(accuracy=0.5, loss=1.0, num_samples=10)
        if isinstance(task, LoadParameters):
            return Ack()
        if isinstance(task, DreamStep):
            size = int(np.prod(task.shape))
        elif isinstance(task, SoftLabels):
            size = soft_label_size(task.dreams.shape[0], DIGITS_CLASSES, self.config.distill.soft_labels)
        else:
            raise TypeError(f"no script for {type(task).__name__}")
        contribution = Contribution(np.asarray(self.values(task.task_id, size), np.float32), self.weight)
        self.contributions[task.task_id] = contribution
        return contribution


class _NoSnapshots:
    def before_task(self, round_index: int, coordinator_run: str) -> bool:
        return False


# ---- a raw node -------------------------------------------------------------------------------
class RawNode:
    """One node over the generated stub: join, ready, heartbeat, pull, submit, by hand."""

    def __init__(self, node_id: str, channel: grpc.Channel, config: RunConfig, weight: float = 1.0,
                 values: Callable[[str, int], np.ndarray] | None = None) -> None:
        self.node_id = node_id
        self.stub = pb_grpc.CoordinatorStub(channel)
        self.logic = ScriptedLogic(config, weight, values)
        self.runner = TaskRunner(node_id, self.logic, _NoSnapshots())
        self.member_id = ""
        self.heartbeat_seconds = 2.0
        self._leave = threading.Event()
        self._heartbeat: grpc.Future | None = None
        self.shut_down = False

    def join(self, protocol: str = PROTOCOL, node_id: str | None = None) -> pb.JoinReply:
        reply = self.stub.Join(pb.JoinRequest(node_id=node_id or self.node_id, protocol=protocol),
                               timeout=CALL_TIMEOUT)
        self.member_id = reply.member_id
        self.heartbeat_seconds = reply.heartbeat_seconds or 2.0
        return reply

    def ready(self, weight: float | None = None, input_shape: tuple[int, ...] = DIGITS_SHAPE,
              num_classes: int = DIGITS_CLASSES) -> None:
        self.stub.Ready(pb.ReadyRequest(member_id=self.member_id, num_samples=10, model="mlp",
                                        device="cpu", resumed_round=-1,
                                        weight=self.logic.weight if weight is None else weight,
                                        input_shape=input_shape, num_classes=num_classes),
                        timeout=CALL_TIMEOUT)

    def start_heartbeat(self) -> None:
        """Opens the Heartbeat stream; it stays open (beating) until `leave()`."""
        def beats() -> Iterator[pb.Beat]:
            sequence = 0
            while True:
                yield pb.Beat(member_id=self.member_id, sequence=sequence)
                sequence += 1
                if self._leave.wait(self.heartbeat_seconds):
                    return

        self._heartbeat = self.stub.Heartbeat.future(beats())

    def enter(self) -> RawNode:
        """Join, Ready and an open Heartbeat: a present member."""
        self.join()
        self.ready()
        self.start_heartbeat()
        return self

    def leave(self) -> None:
        self._leave.set()
        if self._heartbeat is not None:
            with contextlib.suppress(Exception):  # the server may have cancelled it first
                self._heartbeat.result(timeout=CALL_TIMEOUT)

    def pull(self, wait: float = 1.0) -> pb.Task:
        return self.stub.PullTask(pb.PullTaskRequest(member_id=self.member_id, wait_seconds=wait),
                                  timeout=wait + CALL_TIMEOUT)

    def submit(self, result: pb.TaskResult) -> pb.SubmitReply:
        return self.stub.SubmitResult(result, timeout=CALL_TIMEOUT)

    def answer(self, task: pb.Task) -> pb.TaskResult:
        """What a well-behaved node submits for `task` (computed once: secure masks are one-shot)."""
        if task.WhichOneof("body") == "shutdown":
            return pb.TaskResult(member_id=self.member_id, task_id=task.task_id,
                                 sequence=task.sequence, ack=pb.Ack())
        return self.runner.run(task, self.member_id)


Intercept = Callable[[RawNode, pb.Task, pb.TaskResult], bool]


def serve(nodes: list[RawNode], intercept: Intercept | None = None, deadline: float = RUN_TIMEOUT,
          done: threading.Event | None = None) -> None:
    """Round-robin: every node pulls and answers until it is told to shut down (or `done`).

    `intercept(node, task, good_result)` runs before each submission; it may submit bad results
    itself, and returns True when it has dealt with the task (nothing more is submitted).
    Broadcasts post to every member at once, so a long poll on one node never starves another.
    """
    end = time.monotonic() + deadline
    active = list(nodes)
    while active:
        if time.monotonic() > end:
            raise TimeoutError(f"nodes {[n.node_id for n in active]} not shut down in {deadline} s")
        if done is not None and done.is_set():
            return
        for node in list(active):
            task = node.pull(wait=0.5)
            kind = task.WhichOneof("body")
            if kind is None:
                continue
            result = node.answer(task)
            if intercept is not None and intercept(node, task, result):
                continue
            node.submit(result)
            if kind == "shutdown":
                node.shut_down = True
                active.remove(node)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The RpcError that `call` raises (fails the test if it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded but should have been refused")


def assert_refused(call: Callable[[], Any], code: grpc.StatusCode, *phrases: str) -> grpc.RpcError:
    error = rpc_error(call)
    assert error.code() == code, (error.code(), error.details())
    for phrase in phrases:
        assert phrase in (error.details() or ""), (phrase, error.details())
    return error


# ---- the service ------------------------------------------------------------------------------
class Served:
    """A started CoordinatorService and what the test opened against it."""

    def __init__(self, service: CoordinatorService, tokens: dict[str, str], config: RunConfig) -> None:
        self.service = service
        self.tokens = tokens
        self.config = config
        self.target = f"127.0.0.1:{service.port}"
        self.channels: list[grpc.Channel] = []
        self.nodes: list[RawNode] = []
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None

    def channel(self, node_id: str, token: str | None | bool = True,
                security: ChannelSecurity | None = None, wait_ready: bool = True,
                **options: Any) -> grpc.Channel:
        """A node channel: `token=True` is the node's own token, a string some other, None none."""
        if security is None:
            token = self.tokens.get(node_id) if token is True else token
            security = ChannelSecurity(token=token or None)
        channel = open_channel(self.target, node_id, security, **options)
        self.channels.append(channel)
        if wait_ready:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        return channel

    def bare_channel(self, port: int | None = None) -> grpc.Channel:
        """A plaintext channel with no identity metadata at all (main port unless `port`)."""
        channel = grpc.insecure_channel(f"127.0.0.1:{port or self.service.port}")
        self.channels.append(channel)
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        return channel

    def stub(self, node_id: str, token: str | None | bool = True, **options: Any) -> pb_grpc.CoordinatorStub:
        return pb_grpc.CoordinatorStub(self.channel(node_id, token, **options))

    def node(self, node_id: str, weight: float = 1.0,
             values: Callable[[str, int], np.ndarray] | None = None, **options: Any) -> RawNode:
        node = RawNode(node_id, self.channel(node_id, **options), self.config, weight, values)
        self.nodes.append(node)
        return node

    def start_run(self) -> None:
        def run() -> None:
            try:
                self.summary = self.service.run()
            except BaseException as error:  # noqa: BLE001 — reported by wait_run
                self.error = error
            finally:
                self.finished.set()

        self._thread = threading.Thread(target=run, name="coordinator-run", daemon=True)
        self._thread.start()

    def wait_run(self, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        assert self.finished.wait(timeout), f"the run did not finish within {timeout} s"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def close(self) -> None:
        for node in self.nodes:
            node._leave.set()
        self.service.stop(0)
        for channel in self.channels:
            channel.close()
        if self._thread is not None:
            self._thread.join(timeout=RUN_TIMEOUT)


@contextlib.contextmanager
def serving(config: RunConfig, *, extra_tokens: tuple[str, ...] = (),
            security: ServerSecurity | None = None, **settings: Any) -> Iterator[Served]:
    """A CoordinatorService with bearer tokens for the roster (plus `extra_tokens`), always stopped."""
    roster = settings.get("node_ids") or tuple(f"node-{i}" for i in range(config.clients))
    tokens = generate_tokens([*roster, *extra_tokens])
    if security is None:
        security = ServerSecurity(tokens=tokens)
    settings = {"host": "127.0.0.1", "port": 0, "health_port": 0, "join_timeout": 60.0,
                "grace_seconds": 0.0, "timeouts": Timeouts(task=60, step=60, secagg_round=60),
                **settings}
    service = CoordinatorService(config, CoordinatorSettings(security=security, **settings))
    served = None
    try:
        service.start()
        served = Served(service, tokens, config)
        yield served
    finally:
        if served is not None:
            served.close()
        else:
            service.stop(0)


def metrics(run_dir: Path) -> dict[str, Any]:
    """The run directory's metrics.json (config, per-round metrics, summary)."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


class MetadataInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Sends exactly the given metadata on every unary call (for hand-made bad credentials)."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(_Details(client_call_details, self.metadata), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)
        self.metadata = metadata


# ---- what the coordinator summed --------------------------------------------------------------
class SumRecorder:
    """Every broadcast's Replies by task id and, under secure aggregation, the StepResults."""

    def __init__(self) -> None:
        self.replies: dict[str, Any] = {}
        self.steps: dict[str, list[tuple[Any, float]]] = {}  # task id -> [(StepResult, unit)]
        self._pending: list[tuple[Any, float]] = []

    def install(self, monkeypatch) -> SumRecorder:
        import coordinator.secure_rounds as secure_rounds
        from coordinator.network_transport import NetworkTransport

        broadcast = NetworkTransport.broadcast
        to_aggregate = secure_rounds.to_aggregate

        def recording_broadcast(transport, request):
            self._pending = []
            replies = broadcast(transport, request)
            self.replies[request.task.task_id] = replies
            self.steps[request.task.task_id] = self._pending
            return replies

        def recording_to_aggregate(result, unit, *args, **kwargs):
            self._pending.append((result, unit))
            return to_aggregate(result, unit, *args, **kwargs)

        monkeypatch.setattr(NetworkTransport, "broadcast", recording_broadcast)
        monkeypatch.setattr(secure_rounds, "to_aggregate", recording_to_aggregate)
        return self


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on 127.0.0.1:port, parsed by prometheus-client's own text parser:
    {(sample name, sorted labels): value}."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=CALL_TIMEOUT) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0.0 when the series does not exist yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
