"""Builds one node's task logic from the run config: its partition of the data, model and seeds.

Shared by `codream simulate` and the node daemon, so both give client k the same data, the
same initial weights and the same shuffling.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from codream.config import RunConfig
from codream.data import Dataset
from codream.models import build_model
from codream.node_logic import LocalData, NodeTaskLogic
from codream.partition import partition


def node_id(index: int) -> str:
    return f"node-{index}"


def client_partitions(config: RunConfig, dataset: Dataset) -> list[np.ndarray]:
    labels = dataset.y_train.numpy()
    return partition(labels, config.clients, config.partition, config.seed, config.min_client_size)


def init_seed(config: RunConfig, index: int) -> int:
    """FedAvg needs one common initialisation; other strategies give each client its own."""
    return config.seed if config.strategy == "fedavg" else config.seed * 7919 + index + 1


_GLOBAL_RNG = threading.Lock()  # torch's CPU generator is one per process, shared by threads


def build_seeded_model(name: str, dataset: Dataset, seed: int) -> torch.nn.Module:
    """Seeded through torch's global generator, so held under a lock: nodes built on threads of
    one process must get exactly the weights `codream simulate` gives them."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, dataset.input_shape, dataset.num_classes)


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
    model = build_seeded_model(name, dataset, init_seed(config, index))
    student = None
    if config.strategy == "codream" and config.dream.adaptive > 0:
        student = build_seeded_model(name, dataset, init_seed(config, index) + 104_729)
    return NodeTaskLogic(
        node_id(index), model, data, config, device, seed=config.seed * 10_007 + index, student=student
    )
