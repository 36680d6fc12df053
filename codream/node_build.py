"""Builds one node's task logic from the run config: its partition of the data, model and seeds.

Shared by `codream simulate` and the node daemon, so both give client k the same data, the
same initial weights and the same shuffling.
"""

from __future__ import annotations

import numpy as np
import torch

from codream.config import RunConfig
from codream.data import Dataset
from codream.models import build_seeded_model
from codream.node_logic import LocalData, NodeTaskLogic
from codream.partition import partition
from codream.strategies import strategy_named


def node_id(index: int) -> str:
    return f"node-{index}"


def client_partitions(config: RunConfig, dataset: Dataset) -> list[np.ndarray]:
    labels = dataset.y_train.numpy()
    return partition(labels, config.clients, config.partition, config.seed, config.min_client_size)


def init_seed(config: RunConfig, index: int) -> int:
    """One common initialisation where the strategy needs it (FedAvg), else each client its own."""
    if strategy_named(config.strategy).shared_initialisation:
        return config.seed
    return config.seed * 7919 + index + 1


def build_node(
    config: RunConfig,
    index: int,
    dataset: Dataset,
    parts: list[np.ndarray],
    device: torch.device,
) -> NodeTaskLogic:
    indices = torch.from_numpy(parts[index])
    data = LocalData(
        dataset.x_train[indices], dataset.y_train[indices], dataset.x_test, dataset.y_test
    )
    name = config.model_for(index)
    shape, classes = dataset.input_shape, dataset.num_classes
    model = build_seeded_model(name, shape, classes, init_seed(config, index))
    student = None
    if strategy_named(config.strategy).node_needs_student(config):
        student = build_seeded_model(name, shape, classes, init_seed(config, index) + 104_729)
    return NodeTaskLogic(
        node_id(index), model, data, config, device, seed=config.seed * 10_007 + index, student=student,
        num_classes=classes,
    )
