"""The run directory: metrics.json, config.toml, a PNG grid of dreams and an accuracy curve."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from codream.atomic_files import atomic_write_text
from codream.config import RunConfig, to_dict, to_toml


def write_metrics(run_dir: Path, config: RunConfig, history: list[dict[str, Any]],
                  summary: dict[str, Any]) -> Path:
    path = run_dir / "metrics.json"
    payload = {"config": to_dict(config), "rounds": history, "summary": summary}
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))
    return path


def write_config(run_dir: Path, config: RunConfig) -> Path:
    path = run_dir / "config.toml"
    atomic_write_text(path, to_toml(config))
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


def write_dream_grid(path: Path, dreams: torch.Tensor, labels: torch.Tensor | None,
                     channel_mean: tuple[float, ...], channel_std: tuple[float, ...],
                     max_images: int = 64) -> Path:
    """Dreams mapped back to pixel space (undoing the data set's normalisation), with argmax labels."""
    plt = _pyplot()
    x = dreams[:max_images].detach().cpu().float()  # (n, C, H, W)
    if channel_mean and channel_std:
        mean = torch.tensor(channel_mean).view(1, -1, 1, 1)
        std = torch.tensor(channel_std).view(1, -1, 1, 1)
        x = x * std + mean
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    n = len(x)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = x[i].permute(1, 2, 0).numpy()
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
        if labels is not None:
            ax.set_title(str(int(labels[i])), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_accuracy_plot(path: Path, history: list[dict[str, Any]], title: str) -> Path:
    plt = _pyplot()
    fig = accuracy_figure(history, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def accuracy_figure(history: list[dict[str, Any]], title: str) -> Any:
    """Test accuracy per round: each client, their mean, and the server model where there is one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [m["round"] for m in history]
    clients = sorted({c for m in history for c in m.get("clients", {})})
    for client in clients:
        ax.plot(rounds, [m["clients"].get(client, {}).get("accuracy", math.nan) for m in history],
                alpha=0.5, linewidth=1, label=client)
    ax.plot(rounds, [m.get("mean_client_accuracy", math.nan) for m in history], "k-",
            linewidth=2, label="client mean")
    if any("server_accuracy" in m for m in history):
        ax.plot(rounds, [m.get("server_accuracy", math.nan) for m in history], "r--",
                linewidth=2, label="server model (dreams only)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
