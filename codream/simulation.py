"""`codream simulate`: a whole federation in one process, over the in-memory transport.

Composition only: it builds the nodes and the coordinator's round logic from one RunConfig and
drives them; the algorithm lives in the core modules and the two logic objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codream.aggregation import PlainSummer, Summer
from codream.config import RunConfig
from codream.data import load_dataset
from codream.devices import resolve_device, torch_threads
from codream.in_memory_transport import drive
from codream.node_build import build_node, client_partitions, node_id
from codream.node_logic import NodeTaskLogic
from codream.round_logic import CoordinatorRoundLogic, build_coordinator
from codream.round_protocol import RoundReport
from codream.run_artifacts import MODELS_DIR, write_node_models, write_pooled_model
from codream.run_outputs import final_summary, partition_summary, write_run_outputs
from codream.secure_summer import InProcessSecureSummer
from codream.strategies import strategy_named

log = logging.getLogger(__name__)


@dataclass
class SimulationResult:
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None
    final_dreams: torch.Tensor | None
    # The trained objects themselves, for a caller that goes on using them (empty / None for a
    # pooled strategy): each node's task logic by node id, and the coordinator's round logic.
    nodes: dict[str, NodeTaskLogic] = field(default_factory=dict)
    coordinator: CoordinatorRoundLogic | None = None


def default_summer(config: RunConfig, weights: dict[str, float]) -> Summer:
    """Secure aggregation whenever there are at least two clients to hide among."""
    if config.secagg.enabled and len(weights) >= 2:
        return InProcessSecureSummer(config.secagg, weights)
    return PlainSummer()


def simulate(
    config: RunConfig,
    run_dir: Path | None = None,
    summer: Summer | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> SimulationResult:
    """The whole run on `config.threads` torch threads (the previous count is put back after)."""
    with torch_threads(config.threads):
        return _simulate(config, run_dir, summer, on_round)


def _simulate(config: RunConfig, run_dir: Path | None, summer: Summer | None,
              on_round: Callable[[dict[str, Any]], None] | None) -> SimulationResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dataset = load_dataset(config.dataset)
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"strategy": config.strategy, "dataset": config.dataset,
                               "device": str(device)}
    final_dreams = None
    coordinator = None
    nodes: dict[str, NodeTaskLogic] = {}

    def record(metrics: dict[str, Any]) -> None:
        history.append(metrics)
        if on_round is not None:
            on_round(metrics)

    strategy = strategy_named(config.strategy)
    pooled_model = None
    if not strategy.federated:
        pooled_model = _run_pooled(strategy.run_pooled(config, dataset, device), record)
    else:
        parts = client_partitions(config, dataset)
        summary.update(partition_summary(config, dataset, parts))
        nodes = {node_id(i): build_node(config, i, dataset, parts, device)
                 for i in range(config.clients)}
        coordinator = build_coordinator(config, dataset, device)
        if summer is None:
            summer = default_summer(config, {k: node.weight for k, node in nodes.items()})
        summary["secure_aggregation"] = not isinstance(summer, PlainSummer)
        drive(coordinator.run(), nodes, summer,
              on_report=lambda report: record(_as_metrics(report)))
        final_dreams = coordinator.last_dreams

    summary.update(final_summary(history))
    summary["wall_seconds"] = time.perf_counter() - started
    if run_dir is not None:
        if coordinator is not None:  # each node writes its own model, as a node daemon does
            write_node_models(run_dir / MODELS_DIR, config, dataset,
                              [node.model for node in nodes.values()], coordinator.next_round - 1)
        if pooled_model is not None:
            write_pooled_model(run_dir / MODELS_DIR, config, dataset, pooled_model,
                               history[-1]["round"] if history else 0)
        write_run_outputs(run_dir, config, dataset, history, summary, coordinator)  # report last
    return SimulationResult(history, summary, run_dir, final_dreams, nodes, coordinator)


def _run_pooled(rounds: Iterator[dict[str, Any]], record: Callable[[dict[str, Any]], None]
                ) -> nn.Module | None:
    """Records each round's metrics; the model the pooled run returns (a generator's return
    value, which a plain `for` would drop), or None for one that returns none."""
    while True:
        try:
            metrics = next(rounds)
        except StopIteration as done:
            return done.value if isinstance(done.value, nn.Module) else None
        record(metrics)


def _as_metrics(report: RoundReport) -> dict[str, Any]:
    return report.metrics
