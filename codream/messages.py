"""Domain messages between the coordinator's round logic and a node's task logic, declared once.

Both transports carry exactly these: the in-memory one passes the objects, the gRPC one converts
them field by field (`protos.serde`). Each task type is declared with `@task_kind`, which says
what every layer needs: its field in the wire `Task.body`, the replies a node may send, and, for
a summed task, the clip that bounds its values under secure aggregation. Serde, the node's
dispatch, the secure plan and both transports read that declaration instead of listing classes,
so a new task is one dataclass here (plus its proto message and a node handler).
Tensors are CPU float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from codream.aggregation import Contribution

# ---- replies (node -> coordinator) ------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A node declines a task (e.g. its update was not finite); a summed one leaves it out."""

    reason: str


@dataclass(frozen=True)
class TrainReport:
    num_samples: int
    loss: float


@dataclass(frozen=True)
class EvalReport:
    accuracy: float
    loss: float
    num_samples: int


@dataclass(frozen=True)
class Ack:
    pass


Reply = Contribution | Skip | TrainReport | EvalReport | Ack

# Each reply type's field in the wire `TaskResult.body` (the message of the same name).
REPLY_WIRE_FIELDS: dict[type, str] = {
    TrainReport: "train_report",
    EvalReport: "eval_report",
    Ack: "ack",
    Skip: "skip",
    Contribution: "contribution",
}


# ---- task declarations ------------------------------------------------------------------


class Task(Protocol):
    """What every task has; its body is the dataclass's other fields."""

    @property
    def task_id(self) -> str: ...

    @property
    def round(self) -> int: ...


@dataclass(frozen=True)
class TaskKind:
    """What every layer needs to know about one task type.

    wire_field: its field in `codream.v1.Task.body`; the proto message has the dataclass's
        fields (after task_id and round) under the same names.
    replies: what a node may answer besides a Skip (always allowed: it declines).
    clip: for a summed task, the `secagg` settings field bounding |(w/W)·v| per element;
        None for a task whose replies are not summed.
    """

    wire_field: str
    replies: tuple[type, ...]
    clip: str | None = None

    @property
    def summed(self) -> bool:
        return self.clip is not None


TASK_KINDS: dict[type, TaskKind] = {}


def task_kind(wire_field: str, replies: tuple[type, ...], clip: str | None = None
              ) -> Callable[[type], type]:
    """Class decorator declaring a task type; one wire field per type."""

    def declare(cls: type) -> type:
        taken = {kind.wire_field: other for other, kind in TASK_KINDS.items()}
        if wire_field in taken and taken[wire_field] is not cls:
            raise ValueError(f"wire field {wire_field!r} is already {taken[wire_field].__name__}'s")
        if clip is not None and tuple(replies) != (Contribution,):
            raise ValueError(f"{cls.__name__}: a summed task's reply is a Contribution")
        TASK_KINDS[cls] = TaskKind(wire_field, tuple(replies), clip)
        return cls

    return declare


def kind_of(task: object) -> TaskKind:
    """The declaration of `task`'s type; TypeError for anything that is not a declared task."""
    try:
        return TASK_KINDS[type(task)]
    except KeyError:
        raise TypeError(f"{type(task).__name__} is not a declared task type") from None


def task_type_for(wire_field: str | None) -> type | None:
    """The task type whose wire field is `wire_field`, or None (a secagg or control body)."""
    for cls, kind in TASK_KINDS.items():
        if kind.wire_field == wire_field:
            return cls
    return None


# ---- tasks (coordinator -> node) ---------------------------------------------------------


@task_kind("train_local", replies=(TrainReport,))
@dataclass(frozen=True)
class TrainLocal:
    """Supervised training on the node's own data (warm-up, or the Independent baseline)."""

    task_id: str
    round: int
    epochs: int


@task_kind("dream_step", replies=(Contribution,), clip="dream_clip")
@dataclass(frozen=True)
class DreamStep:
    """One global step: move the dreams and return w_k·Δ_k. The first step sends only a seed."""

    task_id: str
    round: int
    batch: int
    step: int
    seed: int
    shape: tuple[int, int, int, int]
    dreams: torch.Tensor | None = field(default=None, repr=False)  # (B, C, H, W)
    # (B, classes) the previous step's summed soft labels z̄ (dream.consensus); None: entropy
    targets: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.shape) != 4 or min(self.shape) < 1:
            raise ValueError(f"shape must be (B, C, H, W) of positive sizes, got {tuple(self.shape)}")
        if self.dreams is not None and tuple(self.dreams.shape) != tuple(self.shape):
            raise ValueError(f"dreams: shape must be {tuple(self.shape)}, got {tuple(self.dreams.shape)}")
        if self.targets is not None and (self.targets.ndim != 2
                                         or self.targets.shape[0] != self.shape[0]):
            raise ValueError(f"targets: shape must be ({self.shape[0]}, classes), "
                             f"got {tuple(self.targets.shape)}")


@task_kind("soft_labels", replies=(Contribution,), clip="logits_clip")
@dataclass(frozen=True)
class SoftLabels:
    """Return w_k·f_k(x̂) (logits, eval mode) on the final dreams."""

    task_id: str
    round: int
    dreams: torch.Tensor = field(repr=False)


@task_kind("acquire_knowledge", replies=(TrainReport,))
@dataclass(frozen=True)
class AcquireKnowledge:
    """Buffer the dreams with the aggregated logits z̄ and distil them into the local model."""

    task_id: str
    round: int
    dreams: torch.Tensor = field(repr=False)  # (B, C, H, W)
    logits: torch.Tensor = field(repr=False)  # (B, classes)

    def __post_init__(self) -> None:
        if self.logits.ndim != 2 or self.dreams.ndim != 4 or self.logits.shape[0] != self.dreams.shape[0]:
            raise ValueError(f"logits {tuple(self.logits.shape)} do not match dreams "
                             f"{tuple(self.dreams.shape)}")


@task_kind("fedavg_train", replies=(Contribution,), clip="parameters_clip")
@dataclass(frozen=True)
class FedAvgTrain:
    """Load the global parameters (None: keep own), train, return w_k·θ_k."""

    task_id: str
    round: int
    epochs: int
    parameters: np.ndarray | None = field(default=None, repr=False)


@task_kind("load_parameters", replies=(Ack,))
@dataclass(frozen=True)
class LoadParameters:
    task_id: str
    round: int
    parameters: np.ndarray = field(repr=False)


@task_kind("evaluate", replies=(EvalReport,))
@dataclass(frozen=True)
class Evaluate:
    task_id: str
    round: int


def payload_bytes(message: object) -> int:
    """Bytes of tensor payload a message carries (what dominates the wire)."""
    total = 0
    for value in vars(message).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total
