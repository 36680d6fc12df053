"""What a run shows on the terminal: how many progress steps it takes, and its closing line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codream.config import RunConfig
from codream.strategies import strategy_named


def progress_total(config: RunConfig) -> int:
    """Progress-bar steps: the rounds the run's strategy reports (FedAvg has no round 0)."""
    return strategy_named(config.strategy).rounds_in(config)


def summary_line(what: str, summary: Mapping[str, Any]) -> str:
    """The one line a finished run prints, the same for a simulation and a cluster."""
    line = f"{what}: final mean client accuracy {summary.get('final_mean_client_accuracy', float('nan')):.4f}"
    if "final_server_accuracy" in summary:
        line += f", server model (dreams only) {summary['final_server_accuracy']:.4f}"
    return line
