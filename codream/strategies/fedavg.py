"""FedAvg (McMahan et al. 2017): the baseline on the same machinery, averaging model parameters.

Every client starts from one initialisation and trains; the coordinator learns only the
(secure) sum of w_k·θ_k and sends the mean back. Homogeneous models only; no warm-up round 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from codream.messages import FedAvgTrain, LoadParameters
from codream.models import build_model
from codream.nested_config import require
from codream.parameters import state_size
from codream.round_protocol import SHARE, Broadcast, RoundSteps, required_sum
from codream.strategies.base import FederationSetting, Strategy

if TYPE_CHECKING:
    from codream.config import RunConfig


class FedAvg(Strategy):
    name = "fedavg"
    tasks = (FedAvgTrain, LoadParameters)
    first_round = 1
    shared_initialisation = True

    def __init__(self, setting: FederationSetting) -> None:
        super().__init__(setting)
        self.global_parameters: np.ndarray | None = None  # θ, None until a round has averaged one

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        require(len(set(config.models)) == 1, "models",
                "fedavg averages parameters, so every client needs the same model; "
                f"got {', '.join(config.models)}")

    def round(self, round_index: int) -> RoundSteps:
        r = round_index
        parameters = self.global_parameters
        size = self._parameter_count() if parameters is None else len(parameters)
        task = FedAvgTrain(f"r{r}/fedavg", r, self.config.local_epochs, parameters)
        total = required_sum((yield Broadcast(task, size)), task)
        parameters = total.mean().astype(np.float32)
        yield Broadcast(LoadParameters(f"r{r}/load", r, parameters), audience=SHARE)
        self.global_parameters = parameters  # θ for the next round, and for checkpoints
        return {"clients_summed": len(total.contributors)}

    def _parameter_count(self) -> int:
        """The vector length from the architecture alone (a secure sum must know it up front);
        the coordinator builds the model only to count, never sees a node's weights."""
        setting = self.setting
        with torch.random.fork_rng(devices=[]):
            model = build_model(self.config.model_for(0), setting.input_shape, setting.num_classes)
        return state_size(model)

    def state_dict(self) -> dict[str, Any]:
        parameters = self.global_parameters
        return {"global_parameters": torch.from_numpy(parameters.copy()) if parameters is not None
                else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        parameters = state["global_parameters"]
        self.global_parameters = parameters.numpy().copy() if parameters is not None else None
