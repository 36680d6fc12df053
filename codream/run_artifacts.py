"""What a finished run leaves a user to take home: trained models and the dream data set.

Each node writes its own model (`node_info` + `model_artifacts.save_model`; in a cluster the node
daemon does it, since the coordinator never receives a node's model). The coordinator writes what
it holds itself: CoDream's server model (trained on dreams only), FedAvg's global model (the
average it already learns) and the dream data set with its aggregated soft labels. A pooled
(non-federated) strategy's run returns its one model, written as `models/pooled.pt`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from codream.config import RunConfig
from codream.data import Dataset
from codream.dream_artifacts import save_dreams
from codream.dream_buffer import DreamBuffer
from codream.model_artifacts import ModelInfo, save_model
from codream.models import build_seeded_model
from codream.node_build import node_id
from codream.parameters import load_flat_state
from codream.round_logic import CoordinatorRoundLogic

log = logging.getLogger(__name__)

MODELS_DIR = "models"  # RUN/models/<node id>.pt, server.pt, global.pt
DREAMS_FILE = "dreams.npz"
SERVER_MODEL = "server.pt"
GLOBAL_MODEL = "global.pt"
POOLED_MODEL = "pooled.pt"


def model_info(dataset: Dataset, model: str, role: str, node_id: str, strategy: str, round_index: int
               ) -> ModelInfo:
    """The metadata of a model trained on (or for) `dataset`: its shape, classes and normalisation."""
    return ModelInfo(model=model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                     channel_mean=tuple(dataset.channel_mean), channel_std=tuple(dataset.channel_std),
                     role=role, node_id=node_id, strategy=strategy, round=round_index,
                     dataset=dataset.name)


def node_info(config: RunConfig, dataset: Dataset, index: int, node_id: str, round_index: int
              ) -> ModelInfo:
    """Client `index`'s model as `node_id` trained it on its data (of `dataset`'s shape)."""
    return model_info(dataset, config.model_for(index), "node", node_id, config.strategy, round_index)


def write_node_models(models_dir: Path, config: RunConfig, dataset: Dataset,
                      models: Sequence[nn.Module], round_index: int) -> list[Path]:
    """`models_dir/node-k.pt` for client k's model, for in-process nodes (`codream simulate`)."""
    return [save_model(models_dir / f"{node_id(k)}.pt", module,
                       node_info(config, dataset, k, node_id(k), round_index))
            for k, module in enumerate(models)]


def write_pooled_model(models_dir: Path, config: RunConfig, dataset: Dataset, module: nn.Module,
                       round_index: int) -> Path:
    """`models_dir/pooled.pt`: the one model a pooled strategy (Centralized) trained on all the
    data, built as `Strategy.run_pooled` builds it, from the first client's model name."""
    info = model_info(dataset, config.model_for(0), "pooled", "pooled", config.strategy, round_index)
    path = save_model(models_dir / POOLED_MODEL, module, info)
    log.info("wrote %s", path)
    return path


def write_coordinator_artifacts(run_dir: Path, config: RunConfig, dataset: Dataset,
                                coordinator: CoordinatorRoundLogic) -> list[Path]:
    """The server model, FedAvg's global model and the dream data set, where the run has them."""
    written: list[Path] = []
    round_index = coordinator.next_round - 1  # the last completed round
    models_dir = run_dir / MODELS_DIR
    server = coordinator.server_model
    if server is not None and coordinator.history:
        info = model_info(dataset, config.server_model.model, "server", "coordinator", config.strategy,
                          round_index)
        written.append(save_model(models_dir / SERVER_MODEL, server, info))
    parameters = getattr(coordinator.strategy, "global_parameters", None)
    if parameters is not None:  # FedAvg: the mean of the nodes' parameters, which it learns anyway
        name = config.model_for(0)
        module = build_seeded_model(name, dataset.input_shape, dataset.num_classes, config.seed)
        load_flat_state(module, parameters)
        info = model_info(dataset, name, "global", "coordinator", config.strategy, round_index)
        written.append(save_model(models_dir / GLOBAL_MODEL, module, info))
    buffer = getattr(coordinator.strategy, "server_buffer", None)
    if isinstance(buffer, DreamBuffer) and buffer.num_batches > 0:
        dreams, logits = buffer.tensors()  # every buffered batch: what the server model learnt from
        written.append(save_dreams(run_dir / DREAMS_FILE, dreams, logits, tuple(dataset.channel_mean),
                                   tuple(dataset.channel_std), dataset.name, round_index))
    for path in written:
        log.info("wrote %s", path)
    return written

