"""Paired converters between the domain messages (codream.messages) and the wire (codream.v1).

Every `x_to_proto` has its `x_from_proto`, round-trip tested. Decoding validates what the wire
cannot: dtypes, byte counts against shapes, and shapes against what the receiver expects; a
violation raises `WireError`, which the servicers answer with INVALID_ARGUMENT.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from codream.aggregation import Contribution
from codream.messages import (
    Ack,
    AcquireKnowledge,
    DreamStep,
    EvalReport,
    Evaluate,
    FedAvgTrain,
    LoadParameters,
    Reply,
    Skip,
    SoftLabels,
    Task,
    TrainLocal,
    TrainReport,
)
from protos.codream.v1 import codream_pb2 as pb

PROTOCOL = "codream.v1"
DTYPES = {"float32": np.float32, "float64": np.float64, "uint32": np.uint32, "int64": np.int64}


class WireError(ValueError):
    """A message is well-formed protobuf but not a valid CoDream message."""


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


def _torch(message: pb.Tensor, what: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return torch.from_numpy(tensor_from_proto(message, what, "float32", shape))


# ---- tasks --------------------------------------------------------------------------------
def task_to_proto(task: Task) -> pb.Task:
    """The task body; the transport fills in coordinator_run, sequence and secure."""
    out = pb.Task(task_id=task.task_id, round=task.round)
    if isinstance(task, TrainLocal):
        out.train_local.epochs = task.epochs
    elif isinstance(task, DreamStep):
        body = out.dream_step
        body.batch, body.step, body.seed = task.batch, task.step, task.seed
        body.shape.extend(task.shape)
        if task.dreams is not None:
            body.dreams.CopyFrom(tensor_to_proto(task.dreams))
    elif isinstance(task, SoftLabels):
        out.soft_labels.dreams.CopyFrom(tensor_to_proto(task.dreams))
    elif isinstance(task, AcquireKnowledge):
        out.acquire_knowledge.dreams.CopyFrom(tensor_to_proto(task.dreams))
        out.acquire_knowledge.logits.CopyFrom(tensor_to_proto(task.logits))
    elif isinstance(task, FedAvgTrain):
        out.fedavg_train.epochs = task.epochs
        if task.parameters is not None:
            out.fedavg_train.parameters.CopyFrom(tensor_to_proto(task.parameters))
    elif isinstance(task, LoadParameters):
        out.load_parameters.parameters.CopyFrom(tensor_to_proto(task.parameters))
    elif isinstance(task, Evaluate):
        out.evaluate.SetInParent()
    else:
        raise WireError(f"no wire form for task {type(task).__name__}")
    return out


def task_from_proto(message: pb.Task) -> Task:
    kind = message.WhichOneof("body")
    task_id, round_index = message.task_id, message.round
    if kind == "train_local":
        return TrainLocal(task_id, round_index, message.train_local.epochs)
    if kind == "dream_step":
        body = message.dream_step
        shape = tuple(int(d) for d in body.shape)
        if len(shape) != 4 or min(shape) < 1:
            raise WireError(f"dream_step: shape must be (B, C, H, W) of positive sizes, got {shape}")
        dreams = _torch(body.dreams, "dream_step.dreams", shape) if body.HasField("dreams") else None
        return DreamStep(task_id, round_index, body.batch, body.step, body.seed, shape, dreams)
    if kind == "soft_labels":
        return SoftLabels(task_id, round_index, _torch(message.soft_labels.dreams, "soft_labels.dreams"))
    if kind == "acquire_knowledge":
        body = message.acquire_knowledge
        dreams = _torch(body.dreams, "acquire_knowledge.dreams")
        logits = _torch(body.logits, "acquire_knowledge.logits")
        if logits.ndim != 2 or dreams.ndim != 4 or logits.shape[0] != dreams.shape[0]:
            raise WireError(f"acquire_knowledge: logits {tuple(logits.shape)} do not match dreams "
                            f"{tuple(dreams.shape)}")
        return AcquireKnowledge(task_id, round_index, dreams, logits)
    if kind == "fedavg_train":
        body = message.fedavg_train
        parameters = (tensor_from_proto(body.parameters, "fedavg_train.parameters", "float32")
                      if body.HasField("parameters") else None)
        return FedAvgTrain(task_id, round_index, body.epochs, parameters)
    if kind == "load_parameters":
        parameters = tensor_from_proto(message.load_parameters.parameters, "load_parameters.parameters",
                                       "float32")
        return LoadParameters(task_id, round_index, parameters)
    if kind == "evaluate":
        return Evaluate(task_id, round_index)
    raise WireError(f"task {task_id!r} has no method-level body ({kind})")


# ---- replies ------------------------------------------------------------------------------
def reply_to_proto(reply: Reply, out: pb.TaskResult) -> pb.TaskResult:
    """Fills the body of `out` (which carries member id, task id and sequence)."""
    if isinstance(reply, TrainReport):
        out.train_report.num_samples, out.train_report.loss = reply.num_samples, reply.loss
    elif isinstance(reply, EvalReport):
        body = out.eval_report
        body.accuracy, body.loss, body.num_samples = reply.accuracy, reply.loss, reply.num_samples
    elif isinstance(reply, Ack):
        out.ack.SetInParent()
    elif isinstance(reply, Skip):
        out.skip.reason = reply.reason
    elif isinstance(reply, Contribution):
        out.contribution.weighted_values.CopyFrom(tensor_to_proto(reply.weighted_values))
        out.contribution.weight = reply.weight
    else:
        raise WireError(f"no wire form for reply {type(reply).__name__}")
    return out


def reply_from_proto(message: pb.TaskResult, size: int | None = None) -> Reply:
    """The domain reply; a contribution is checked against the expected length `size`."""
    kind = message.WhichOneof("body")
    if kind == "train_report":
        return TrainReport(message.train_report.num_samples, message.train_report.loss)
    if kind == "eval_report":
        body = message.eval_report
        return EvalReport(body.accuracy, body.loss, body.num_samples)
    if kind == "ack":
        return Ack()
    if kind == "skip":
        return Skip(message.skip.reason)
    if kind == "contribution":
        body = message.contribution
        shape = None if not size else (size,)
        values = tensor_from_proto(body.weighted_values, "contribution.weighted_values", "float32", shape)
        if values.ndim != 1:
            raise WireError(f"contribution.weighted_values must be flat, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise WireError(f"contribution: {int((~np.isfinite(values)).sum())} non-finite values")
        if not math.isfinite(body.weight) or body.weight <= 0:
            raise WireError(f"contribution: weight must be finite and > 0, got {body.weight}")
        return Contribution(values, body.weight)
    raise WireError(f"result for {message.task_id!r} has no method-level body ({kind})")
