"""What a finished run reports and writes, the same for `codream simulate` and a cluster.

The summary numbers (final accuracies, bytes per client per round), the class histogram per
client, and the run directory: config, metrics, accuracy plot, final dreams and their grid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from codream.config import RunConfig
from codream.data import Dataset
from codream.html_report import round_bytes, write_report
from codream.node_build import node_id
from codream.partition import class_histogram, format_histogram, label_skew
from codream.report import write_accuracy_plot, write_config, write_dream_grid, write_metrics
from codream.round_logic import CoordinatorRoundLogic
from codream.run_artifacts import write_coordinator_artifacts
from codream.training import predict_logits

log = logging.getLogger(__name__)

# Every file `write_run_outputs` may write into a run directory.
RUN_FILES = ("config.toml", "metrics.json", "accuracy.png", "dreams.png", "final_dreams.npy",
             "dreams.npz", "models", "report.html")


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
    if coordinator is not None and final_dreams is not None:
        np.save(run_dir / "final_dreams.npy", final_dreams.cpu().numpy())
        labels = None
        if coordinator.server_model is not None:
            labels = predict_logits(coordinator.server_model,
                                    final_dreams.to(coordinator.device)).argmax(1).cpu()
        write_dream_grid(run_dir / "dreams.png", final_dreams, labels,
                         dataset.channel_mean, dataset.channel_std)
    if coordinator is not None:
        write_coordinator_artifacts(run_dir, config, dataset, coordinator)
    write_report(run_dir)  # last: the page shows the files written above


def final_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    if not history:
        return {}
    last = history[-1]
    accuracies = [c["accuracy"] for c in last["clients"].values()]
    sent = [b["sent"] for m in history for b in m.get("bytes", {}).values()]
    received = [b["received"] for m in history for b in m.get("bytes", {}).values()]
    # A round counts when it moved payload: CoDream's warm-up (round 0) broadcasts TrainLocal to
    # every node and so lists them all, at 0 bytes; counting it understated a dream round by 1/4.
    rounds_with_traffic = max(1, sum(1 for m in history if round_bytes(m) > 0))
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
