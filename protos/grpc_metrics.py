"""gRPC call counts by method and status code, as interceptors on both ends of the wire.

The series follow the names of go-grpc-prometheus (`grpc_server_handled_total`,
`grpc_client_handled_total`, with grpc_service/grpc_method/grpc_type/grpc_code labels), so the
dashboards and alerts people already have for gRPC services work on CoDream unchanged.

What an interceptor cannot see: calls refused by the gRPC core before any handler runs (a
message over the size limit, the server's concurrent-call cap) never reach Python on the
server side; the client side counts them with their code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_LATENCY_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def split_method(full_method: str) -> tuple[str, str]:
    """'/codream.v1.Coordinator/Join' → ('codream.v1.Coordinator', 'Join')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _arity(request_streaming: bool, response_streaming: bool) -> str:
    return {(False, False): "unary", (True, False): "client_stream",
            (False, True): "server_stream", (True, True): "bidi_stream"}[(request_streaming,
                                                                          response_streaming)]


class _Series:
    def __init__(self, registry: CollectorRegistry, side: str) -> None:
        self.started = Counter(f"grpc_{side}_started_total", f"RPCs started on the {side}.",
                               _LABELS, registry=registry)
        self.handled = Counter(f"grpc_{side}_handled_total",
                               f"RPCs completed on the {side}, by status code.",
                               (*_LABELS, "grpc_code"), registry=registry)
        self.seconds = Histogram(f"grpc_{side}_handling_seconds",
                                 f"Time from start to status of RPCs on the {side}.",
                                 _LABELS, buckets=_LATENCY_BUCKETS, registry=registry)

        self._children: dict[tuple[Any, ...], Any] = {}  # labels() validates and locks per call

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def start(self, labels: tuple[str, str, str]) -> float:
        self._child(self.started, labels).inc()
        return time.perf_counter()

    def finish(self, labels: tuple[str, str, str], code: grpc.StatusCode | None, started: float) -> None:
        self._child(self.handled, (*labels, (code or grpc.StatusCode.OK).name)).inc()
        self._child(self.seconds, labels).observe(time.perf_counter() - started)

    @contextlib.contextmanager
    def observing(self, labels: tuple[str, str, str], context: grpc.ServicerContext) -> Iterator[None]:
        """One server call: counted at its start, and at its end with the code it ended on."""
        started = self.start(labels)
        try:
            yield
        except BaseException:  # context.abort raises after setting the code
            self.finish(labels, _failed_code(context), started)
            raise
        self.finish(labels, context.code(), started)


def _failed_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The code of a handler that raised: the one it aborted with, CANCELLED when the peer went
    away under it (its request stream raises), else UNKNOWN (what gRPC sends for an exception)."""
    code = context.code()
    if code is not None:
        return code
    return grpc.StatusCode.UNKNOWN if context.is_active() else grpc.StatusCode.CANCELLED


class ServerMetricsInterceptor(grpc.ServerInterceptor):
    """Counts every call a handler ran for, with the code it ended on (abort or return)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series = _Series(registry, "server")
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method: (its handler, the wrapped one)

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        known = self._wrapped.get(handler_call_details.method)
        if known is not None and known[0] is handler:  # generated servicers reuse their handlers
            return known[1]
        wrapped = self._wrap(handler_call_details.method, handler)
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, full_method: str, handler: Any) -> Any:
        service, method = split_method(full_method)
        labels = (_arity(handler.request_streaming, handler.response_streaming), service, method)
        series = self._series
        if handler.response_streaming:  # none of ours stream replies; reflection does
            behaviour, factory = ((handler.stream_stream, grpc.stream_stream_rpc_method_handler)
                                  if handler.request_streaming else
                                  (handler.unary_stream, grpc.unary_stream_rpc_method_handler))

            def streamed(request: Any, context: grpc.ServicerContext) -> Any:
                with series.observing(labels, context):
                    yield from behaviour(request, context)

            wrapped = streamed
        else:
            behaviour, factory = ((handler.stream_unary, grpc.stream_unary_rpc_method_handler)
                                  if handler.request_streaming else
                                  (handler.unary_unary, grpc.unary_unary_rpc_method_handler))

            def answered(request: Any, context: grpc.ServicerContext) -> Any:
                with series.observing(labels, context):
                    return behaviour(request, context)

            wrapped = answered
        return factory(wrapped, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)


class ClientMetricsInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Counts a node's calls by the code they ended with (the unary and client-stream ones it
    makes); a call is counted when it completes, so a long poll counts once, at its end."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series = _Series(registry, "client")

    def _observe(self, start_call: Callable[[], Any], details: grpc.ClientCallDetails, arity: str) -> Any:
        service, method = split_method(details.method)
        labels = (arity, service, method)
        started = self._series.start(labels)
        call = start_call()  # a blocking call has completed here; its callback then runs at once
        call.add_done_callback(lambda done: self._series.finish(labels, done.code(), started))
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._observe(lambda: continuation(client_call_details, request), client_call_details,
                             "unary")

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return self._observe(lambda: continuation(client_call_details, request_iterator),
                             client_call_details, "client_stream")
