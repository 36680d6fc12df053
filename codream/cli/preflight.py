"""Checks a run config against this machine before anything trains, so that a mistake found
an hour in (a partition that cannot be drawn, a model too big for the images) is found at once.

Each check raises ConfigError naming the field at fault; the run-config loader then replaces
the field with the flag, variable or file line the user set it with.
"""

from __future__ import annotations

import torch

from codream.config import ConfigError, RunConfig
from codream.data import Dataset, load_dataset
from codream.devices import resolve_device
from codream.messages import TASK_KINDS, DreamStep
from codream.models import build_model
from codream.node_build import client_partitions
from codream.strategies import strategy_named


def check_run(config: RunConfig) -> None:
    """Everything `simulate`, a coordinator or a cluster needs before its first round."""
    check_secure_clients(config)
    check_device(config.device, "device")
    dataset = check_dataset(config.dataset, "dataset")
    if strategy_named(config.strategy).federated:
        check_partition(config, dataset)
    check_models(config, dataset)


def check_secure_clients(config: RunConfig) -> None:
    """A secure sum hides each client among the others: one client has nobody to hide among."""
    strategy = strategy_named(config.strategy)
    sums = any(TASK_KINDS[task].summed for task in strategy.tasks if task in TASK_KINDS)
    if config.secagg.enabled and strategy.federated and sums and config.clients < 2:
        raise ConfigError(
            f"clients: secure aggregation (secagg.enabled, the default) needs at least 2 clients "
            f"to hide each one's values among, got {config.clients}; add clients or "
            f"--set secagg.enabled=false")


def check_device(name: str, field: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as error:
        raise ConfigError(f"{field}: {error}") from error


def check_dataset(spec: str, field: str) -> Dataset:
    try:
        return load_dataset(spec)
    except ValueError as error:
        raise ConfigError(f"{field}: {error}") from error


def check_partition(config: RunConfig, dataset: Dataset) -> None:
    samples = len(dataset.y_train)
    if config.clients * config.min_client_size > samples:
        raise ConfigError(
            f"clients: cannot give each of {config.clients} clients min_client_size="
            f"{config.min_client_size} training samples: {dataset.name} has {samples} (at most "
            f"{samples // config.min_client_size} clients); use fewer clients or a smaller "
            f"--set min_client_size=N")
    try:
        client_partitions(config, dataset)
    except ValueError as error:
        raise ConfigError(
            f"partition: {config.partition} over {config.clients} clients cannot give every client "
            f"min_client_size={config.min_client_size} samples ({error}); use a larger ALPHA, fewer "
            f"clients or a smaller --set min_client_size=N") from error


def check_models(config: RunConfig, dataset: Dataset) -> None:
    """Every model builds and takes one batch of the data set's images."""
    wanted = {name: "models" for name in config.models}
    if DreamStep in strategy_named(config.strategy).tasks and config.server_model.model:
        wanted.setdefault(config.server_model.model, "server_model.model")
    c, h, w = dataset.input_shape
    for name, field in wanted.items():
        try:
            model = build_model(name, dataset.input_shape, dataset.num_classes)
        except ValueError as error:
            raise ConfigError(f"{field}: {error}") from error
        model.eval()
        try:
            with torch.no_grad():
                logits = model(torch.zeros(2, c, h, w))
        except Exception as error:  # noqa: BLE001 - whatever the model raises, say which model
            cause = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(
                f"{field}: {name} cannot take the {c}x{h}x{w} images of {dataset.name} ({cause}); "
                f"use larger images or another model") from error
        if tuple(logits.shape) != (2, dataset.num_classes):
            raise ConfigError(
                f"{field}: {name} maps a batch of 2 images to shape {tuple(logits.shape)}, not "
                f"(2, {dataset.num_classes}) logits for the {dataset.num_classes} classes of "
                f"{dataset.name}")
