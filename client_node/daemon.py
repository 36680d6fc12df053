"""The node daemon: dial out, join, heart-beat, long-poll tasks, run them, submit the results.

Nodes sit behind firewalls and NAT, so the node always dials the coordinator and reconnects
with back-off when it goes away. The task logic survives re-joins (a restarted coordinator must
not reset the node's model; RoundSnapshots rolls back a round it re-runs). All computing is in
TaskRunner; this module only moves messages and maps gRPC status codes to what the node does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from client_node.backoff import Backoff
from client_node.connection import connect
from client_node.final_model import write_final_model
from client_node.heartbeat import Heartbeat
from client_node.node_observer import NodeObserver
from client_node.node_options import NodeOptions
from client_node.node_setup import BuildLogic, BuiltNode, SetupError, build_from_join, build_logic
from client_node.task_runner import TaskRunner, is_shutdown
from client_node.used_sessions import UsedSessions, open_used_sessions
from protos import serde
from protos.codream.v1 import codream_pb2 as pb
from protos.refusals import refusal_of

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_AUTH = 0, 2, 3
SUBMIT_ATTEMPTS = 5  # transient failures retried with the same membership; then re-join
_Code = grpc.StatusCode
# The coordinator is busy, not gone: the call never ran, so it is retried after a back-off
# with the same membership (re-joining would only add load and cost the node its place).
BUSY = _Code.RESOURCE_EXHAUSTED


class _Rejoin(Exception):
    """The membership is gone or unreachable: back off, reconnect, join again."""


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NodeDaemon:
    """Runs until stopped, told to shut down, or refused; `run()` returns the exit code."""

    def __init__(
        self,
        options: NodeOptions,
        stop: threading.Event | None = None,
        *,
        connect: Callable[[NodeOptions], tuple[Any, Callable[[], None]]] = connect,
        build_logic: BuildLogic = build_logic,
        sleep: Callable[[float], Any] | None = None,
        backoff: Backoff | None = None,
        observer: NodeObserver | None = None,
        used_sessions: UsedSessions | None = None,
    ) -> None:
        """`used_sessions`: the secure sessions this node has begun, as `codream node` loaded
        them at start (default: loaded here from the state dir; UsedSessionsError if unreadable).
        One record for the daemon's life, so a rebuild for a new run config forgets none."""
        self.options = options
        self.observer = observer or NodeObserver()
        self.stop = stop or threading.Event()
        self._connect = connect
        self._build_logic = build_logic
        self._sleep = sleep or self.stop.wait  # a stop interrupts a back-off
        self.backoff = backoff or Backoff()
        self.busy = Backoff(start=0.05, cap=2.0)  # for calls the coordinator was too busy for
        self.busy_retries = 0  # calls retried after RESOURCE_EXHAUSTED, for tests and logs
        self._built: BuiltNode | None = None
        self._round = -1
        self.used_sessions = used_sessions if used_sessions is not None else open_used_sessions(options)

    def run(self) -> int:
        while not self.stop.is_set():
            try:
                stub, close = self._connect(self.options)
            except ValueError as error:  # bad options: nothing a retry fixes
                log.error("node %s: cannot dial %s: %s", self.options.node_id,
                          self.options.coordinator, error)
                return EXIT_CONFIG
            try:
                self._membership(stub)
                log.info("node %s round %d: left the federation", self.options.node_id, self._round)
                return EXIT_OK  # stopped or told to shut down
            except _Exit as done:
                log.error("node %s: %s", self.options.node_id, done)
                return done.code
            except _Rejoin as error:
                log.warning("node %s round %d: %s; re-joining", self.options.node_id,
                            self._round, error)
            finally:
                close()
            self._sleep(self.backoff.next_delay())
        return EXIT_OK

    # -- one membership -----------------------------------------------------------------------
    def _membership(self, stub: Any) -> None:
        node_id = self.options.node_id
        try:
            joined = stub.Join(pb.JoinRequest(node_id=node_id, protocol=serde.PROTOCOL),
                               timeout=self.options.call_timeout)
        except grpc.RpcError as error:
            raise _join_error(error) from None
        built = self._build(joined)
        logic = built.logic
        self._ready(stub, pb.ReadyRequest(
            member_id=joined.member_id, weight=logic.weight, num_samples=len(logic.x_train),
            model=built.config.model_for(joined.node_index), device=str(logic.device),
            resumed_round=built.snapshots.round, input_shape=logic.x_train.shape[1:],
            num_classes=logic.num_classes))
        self.backoff.reset()
        log.info("node %s: joined run %s as %s (index %d), resuming after round %d", node_id,
                 joined.coordinator_run, joined.member_id, joined.node_index,
                 built.snapshots.round)
        heartbeat = Heartbeat(stub, joined.member_id, joined.heartbeat_seconds or 5.0,
                              busy=Backoff(start=0.05, cap=2.0))
        self.observer.joined(built.snapshots.round)
        try:
            self._serve(stub, joined.member_id, built.runner, heartbeat)
        finally:
            self.observer.left()
            heartbeat.close()

    def _ready(self, stub: Any, request: pb.ReadyRequest) -> None:
        """Ready; a final refusal (data that does not fit the federation, or a node too old to
        say) stops the node with the coordinator's message, anything else re-joins."""
        try:
            self._retry_busy(lambda: stub.Ready(request, timeout=self.options.call_timeout))
        except grpc.RpcError as error:
            if refusal_of(error) is not None:
                raise _Exit(EXIT_CONFIG, f"Ready refused: {error.details() or error.code()}") from None
            raise _Rejoin(f"Ready: {_describe(error)}") from None

    def _build(self, joined: pb.JoinReply) -> BuiltNode:
        key = (joined.run_config_toml, joined.node_index)
        if self._built is not None and self._built.key == key:
            return self._built
        try:
            self._built = build_from_join(self.options, joined.run_config_toml, joined.node_index,
                                          self._build_logic, self.used_sessions)
        except SetupError as error:
            raise _Exit(EXIT_CONFIG, str(error)) from None
        return self._built

    def _serve(self, stub: Any, member_id: str, runner: TaskRunner, heartbeat: Heartbeat) -> None:
        pending: pb.TaskResult | None = None  # computed, handed in with the next pull
        while not self.stop.is_set():
            if heartbeat.ended() and not heartbeat.reopen_if_busy():
                raise _Rejoin("the heartbeat stream ended")
            task = self._exchange(stub, member_id, pending)
            pending = None
            if task is None or task.WhichOneof("body") is None:
                continue
            self._round = task.round
            if is_shutdown(task):
                log.info("node %s round %d: coordinator shuts down: %s", self.options.node_id,
                         task.round, task.shutdown.reason)
                self._keep_final_model()
                ack = pb.TaskResult(member_id=member_id, task_id=task.task_id,
                                    sequence=task.sequence, ack=pb.Ack())
                try:  # best effort: the coordinator may already be gone
                    self._submit(stub, ack, attempts=1)
                except _Rejoin as error:
                    log.debug("node %s: shutdown not acknowledged: %s", self.options.node_id, error)
                return
            started = time.perf_counter()
            pending = runner.run(task, member_id)
            self.observer.task_done(task, pending, time.perf_counter() - started)
            if self.stop.is_set():  # stopping: hand in the finished task, pull nothing more
                self._submit(stub, pending)

    def _keep_final_model(self) -> None:
        """The run is complete (a Shutdown is sent only then): the node writes its own trained
        model, which never leaves it, and snapshots its final state as the next round's start
        (for a run extended later); a failure is logged, the node still leaves cleanly."""
        if self._built is None:
            return
        try:
            write_final_model(self.options, self._built)  # records the last round it took part in
            self._built.snapshots.finish()
        except (OSError, ValueError, RuntimeError) as error:
            log.error("node %s: could not write its trained model: %s", self.options.node_id, error)

    def _exchange(self, stub: Any, member_id: str, result: pb.TaskResult | None) -> pb.Task | None:
        """Hands in `result` and pulls the next task in one call (a plain pull without one)."""
        if result is None:
            return self._pull(stub, member_id)
        wait = self.options.pull_wait
        request = pb.ExchangeRequest(result=result,
                                     pull=pb.PullTaskRequest(member_id=member_id, wait_seconds=wait))
        try:
            return self._retry_busy(lambda: self._wait(
                stub.Exchange.future(request, timeout=wait + self.options.submit_timeout)))
        except grpc.RpcError as error:
            code = error.code()
            if code in (_Code.INVALID_ARGUMENT, _Code.FAILED_PRECONDITION):
                log.warning("node %s round %d: result for task %s refused: %s", self.options.node_id,
                            self._round, result.task_id, _describe(error))
                if code == _Code.INVALID_ARGUMENT:
                    self._decline(stub, result, error)
                return None
            # A lost link: the result may have been taken and the next task pulled with the reply
            # lost. Only a new membership makes the coordinator stop waiting on the old one.
            raise _Rejoin(f"Exchange: {_describe(error)}") from None

    def _decline(self, stub: Any, refused: pb.TaskResult, error: grpc.RpcError) -> None:
        """After a refused result, say so with a Skip, so the phase need not wait for a retry."""
        if refused.WhichOneof("body") == "skip":
            return
        skip = pb.TaskResult(member_id=refused.member_id, task_id=refused.task_id,
                             sequence=refused.sequence)
        skip.skip.reason = f"the coordinator refused the result: {error.details() or error.code()}"
        self._submit(stub, skip, attempts=1)

    def _pull(self, stub: Any, member_id: str) -> pb.Task | None:
        """The next task, or None once stopped; waits on the stop event while it polls."""
        wait = self.options.pull_wait
        request = pb.PullTaskRequest(member_id=member_id, wait_seconds=wait)
        try:
            return self._retry_busy(lambda: self._wait(stub.PullTask.future(request,
                                                                            timeout=wait + 5.0)))
        except grpc.RpcError as error:
            raise _Rejoin(f"PullTask: {_describe(error)}") from None

    def _retry_busy(self, call: Callable[[], Any]) -> Any:
        """`call()`, again after a back-off for as long as the coordinator is too busy for it
        (or until stopped: None); any other error is raised."""
        while True:
            try:
                value = call()
            except grpc.RpcError as error:
                if error.code() != BUSY or self.stop.is_set():
                    raise
                self.busy_retries += 1
                delay = self.busy.next_delay()
                log.info("node %s: coordinator busy (%s); retrying in %.2f s with the same "
                         "membership", self.options.node_id, _describe(error), delay)
                self._sleep(delay)
                if self.stop.is_set():
                    return None
                continue
            self.busy.reset()
            return value

    def _wait(self, future: Any) -> pb.Task | None:
        """The future's task, or None if the node is stopped first; an RpcError is raised."""
        while True:
            try:
                return future.result(timeout=0.25)
            except grpc.FutureTimeoutError:
                if self.stop.is_set():
                    future.cancel()
                    return None
            except grpc.FutureCancelledError:
                return None

    def _submit(self, stub: Any, result: pb.TaskResult, attempts: int = SUBMIT_ATTEMPTS) -> None:
        """Submits; a refusal is logged (the coordinator decides), a lost link retried."""
        retry = Backoff()
        for attempt in range(1, attempts + 1):
            try:
                stub.SubmitResult(result, timeout=self.options.submit_timeout)
                return
            except grpc.RpcError as error:
                code = error.code()
                if code in (_Code.INVALID_ARGUMENT, _Code.FAILED_PRECONDITION):
                    log.warning("node %s round %d: result for task %s refused: %s",
                                self.options.node_id, self._round, result.task_id,
                                _describe(error))
                    return
                if code == BUSY and attempt < attempts:
                    self.busy_retries += 1
                    self._sleep(self.busy.next_delay())
                    continue
                if code not in (_Code.UNAVAILABLE, _Code.DEADLINE_EXCEEDED) or attempt == attempts:
                    raise _Rejoin(f"SubmitResult: {_describe(error)}") from None
            self._sleep(retry.next_delay())


def _join_error(error: grpc.RpcError) -> Exception:
    code = error.code()
    if code in (_Code.UNAUTHENTICATED, _Code.PERMISSION_DENIED):
        return _Exit(EXIT_AUTH, f"Join refused: {_describe(error)}")
    if code in (_Code.INVALID_ARGUMENT, _Code.UNIMPLEMENTED):  # wrong protocol: a retry won't fix it
        return _Exit(EXIT_CONFIG, f"Join refused: {_describe(error)}")
    return _Rejoin(f"Join: {_describe(error)}")  # ALREADY_EXISTS: the old membership is closing


def _describe(error: grpc.RpcError) -> str:
    code = error.code()
    return f"{code.name if code else 'UNKNOWN'} {error.details() or ''}".strip()
