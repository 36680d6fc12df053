"""What a strategy is: one federated method's coordinator side, the node tasks it uses, its state.

A strategy's `round(r)` is a generator that yields `Broadcast`s and receives `Replies`; the
round logic (codream.round_logic) relays them to a transport, counts the traffic, evaluates every
node after the round and reports it. Everything a strategy carries from one round to the next
is in its `state_dict()`, which goes into the coordinator's checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from codream.round_protocol import RoundSteps

if TYPE_CHECKING:  # the config validates strategies by this table, so it sits above them
    from codream.config import RunConfig
    from codream.data import Dataset


@dataclass(frozen=True)
class FederationSetting:
    """What a strategy's coordinator side is given: the run, the data's shape, the shared test set."""

    config: RunConfig
    input_shape: tuple[int, int, int]
    num_classes: int
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    device: torch.device


class Strategy:
    """Subclass, set the class attributes, write `round`, and `register` it (one file)."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[type, ...]] = ()  # the node tasks its rounds send (Evaluate is the driver's)
    first_round: ClassVar[int] = 0  # 0: round 0 is the warm-up; FedAvg starts at 1
    federated: ClassVar[bool] = True  # False: runs in process on the pooled data (Centralized)
    shared_initialisation: ClassVar[bool] = False  # every client starts from the same weights

    # What a run leaves behind for its outputs; a strategy without them leaves None.
    server_model: nn.Module | None = None
    last_dreams: torch.Tensor | None = None

    def __init__(self, setting: FederationSetting) -> None:
        self.setting = setting
        self.config = setting.config

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        """Raises ConfigError naming the field when `config` does not suit this strategy."""

    @classmethod
    def node_needs_student(cls, config: RunConfig) -> bool:
        """Whether each node keeps a dream-trained student model (adaptive teaching)."""
        return False

    @classmethod
    def rounds_in(cls, config: RunConfig) -> int:
        """How many rounds a run reports: progress bars count these."""
        return config.rounds + 1 - cls.first_round

    @classmethod
    def run_pooled(cls, config: RunConfig, dataset: Dataset, device: torch.device
                   ) -> Iterator[dict[str, Any]]:
        """A non-federated strategy's whole run, one metrics dict per round."""
        raise NotImplementedError(f"strategy {cls.name!r} is federated: it runs over a transport")

    def round(self, round_index: int) -> RoundSteps:
        """One round's broadcasts; returns the round's extra metrics (beside the evaluation)."""
        raise NotImplementedError(f"strategy {self.name!r} has no federated round logic")

    def state_dict(self) -> dict[str, Any]:
        """What carries to the next round, as CPU tensors and plain values (weights_only-loadable)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores `state_dict()`; the run then goes on at the round after the last completed one."""


def cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)
