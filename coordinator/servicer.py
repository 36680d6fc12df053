"""The gRPC adapter: admit (authenticate, budget), call the federation, map refusals to codes.

Capacity is what members need: their long polls and heartbeat streams. `Admission` runs
before any handler and refuses at once a call without a valid credential, from an identity off
the roster, beyond a node id's budget of open calls, or a Join beyond a small cap, so no caller
can hold the workers members need; `IdleStreams` closes a client stream that sends nothing for
the liveness window (a heartbeat that never beats holds nothing for long).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc

from coordinator.errors import CoordinatorError, Misfit
from coordinator.federation import Federation
from coordinator.identity_book import IdentityBook
from coordinator.security import ServerSecurity, authenticate
from coordinator.status import status_for
from protos.codream.v1 import codream_pb2 as pb
from protos.codream.v1 import codream_pb2_grpc as pb_grpc
from protos.refusals import refusal_metadata
from protos.serde import printable

log = logging.getLogger(__name__)
DETAIL_LIMIT = 400  # characters of a status message (it quotes at most a few peer strings)
SERVICE_PREFIX = "/" + pb.DESCRIPTOR.services_by_name["Coordinator"].full_name + "/"


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, federation: Federation, security: ServerSecurity,
                 idle_seconds: float | None = None, identities: IdentityBook | None = None):
        self.federation = federation
        self.security = security
        self.identities = identities  # records the identity certificate a node joins with
        self.idle = IdleStreams(idle_seconds) if idle_seconds else None

    def _call(self, context: grpc.ServicerContext, method: str, handler: Callable[[str], Any]) -> Any:
        try:
            node_id = authenticate(context, self.security)
            return handler(node_id)
        except Exception as error:  # noqa: BLE001 — every refusal is answered, never dropped
            code = status_for(error)
            if code is None:
                log.exception("%s failed", method)
                context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error")
            # a refusal may quote what the caller sent: one line, bounded, in the log and status
            detail = printable(error, DETAIL_LIMIT)
            log.info("%s refused (%s): %s", method, code.name, detail)
            if isinstance(error, Misfit):  # final: the node stops instead of re-joining
                context.set_trailing_metadata(refusal_metadata(error.refusal))
            context.abort(code, detail)

    def Join(self, request, context):
        def join(node: str) -> Any:
            if self.identities is not None and self.security.mutual_tls:
                self.identities.observe(node, context.auth_context())
            return self.federation.join(node, request)

        return self._call(context, "Join", join)

    def Ready(self, request, context):
        return self._call(context, "Ready", lambda node: self.federation.ready(node, request))

    def Heartbeat(self, request_iterator, context):
        beats = _until_broken(request_iterator)
        if self.idle is not None:
            beats = self.idle.watch(context, beats)
        return self._call(context, "Heartbeat", lambda node: self.federation.heartbeat(node, beats))

    def PullTask(self, request, context):
        return self._call(context, "PullTask", lambda node: self.federation.pull(node, request))

    def SubmitResult(self, request, context):
        return self._call(context, "SubmitResult", lambda node: self.federation.submit(node, request))

    def Exchange(self, request, context):
        return self._call(context, "Exchange", lambda node: self.federation.exchange(node, request))


def _until_broken(stream):
    """A client stream that ends quietly when the peer vanishes (that is how a node leaves)."""
    try:
        yield from stream
    except grpc.RpcError:
        return


class Admission(grpc.ServerInterceptor):
    """Every Coordinator call is authenticated and admitted before its handler runs.

    Refused at once: no or a wrong credential (UNAUTHENTICATED), an identity off the roster
    (PERMISSION_DENIED), a node id that already has `per_node` calls open, or a Join while
    `joins` are in progress (RESOURCE_EXHAUSTED: back off and retry). A member needs two calls
    open (its heartbeat and its long poll), a few more while it re-joins. Other services on the
    port (reflection) share `others` open calls.
    """

    def __init__(self, security: ServerSecurity, roster: Collection[str], per_node: int = 6,
                 joins: int = 8, others: int = 4) -> None:
        if per_node < 2 or joins < 1:
            raise ValueError(f"per_node must be >= 2 and joins >= 1, got {per_node}, {joins}")
        self.security = security
        self.roster = frozenset(roster)
        self.per_node = per_node
        self.joins = joins
        self.others = others
        self._others = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified whenever the last call leaves
        self._open: Counter[str] = Counter()
        self._joining = 0
        self.refused: Counter[str] = Counter()  # by status code name

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        if not method.startswith(SERVICE_PREFIX):
            return self._other(handler)  # reflection: open to all, but a few calls at a time
        join = method == SERVICE_PREFIX + "Join"
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._admitted(handler.unary_unary, join), handler.request_deserializer,
                handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._admitted(handler.stream_unary, join), handler.request_deserializer,
                handler.response_serializer)
        return handler

    def _other(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Another service's handler (reflection) under a shared cap of `others` open calls,
        so streams that never send cannot take the threads members need."""
        def enter(context: grpc.ServicerContext) -> None:
            with self._lock:
                full = self._others >= self.others
                self._others += not full
            if full:
                self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"{self.others} calls of other services are open; retry later")

        def leave() -> None:
            with self._lock:
                self._others -= 1

        def unary(behaviour):
            def run(request, context):
                enter(context)
                try:
                    return behaviour(request, context)
                finally:
                    leave()
            return run

        def streaming(behaviour):
            def run(request, context):
                enter(context)
                try:
                    yield from behaviour(request, context)
                finally:
                    leave()
            return run

        wrap = {"unary_unary": grpc.unary_unary_rpc_method_handler,
                "stream_unary": grpc.stream_unary_rpc_method_handler,
                "unary_stream": grpc.unary_stream_rpc_method_handler,
                "stream_stream": grpc.stream_stream_rpc_method_handler}
        for kind, make in wrap.items():
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                around = streaming if kind.endswith("_stream") else unary
                return make(around(behaviour), handler.request_deserializer,
                            handler.response_serializer)
        return handler

    def _admitted(self, behaviour: Callable[[Any, Any], Any], join: bool) -> Callable[[Any, Any], Any]:
        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            node_id = self._enter(context, join)
            try:
                return behaviour(request, context)
            finally:
                self._leave(node_id, join)
        return admitted

    def _enter(self, context: grpc.ServicerContext, join: bool) -> str:
        try:
            node_id = authenticate(context, self.security)
        except CoordinatorError as error:
            self._refuse(context, status_for(error) or grpc.StatusCode.UNAUTHENTICATED, str(error))
        if node_id not in self.roster:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"node {node_id!r} is not on this federation's roster")
        with self._lock:
            busy = self._open[node_id] >= self.per_node
            crowded = join and self._joining >= self.joins
            if not (busy or crowded):
                self._open[node_id] += 1
                self._joining += join
        if busy:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"node {node_id!r} already has {self.per_node} calls open; retry later")
        if crowded:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{self.joins} joins are in progress; retry later")
        return node_id

    def _leave(self, node_id: str, join: bool) -> None:
        with self._lock:
            self._open[node_id] -= 1
            if not self._open[node_id]:
                del self._open[node_id]
            self._joining -= join
            if not self._open:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Blocks until no admitted call's handler is running (True) or `timeout` passes.

        A stopped grpc server reports itself stopped once its calls are cancelled, while their
        handlers may still be running on its worker threads (a heartbeat's end retires the
        membership and logs it); the service waits here so none outlives it."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._open, timeout)

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, detail: str):
        with self._lock:
            self.refused[code.name] += 1
        context.abort(code, printable(detail, DETAIL_LIMIT))  # raises: the handler never runs

    def open_calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._open)


class IdleStreams:
    """Cancels a client stream that sends nothing for `window` seconds, freeing its worker.

    One daemon thread looks every `window / 4` (at most 1 s) while any stream is watched.
    """

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[int, tuple[grpc.ServicerContext, float]] = {}
        self._reaper: threading.Thread | None = None
        self.closed = 0

    def watch(self, context: grpc.ServicerContext, stream: Iterator[Any]) -> Iterator[Any]:
        key = id(context)
        self._touch(key, context)
        try:
            for item in stream:
                self._touch(key, context)
                yield item
        finally:
            with self._lock:
                self._last.pop(key, None)

    def _touch(self, key: int, context: grpc.ServicerContext) -> None:
        with self._lock:
            self._last[key] = (context, self._clock())
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="idle-streams", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(min(1.0, self.window / 4))
            with self._lock:
                now = self._clock()
                idle = [key for key, (_, seen) in self._last.items() if now - seen > self.window]
                contexts = [self._last.pop(key)[0] for key in idle]
                self.closed += len(contexts)
                if not self._last:
                    self._reaper = None
                    done = True
                else:
                    done = False
            for context in contexts:
                context.cancel()  # the stream's next read raises; the handler returns
            if contexts:
                log.info("closed %d client stream(s) silent for %.0f s", len(contexts), self.window)
            if done:
                return
