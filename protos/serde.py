"""Paired converters between the domain messages (codream.messages) and the wire (codream.v1).

Every `x_to_proto` has its `x_from_proto`, round-trip tested. Nothing here lists the task
types: a task's declaration names its field in `Task.body`, and its dataclass fields map onto
that message's fields of the same name by their declared types (a tensor, an array, a tuple of
ints, a scalar; `| None` for a message field that may be absent). Decoding validates what the
wire cannot: dtypes, byte counts against shapes, shapes against what the receiver expects, and
the message's own checks; a violation raises `WireError`, which the servicers answer with
INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
import unicodedata
from typing import Any

import numpy as np
import torch

from codream.aggregation import Contribution
from codream.messages import (
    REPLY_WIRE_FIELDS,
    EvalReport,
    Reply,
    Skip,
    Task,
    TrainReport,
    kind_of,
    task_type_for,
)
from protos.codream.v1 import codream_pb2 as pb

PROTOCOL = "codream.v1"
DTYPES = {"float32": np.float32, "float64": np.float64, "uint32": np.uint32, "int64": np.int64}


class WireError(ValueError):
    """A message is well-formed protobuf but not a valid CoDream message."""


TEXT_LIMIT = 200  # characters of a peer's string kept in a log line, a status or a metric
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})  # controls, format (bidi), line/paragraph breaks


def printable(text: object, limit: int = TEXT_LIMIT) -> str:
    """`text` fit for a log line or a status: control, format and line-break characters removed
    (a newline cannot forge a log line), at most `limit` characters (the cut is marked)."""
    text = str(text)
    clean = "".join(c for c in text[: 4 * limit] if unicodedata.category(c) not in _INVISIBLE)
    if len(clean) <= limit and len(text) <= 4 * limit:
        return clean
    return f"{clean[:limit]}… ({len(text)} characters)"


# ---- tensors ------------------------------------------------------------------------------
def tensor_to_proto(value: np.ndarray | torch.Tensor) -> pb.Tensor:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    name = array.dtype.name
    if name not in DTYPES:
        raise WireError(f"dtype {name} cannot be sent; allowed: {', '.join(DTYPES)}")
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return pb.Tensor(dtype=name, shape=list(array.shape), data=data)


def tensor_from_proto(
    message: pb.Tensor,
    what: str,
    dtype: str | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """The array, checked: known dtype (the expected one if given), bytes = shape, shape as expected."""
    if message.dtype not in DTYPES:
        raise WireError(f"{what}: unknown dtype {message.dtype!r}; allowed: {', '.join(DTYPES)}")
    if dtype is not None and message.dtype != dtype:
        raise WireError(f"{what}: dtype must be {dtype}, got {message.dtype}")
    dims = tuple(int(d) for d in message.shape)
    if any(d < 0 for d in dims):
        raise WireError(f"{what}: negative dimension in shape {dims}")
    if shape is not None and dims != tuple(shape):
        raise WireError(f"{what}: shape must be {tuple(shape)}, got {dims}")
    item = np.dtype(DTYPES[message.dtype]).itemsize
    if len(message.data) != math.prod(dims) * item:
        raise WireError(f"{what}: {len(message.data)} bytes do not hold shape {dims} of {message.dtype}")
    array = np.frombuffer(message.data, dtype=np.dtype(DTYPES[message.dtype]).newbyteorder("<"))
    return array.astype(DTYPES[message.dtype], copy=True).reshape(dims)


# ---- dataclass fields <-> message fields ------------------------------------------------
@functools.cache
def _body_fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, optional) of each field of `cls` that travels in its body message."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in ("task_id", "round"):
            continue
        hint, optional = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
            (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = True
        out.append((f.name, hint, optional))
    return tuple(out)


def _fill(body: Any, message: object) -> None:
    body.SetInParent()  # an empty body (Evaluate, Ack) is still set
    for name, _hint, _optional in _body_fields(type(message)):
        value = getattr(message, name)
        if value is None:
            continue
        if isinstance(value, (torch.Tensor, np.ndarray)):
            getattr(body, name).CopyFrom(tensor_to_proto(value))
        elif isinstance(value, tuple):
            getattr(body, name).extend(value)
        else:
            setattr(body, name, value)


def _read(cls: type, body: Any, what: str, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """The dataclass fields of `cls` from its body message; `sizes` fixes flat array lengths."""
    values: dict[str, Any] = {}
    for name, hint, optional in _body_fields(cls):
        if optional and not body.HasField(name):
            values[name] = None
        elif hint is torch.Tensor:
            values[name] = torch.from_numpy(tensor_from_proto(getattr(body, name), f"{what}.{name}",
                                                              "float32"))
        elif hint is np.ndarray:
            size = (sizes or {}).get(name)
            values[name] = tensor_from_proto(getattr(body, name), f"{what}.{name}", "float32",
                                             (size,) if size else None)
        elif typing.get_origin(hint) is tuple:
            values[name] = tuple(int(v) for v in getattr(body, name))
        else:
            values[name] = getattr(body, name)
    return values


# ---- tasks --------------------------------------------------------------------------------
def task_to_proto(task: Task) -> pb.Task:
    """The task body; the transport fills in coordinator_run, sequence and secure."""
    try:
        kind = kind_of(task)
    except TypeError as error:
        raise WireError(f"no wire form for task: {error}") from None
    out = pb.Task(task_id=task.task_id, round=task.round)
    _fill(getattr(out, kind.wire_field), task)
    return out


def task_from_proto(message: pb.Task) -> Task:
    field = message.WhichOneof("body")
    cls = task_type_for(field)
    if cls is None:
        raise WireError(f"task {message.task_id!r} has no method-level body ({field})")
    values = _read(cls, getattr(message, field), field)
    try:
        return cls(message.task_id, message.round, **values)
    except ValueError as error:  # the message's own checks (shapes that must agree)
        raise WireError(f"{field}: {error}") from None


# ---- replies ------------------------------------------------------------------------------
def reply_to_proto(reply: Reply, out: pb.TaskResult) -> pb.TaskResult:
    """Fills the body of `out` (which carries member id, task id and sequence)."""
    field = REPLY_WIRE_FIELDS.get(type(reply))
    if field is None:
        raise WireError(f"no wire form for reply {type(reply).__name__}")
    _fill(getattr(out, field), reply)
    return out


def reply_from_proto(message: pb.TaskResult, size: int | None = None) -> Reply:
    """The domain reply; a contribution is checked against the expected length `size`."""
    field = message.WhichOneof("body")
    cls = next((c for c, f in REPLY_WIRE_FIELDS.items() if f == field), None)
    if cls is None:
        raise WireError(f"result for {message.task_id!r} has no method-level body ({field})")
    reply = cls(**_read(cls, getattr(message, field), field, {"weighted_values": size or 0}))
    if isinstance(reply, Contribution):
        _check_contribution(reply)
    elif isinstance(reply, (EvalReport, TrainReport)):
        _check_report(reply, field)
    elif isinstance(reply, Skip):
        reply = Skip(printable(reply.reason))
    return reply


def _check_report(report: EvalReport | TrainReport, what: str) -> None:
    """A report's numbers are finite and in range, so what reaches metrics.json is strict JSON."""
    if report.num_samples < 0:
        raise WireError(f"{what}.num_samples must be >= 0, got {report.num_samples}")
    if not math.isfinite(report.loss):
        raise WireError(f"{what}.loss must be finite, got {report.loss}")
    if isinstance(report, EvalReport) and not 0.0 <= report.accuracy <= 1.0:  # False for NaN
        raise WireError(f"{what}.accuracy must be in [0, 1], got {report.accuracy}")


def _check_contribution(contribution: Contribution) -> None:
    values = contribution.weighted_values
    if values.ndim != 1:
        raise WireError(f"contribution.weighted_values must be flat, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise WireError(f"contribution: {int((~np.isfinite(values)).sum())} non-finite values")
    if not math.isfinite(contribution.weight) or contribution.weight <= 0:
        raise WireError(f"contribution: weight must be finite and > 0, got {contribution.weight}")
