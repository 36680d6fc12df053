"""The Centralized reference: one model trained on the pooled data, in process.

It is the upper bound federated methods are compared against; it needs no transport, so it
reports per 'round' (the same epoch boundaries as the federated strategies) directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch

from codream.config import RunConfig
from codream.data import Dataset
from codream.training import evaluate, train_supervised


def run_centralized(
    config: RunConfig, dataset: Dataset, model: torch.nn.Module, device: torch.device
) -> Iterator[dict[str, Any]]:
    model = model.to(device)
    x, y = dataset.x_train.to(device), dataset.y_train.to(device)
    x_test, y_test = dataset.x_test.to(device), dataset.y_test.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    for r in range(config.rounds + 1):
        started = time.perf_counter()
        epochs = config.warmup_epochs if r == 0 else config.local_epochs
        train_supervised(model, x, y, epochs, config.train.sgd(), generator)
        accuracy, loss = evaluate(model, x_test, y_test)
        yield {
            "round": r,
            "clients": {"pooled": {"accuracy": accuracy, "loss": loss}},
            "mean_client_accuracy": accuracy,
            "bytes": {},
            "seconds": time.perf_counter() - started,
        }
