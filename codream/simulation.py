"""`codream simulate`: a whole federation in one process, over the in-memory transport.

Composition only: it builds the nodes and the coordinator's round logic from one RunConfig and
drives them; the algorithm lives in the core modules and the two logic objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from client_node.build import build_node, build_seeded_model, client_partitions, node_id
from codream.aggregation import PlainSummer, Summer
from codream.centralized import run_centralized
from codream.config import RunConfig
from codream.data import Dataset, load_dataset
from codream.devices import resolve_device
from codream.in_memory_transport import drive
from codream.partition import class_histogram, format_histogram, label_skew
from codream.report import write_accuracy_plot, write_config, write_dream_grid, write_metrics
from codream.training import predict_logits
from coordinator.round_logic import CoordinatorRoundLogic, RoundReport

log = logging.getLogger(__name__)


@dataclass
class SimulationResult:
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None
    final_dreams: torch.Tensor | None


def build_coordinator(config: RunConfig, dataset: Dataset, device: torch.device
                      ) -> CoordinatorRoundLogic:
    server_model = None
    if config.strategy == "codream" and config.server_model.model:
        server_model = build_seeded_model(config.server_model.model, dataset, config.seed + 99_991)
    return CoordinatorRoundLogic(
        config, dataset.input_shape, dataset.num_classes, server_model,
        dataset.x_test, dataset.y_test, device,
    )


def default_summer(config: RunConfig, weights: dict[str, float]) -> Summer:
    """Secure aggregation whenever there are at least two clients to hide among."""
    if config.secagg.enabled and len(weights) >= 2:
        from coordinator.secure_summer import InProcessSecureSummer

        return InProcessSecureSummer(config.secagg, weights)
    return PlainSummer()


def simulate(
    config: RunConfig,
    run_dir: Path | None = None,
    summer: Summer | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> SimulationResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dataset = load_dataset(config.dataset)
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"strategy": config.strategy, "dataset": config.dataset,
                               "device": str(device)}
    final_dreams = None
    coordinator = None

    def record(metrics: dict[str, Any]) -> None:
        history.append(metrics)
        if on_round is not None:
            on_round(metrics)

    if config.strategy == "centralized":
        model = build_seeded_model(config.model_for(0), dataset, config.seed + 1)
        for metrics in run_centralized(config, dataset, model, device):
            record(metrics)
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
        write_run_outputs(run_dir, config, dataset, history, summary, coordinator)
    return SimulationResult(history, summary, run_dir, final_dreams)


def partition_summary(config: RunConfig, dataset: Dataset, parts: list[np.ndarray]) -> dict[str, Any]:
    hist = class_histogram(dataset.y_train.numpy(), parts, dataset.num_classes)
    log.info("class histogram per client:\n%s", format_histogram(hist))
    return {"class_histogram": hist.tolist(), "label_skew": float(label_skew(hist)),
            "models": {node_id(i): config.model_for(i) for i in range(config.clients)}}


def write_run_outputs(run_dir: Path, config: RunConfig, dataset: Dataset, history: list[dict[str, Any]],
                      summary: dict[str, Any], coordinator: CoordinatorRoundLogic | None) -> None:
    """The run directory, the same for a simulation and a cluster: config, metrics, plots, dreams."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    write_metrics(run_dir, config, history, summary)
    write_accuracy_plot(run_dir / "accuracy.png", history,
                        f"{config.strategy} on {config.dataset}, {config.clients} clients")
    final_dreams = coordinator.last_dreams if coordinator is not None else None
    if final_dreams is not None:
        np.save(run_dir / "final_dreams.npy", final_dreams.cpu().numpy())
        labels = None
        if coordinator.server_model is not None:
            labels = predict_logits(coordinator.server_model,
                                    final_dreams.to(coordinator.device)).argmax(1).cpu()
        write_dream_grid(run_dir / "dreams.png", final_dreams, labels,
                         dataset.channel_mean, dataset.channel_std)


def _as_metrics(report: RoundReport) -> dict[str, Any]:
    return report.metrics


def final_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    if not history:
        return {}
    last = history[-1]
    accuracies = [c["accuracy"] for c in last["clients"].values()]
    sent = [b["sent"] for m in history for b in m.get("bytes", {}).values()]
    received = [b["received"] for m in history for b in m.get("bytes", {}).values()]
    rounds_with_traffic = max(1, sum(1 for m in history if m.get("bytes")))
    clients = max(1, len(last["clients"]))
    out = {
        "final_mean_client_accuracy": float(np.mean(accuracies)),
        "final_std_client_accuracy": float(np.std(accuracies)),
        "final_client_accuracy": {k: v["accuracy"] for k, v in last["clients"].items()},
        "bytes_sent_per_client_per_round": float(sum(sent)) / clients / rounds_with_traffic,
        "bytes_received_per_client_per_round": float(sum(received)) / clients / rounds_with_traffic,
    }
    if "server_accuracy" in last:
        out["final_server_accuracy"] = last["server_accuracy"]
    return out
