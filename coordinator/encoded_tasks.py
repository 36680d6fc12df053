"""Broadcast bodies serialised once: a body shared by many members is encoded one time.

Why: a dream step's body (the dreams) is the same for every member; only its small header
(task id, sequence, secure step, share delivery) differs. Copying the body into a message per
member and serialising each copy cost the coordinator O(n · body) per step. Protobuf parses a
concatenation of two encodings as the second merged into the first, so a member's task is
`body bytes + header bytes`, exactly what `CopyFrom(body); MergeFrom(header)` would encode, and
the gRPC methods that return tasks send those bytes as they are.
"""

from __future__ import annotations

from typing import Any

import grpc

from protos.codream.v1 import codream_pb2 as pb
from protos.codream.v1 import codream_pb2_grpc as pb_grpc

_TASK_METHODS = ("PullTask", "Exchange")  # the Coordinator methods that answer with a Task


class SharedBody:
    """One broadcast's body; encoded at the first pull, then reused by every member."""

    __slots__ = ("task", "_data")

    def __init__(self, task: pb.Task) -> None:
        self.task = task
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:  # two first pulls at once both encode: the same bytes, no lock needed
            data = self._data = self.task.SerializeToString()
        return data


class EncodedTask:
    """A member's task as wire bytes. Read like a `pb.Task` (attributes parse it once, for the
    grpc-free callers and tests); the gRPC layer sends `data` without re-encoding it."""

    __slots__ = ("data", "_parsed")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._parsed: pb.Task | None = None

    def SerializeToString(self) -> bytes:  # noqa: N802 — the protobuf method name
        return self.data

    def ByteSize(self) -> int:  # noqa: N802
        return len(self.data)

    def parsed(self) -> pb.Task:
        if self._parsed is None:
            self._parsed = pb.Task.FromString(self.data)
        return self._parsed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parsed(), name)


def encode_task(task: pb.Task | EncodedTask) -> bytes:
    """The response serializer of the task-returning methods: either kind goes out as is."""
    return task.SerializeToString()


class _Capture:
    """Stands in for a server to read the generated method table."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = dict(handlers)


def add_coordinator_to_server(servicer: Any, server: grpc.Server) -> None:
    """`add_CoordinatorServicer_to_server`, with the task methods' serializer taking encoded
    tasks as well as messages."""
    capture = _Capture()
    pb_grpc.add_CoordinatorServicer_to_server(servicer, capture)
    handlers = capture.handlers
    for name in _TASK_METHODS:
        handler = handlers[name]
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            handler.unary_unary, request_deserializer=handler.request_deserializer,
            response_serializer=encode_task)
    service = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
