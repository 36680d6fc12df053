"""Centralized: one model trained on the pooled data, in process: the upper bound, not federated.

It needs no transport, so it reports per 'round' (the same epoch boundaries as the federated
strategies) directly.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import torch

from codream.models import build_seeded_model
from codream.strategies.base import Strategy
from codream.training import evaluate, train_supervised

if TYPE_CHECKING:
    from codream.config import RunConfig
    from codream.data import Dataset


class Centralized(Strategy):
    name = "centralized"
    federated = False

    @classmethod
    def run_pooled(cls, config: RunConfig, dataset: Dataset, device: torch.device
                   ) -> Generator[dict[str, Any], None, torch.nn.Module]:
        """Yields each round's metrics and returns the trained model (written as models/pooled.pt)."""
        model = build_seeded_model(config.model_for(0), dataset.input_shape, dataset.num_classes,
                                   config.seed + 1).to(device)
        x, y = dataset.x_train.to(device), dataset.y_train.to(device)
        x_test, y_test = dataset.x_test.to(device), dataset.y_test.to(device)
        generator = torch.Generator().manual_seed(config.seed)
        for r in range(config.rounds + 1):
            started = time.perf_counter()
            epochs = config.warmup_epochs if r == 0 else config.local_epochs
            train_supervised(model, x, y, epochs, config.train.optimizer_config(), generator)
            accuracy, loss = evaluate(model, x_test, y_test)
            yield {
                "round": r,
                "clients": {"pooled": {"accuracy": accuracy, "loss": loss}},
                "mean_client_accuracy": accuracy,
                "bytes": {},
                "seconds": time.perf_counter() - started,
            }
        return model
