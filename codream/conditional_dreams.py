"""Class-conditional dreams: each dream has a class, and only the clients that hold it shape it.

With fresh dreams every client minimises its own prediction entropy, so under label skew a
client that never saw a digit still pulls every dream towards the digits it knows, and a weak
model pulls as hard as a strong one. Here dream i is assigned the class y_i = i mod classes
(known to everyone, nothing to send); a client minimises CE(f_k(x̂_i), y_i) instead of the
entropy and weights its change to dream i by n_k(y_i), its count of that class. The counts
travel beside the weighted changes in the same secure sum, so the coordinator divides by
Σ_k n_k(y_i) and learns only the global class histogram, which the class-count soft labels
already reveal. A class nobody holds keeps its dreams where they are.
"""

from __future__ import annotations

import math

import torch


def dream_targets(batch: int, classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """y (B,): every class equally often, the same for every client and every step."""
    return torch.arange(batch, device=device) % classes


def class_weighted_update(delta: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor
                          ) -> torch.Tensor:
    """What a client adds to the sum: [n_k(y_i)·Δ_i for every dream i, then n_k] (B·D + classes,)."""
    counts = counts.to(delta.device).float()  # (classes,)
    per_dream = counts[targets].view(-1, *([1] * (delta.dim() - 1)))  # (B, 1, 1, 1)
    return torch.cat([(delta.float() * per_dream).reshape(-1), counts])


def class_weighted_mean(total: torch.Tensor, shape: tuple[int, ...], classes: int) -> torch.Tensor:
    """Δ̄ (B, C, H, W) from the summed contributions: Σ_k n_k(y_i)Δ_k,i / Σ_k n_k(y_i)."""
    batch, dim = shape[0], math.prod(shape)
    changes = total[:dim].view(shape)
    counts = total[dim:dim + classes]  # (classes,) Σ_k n_k
    per_dream = counts[dream_targets(batch, classes, total.device)]  # (B,)
    scale = torch.where(per_dream > 0, 1.0 / per_dream.clamp_min(1e-12), torch.zeros_like(per_dream))
    return changes * scale.view(-1, *([1] * (len(shape) - 1)))


def conditional_update_size(shape: tuple[int, ...], classes: int) -> int:
    return math.prod(shape) + classes
