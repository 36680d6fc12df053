"""Shared helpers for the grpc-free transport tests: a real coordinator core and node threads.

`Cluster` holds a real `Membership`, `Dispatcher`, `Federation` (what the servicer calls for
each RPC) and `NetworkTransport`; no server, no channel, no socket. Each `NodeThread` joins
and readies through the federation, then loops as the daemon does: `federation.pull` (a long
poll), a real `TaskRunner.run`, `federation.submit`. An optional `intercept` decides what is
really submitted (nothing: a silent node; a forged result first; ...).

The dispatcher runs on a `ManualClock`: its time stands still until a test moves it, so no
deadline passes by itself on a slow machine, and a test fires a timeout exactly when it wants
(after the nodes that do answer have answered). `Cluster.broadcast` runs the transport in a
worker thread with a real-time watchdog, so a broken test fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from client_node.task_runner import TaskRunner
from codream.aggregation import Contribution
from codream.config import RunConfig, SecureAggregationConfig
from codream.messages import DreamStep, Reply, Task
from codream.round_protocol import Broadcast, Replies
from coordinator.dispatch import Dispatcher
from coordinator.federation import Federation
from coordinator.membership import Membership
from coordinator.network_transport import NetworkTransport, Timeouts
from protos.codream.v1 import codream_pb2 as pb
from protos.serde import PROTOCOL

WATCHDOG = 30.0  # real seconds before a stuck broadcast or node is declared a failure
PULL_WAIT = 5.0  # what a node asks for; the dispatcher's frozen clock makes it "until woken"
# in ManualClock seconds; distinct, so a test that moves the clock just past one of them shows
# which deadline the transport waited on
TIMEOUTS = Timeouts(task=600.0, step=60.0, secagg_round=30.0)


class ManualClock:
    """Monotonic time that only the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class ScriptedLogic:
    """A node's task logic that answers `answer(task)` (an exception raised is raised on)."""

    def __init__(self, answer: Callable[[Task], Reply]) -> None:
        self.answer = answer
        self.handled: list[Task] = []

    def handle(self, task: Task) -> Reply:
        self.handled.append(task)
        return self.answer(task)


class NoSnapshots:
    def before_task(self, round_index: int, coordinator_run: str) -> bool:
        return False


@dataclass
class Submission:
    task: pb.Task
    result: pb.TaskResult
    refused: Exception | None  # None: accepted


Intercept = Callable[["NodeThread", pb.Task, pb.TaskResult], Sequence[pb.TaskResult]]


@dataclass
class NodeThread:
    """One node: joins, readies, then pulls, runs and submits until stopped."""

    cluster: Cluster
    node_id: str
    logic: Any
    weight: float
    intercept: Intercept | None = None
    member_id: str = ""
    pulled: list[pb.Task] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    crashed: BaseException | None = None

    def __post_init__(self) -> None:
        self.runner = TaskRunner(self.node_id, self.logic, NoSnapshots())
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"node {self.node_id}", daemon=True)

    def enter(self) -> NodeThread:
        """Join and Ready through the federation, as the servicer hands them on."""
        federation = self.cluster.federation
        reply = federation.join(self.node_id, pb.JoinRequest(node_id=self.node_id, protocol=PROTOCOL))
        self.member_id = reply.member_id
        federation.ready(self.node_id, pb.ReadyRequest(member_id=self.member_id, weight=self.weight,
                                                       num_samples=10, model="mlp", device="cpu",
                                                       input_shape=(1, 8, 8), num_classes=10))
        return self

    def start(self) -> NodeThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.node_id} did not stop within {timeout} s"

    def _loop(self) -> None:
        federation = self.cluster.federation
        try:
            while not self._stop.is_set():
                request = pb.PullTaskRequest(member_id=self.member_id, wait_seconds=PULL_WAIT)
                task = federation.pull(self.node_id, request)
                if task.WhichOneof("body") is None:
                    continue  # an empty poll (or the dispatcher stopping)
                with self._changed:
                    self.pulled.append(task)
                    self._changed.notify_all()
                result = self.runner.run(task, self.member_id)
                outgoing = [result] if self.intercept is None else self.intercept(self, task, result)
                for message in outgoing:
                    self.submit(task, message)
        except BaseException as error:  # noqa: BLE001 — reported by Cluster.close
            self.crashed = error

    def submit(self, task: pb.Task, result: pb.TaskResult) -> Exception | None:
        """SubmitResult as the servicer hands it on; a refusal is recorded, not raised."""
        refused: Exception | None = None
        try:
            self.cluster.federation.submit(self.node_id, result)
        except Exception as error:  # noqa: BLE001 — every refusal is what a test looks at
            refused = error
        with self._changed:
            self.submissions.append(Submission(task, result, refused))
            self._changed.notify_all()
        return refused

    def accepted(self, task_id: str | None = None) -> list[pb.TaskResult]:
        with self._changed:
            return [s.result for s in self.submissions
                    if s.refused is None and (task_id is None or s.result.task_id == task_id)]

    def refusals(self) -> list[Exception]:
        with self._changed:
            return [s.refused for s in self.submissions if s.refused is not None]

    def wait_until(self, predicate: Callable[[NodeThread], bool], timeout: float = WATCHDOG) -> None:
        """Blocks (on the node's own notifications, no polling) until `predicate(self)` holds."""
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self), timeout), (
                f"{self.node_id}: condition not met within {timeout} s "
                f"(pulled {[t.task_id for t in self.pulled]}, "
                f"submitted {[(s.result.task_id, repr(s.refused)) for s in self.submissions]})")


class Cluster:
    """The coordinator's grpc-free core with node threads around it."""

    def __init__(self, node_ids: Sequence[str], secagg: SecureAggregationConfig,
                 timeouts: Timeouts = TIMEOUTS) -> None:
        self.clock = ManualClock()
        self.config = RunConfig(dataset="digits", clients=len(node_ids), device="cpu", secagg=secagg)
        self.membership = Membership(node_ids)  # liveness on real time: 60 s, never reached here
        self.dispatcher = Dispatcher(self.membership, "run-test", clock=self.clock)
        self.federation = Federation(self.membership, self.dispatcher, "", heartbeat_seconds=5.0)
        self.transport = NetworkTransport(self.config, self.membership, self.dispatcher, timeouts)
        self.nodes: dict[str, NodeThread] = {}

    def node(self, node_id: str, answer: Callable[[Task], Reply] | Any, weight: float,
             intercept: Intercept | None = None, start: bool = True) -> NodeThread:
        """A node that has joined and is ready; its thread runs unless `start=False` (silent).

        `answer`: a function task -> reply (wrapped in a ScriptedLogic), or a task logic object.
        """
        logic = answer if hasattr(answer, "handle") else ScriptedLogic(answer)
        node = NodeThread(self, node_id, logic, weight, intercept).enter()
        self.nodes[node_id] = node
        if start:
            node.start()
        return node

    def broadcast(self, request: Broadcast, *, while_waiting: Callable[[], None] | None = None
                  ) -> Replies:
        """`transport.broadcast(request)` in a worker thread; `while_waiting()` runs meanwhile
        (e.g. waits for the answering nodes, then moves the clock past the deadline)."""
        done: dict[str, Any] = {}

        def deliver() -> None:
            try:
                done["replies"] = self.transport.broadcast(request)
            except BaseException as error:  # noqa: BLE001 — re-raised below
                done["error"] = error

        worker = threading.Thread(target=deliver, name=f"broadcast {request.task.task_id}", daemon=True)
        worker.start()
        if while_waiting is not None:
            while_waiting()
        worker.join(WATCHDOG)
        if worker.is_alive():
            self.dispatcher.stop()  # ends every gather and long poll
            worker.join(WATCHDOG)
            raise AssertionError(f"broadcast of {request.task.task_id} did not return within "
                                 f"{WATCHDOG} s; nodes: " + "; ".join(
                                     f"{n.node_id} pulled {[t.task_id for t in n.pulled]}"
                                     for n in self.nodes.values()))
        if "error" in done:
            raise done["error"]
        return done["replies"]

    def time_out(self, seconds: float) -> None:
        """Moves the dispatcher's clock on by `seconds`; a waiting gather notices at once."""
        self.clock.advance(seconds)
        self.dispatcher.wake()

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.dispatcher.stop()
        for node in self.nodes.values():
            if node._thread.ident is not None:  # started
                node.join(WATCHDOG)
        crashed = {n.node_id: n.crashed for n in self.nodes.values() if n.crashed is not None}
        assert not crashed, f"node threads crashed: {crashed!r}"


@contextlib.contextmanager
def cluster(node_ids: Sequence[str], secagg: SecureAggregationConfig,
            timeouts: Timeouts = TIMEOUTS) -> Iterator[Cluster]:
    built = Cluster(node_ids, secagg, timeouts)
    try:
        yield built
    finally:
        built.close()


# ---- tasks and replies with hand-checkable numbers ------------------------------------------
def dream_step(task_id: str = "d0", shape: tuple[int, int, int, int] = (2, 1, 2, 2), round_: int = 0,
               step: int = 0, with_dreams: bool = True) -> DreamStep:
    """A DreamStep whose dreams (if any) are float32 zeros: 4·B·C·H·W payload bytes down."""
    dreams = torch.zeros(shape, dtype=torch.float32) if with_dreams else None
    return DreamStep(task_id, round_, batch=0, step=step, seed=7, shape=shape, dreams=dreams)


def contribution(weighted_values: Sequence[float], weight: float) -> Contribution:
    return Contribution(np.asarray(weighted_values, dtype=np.float32), float(weight))
