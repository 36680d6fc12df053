"""Domain messages between the coordinator's round logic and a node's task logic.

Both transports carry exactly these: the in-memory one passes the objects, the gRPC one
converts them to protobuf and back. Tensors are CPU float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from codream.aggregation import Contribution


@dataclass(frozen=True)
class TrainLocal:
    """Supervised training on the node's own data (warm-up, or the Independent baseline)."""

    task_id: str
    round: int
    epochs: int


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


@dataclass(frozen=True)
class SoftLabels:
    """Return w_k·f_k(x̂) (logits, eval mode) on the final dreams."""

    task_id: str
    round: int
    dreams: torch.Tensor = field(repr=False)


@dataclass(frozen=True)
class AcquireKnowledge:
    """Buffer the dreams with the aggregated logits z̄ and distil them into the local model."""

    task_id: str
    round: int
    dreams: torch.Tensor = field(repr=False)
    logits: torch.Tensor = field(repr=False)  # (B, classes)


@dataclass(frozen=True)
class FedAvgTrain:
    """Load the global parameters (None: keep own), train, return w_k·θ_k."""

    task_id: str
    round: int
    epochs: int
    parameters: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LoadParameters:
    task_id: str
    round: int
    parameters: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Evaluate:
    task_id: str
    round: int


Task = TrainLocal | DreamStep | SoftLabels | AcquireKnowledge | FedAvgTrain | LoadParameters | Evaluate

# Tasks whose replies are summed (securely, once the secagg summer is plugged in).
SUMMED_TASKS = (DreamStep, SoftLabels, FedAvgTrain)


@dataclass(frozen=True)
class Skip:
    """A node declines a summed task (e.g. its update was not finite); it is left out of the sum."""

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


def payload_bytes(message: object) -> int:
    """Bytes of tensor payload a message carries (what dominates the wire)."""
    total = 0
    for value in vars(message).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total
