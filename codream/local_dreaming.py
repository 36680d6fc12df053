"""One client's share of a collaborative dream step: M local optimiser steps on a copy of x̂.

The client returns only the change Δ_k = x̂_k,M − x̂ (a pseudo-gradient), never its model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codream.dream_objective import BatchNormStatistics, DreamLossWeights, dream_loss


@dataclass(frozen=True)
class LocalDreamConfig:
    """How a client moves the dreams before sending its change.

    `optimizer="sgd"` with `lr=1` and `steps=1` makes Δ_k = −∇L_k, which with a server Adam is
    DistAdam (Adam on the mean gradient); `"adam"` with several steps is the FedAdam setting.
    """

    steps: int = 1
    lr: float = 1.0
    optimizer: str = "sgd"
    weights: DreamLossWeights = DreamLossWeights()
    bn_reduction: str = "sum"  # BatchNormStatistics: the layers' terms summed or averaged
    update_norm: str = "none"  # "rms": each dream's Δ scaled to unit RMS (see normalise_update)


UPDATE_NORMS = ("none", "rms")


def normalise_update(delta: torch.Tensor, mode: str) -> torch.Tensor:
    """Δ_k as sent. "rms" scales each dream's change to unit root-mean-square, so every client
    pushes every dream equally hard whatever its architecture's gradient scale (a VGG's BN
    prior, an MLP's flat logits); the weights w_k still decide how much each client counts."""
    if mode == "none":
        return delta
    if mode == "rms":
        rms = delta.pow(2).mean(dim=tuple(range(1, delta.dim())), keepdim=True).sqrt()  # (B, 1, 1, 1)
        return delta / rms.clamp_min(1e-12)
    raise ValueError(f"unknown update norm {mode!r}; use one of {', '.join(UPDATE_NORMS)}")


def initial_dreams(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """x̂⁰ ~ N(0, I) drawn from a shared seed, so every client starts from the same batch for free."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)  # (B, C, H, W) on CPU; bitwise reproducible


def local_dream_update(
    model: nn.Module,
    dreams: torch.Tensor,  # (B, C, H, W)
    config: LocalDreamConfig,
    student: nn.Module | None = None,
    targets: torch.Tensor | None = None,  # (B,) classes or (B, classes) probabilities
) -> torch.Tensor:
    """Δ_k for one global step; the model is put in eval mode and its parameters stay untouched."""
    was_training = model.training
    model.eval()
    params_required = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    if student is not None:
        student.eval()
    start = dreams.detach()
    x = start.clone().requires_grad_(True)
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam([x], lr=config.lr)
    else:
        optimizer = torch.optim.SGD([x], lr=config.lr)
    bn_stats = BatchNormStatistics(model, config.bn_reduction)
    try:
        for _ in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            parts = dream_loss(model, x, config.weights, bn_stats, student, targets)
            parts.total.backward()
            optimizer.step()
    finally:
        for p, required in zip(model.parameters(), params_required, strict=False):
            p.requires_grad_(required)
        model.train(was_training)
    return normalise_update(x.detach() - start, config.update_norm)  # (B, C, H, W)
