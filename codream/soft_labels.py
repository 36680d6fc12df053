"""Soft labels on the final dreams: what each client contributes and how the sums become targets.

`samples` (DESIGN §1): z̄ = Σ w_k z_k / Σ w_k over logits. `class_counts`: each class's score is
averaged only over the clients that hold that class, weighted by how many samples of it they
hold: z̄_c = Σ_k n_kc log p_k(c|x̂) / Σ_k n_kc. Under label skew a class seen by one client is
otherwise outvoted by clients that never saw it (on MNIST Dirichlet(0.5) the digit 9, held by
one client, never won a dream's soft label). Both are plain sums, so secure aggregation carries
either; `class_counts` reveals the global class histogram Σ_k n_kc to the coordinator, nothing
per client.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MODES = ("samples", "class_counts", "class_probs")


def soft_label_values(
    logits: torch.Tensor,  # (B, classes)
    weight: float,
    class_counts: torch.Tensor,  # (classes,)
    mode: str,
) -> torch.Tensor:
    """The flat vector a client adds to the secure sum: (B·classes,) or (B·classes + classes,)."""
    if mode == "samples":
        return (logits.float() * weight).reshape(-1)
    if mode in ("class_counts", "class_probs"):
        counts = class_counts.to(logits.device).float()  # (classes,)
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, classes)
        scores = (log_p.exp() if mode == "class_probs" else log_p) * counts
        return torch.cat([scores.reshape(-1), counts])
    raise ValueError(f"distill.soft_labels: unknown mode {mode!r}; use one of {', '.join(MODES)}")


def soft_label_size(batch: int, classes: int, mode: str) -> int:
    return batch * classes + (0 if mode == "samples" else classes)


def aggregated_logits(total: torch.Tensor, weight: float, batch: int, classes: int, mode: str
                      ) -> torch.Tensor:
    """z̄ (B, classes) from the sums; a class no client holds gets the lowest score seen."""
    if mode == "samples":
        return (total / weight).view(batch, classes)
    scores = total[: batch * classes].view(batch, classes)
    counts = total[batch * classes :]  # (classes,)
    held = counts > 0
    out = torch.empty_like(scores)
    out[:, held] = scores[:, held] / counts[held]
    if mode == "class_probs":  # the count-weighted mean probability, as logits
        out[:, held] = out[:, held].clamp_min(1e-8).log()
    if (~held).any():
        out[:, ~held] = out[:, held].min() if held.any() else 0.0
    return out


def kept_per_batch(batch: int, fraction: float) -> int:
    """How many dreams of a batch of `batch` knowledge acquisition keeps (`distill.keep_confident`)."""
    return max(1, math.ceil(batch * fraction - 1e-9))


def most_confident(logits: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (ascending) of the `keep` dreams whose aggregated soft label is most confident.

    A dream that the clients pull towards different classes gets a z̄ with several high scores,
    so a low max softmax(z̄); keeping the confident ones keeps the dreams the federation agrees
    on. Ties go to the lower index, so every party selects the same dreams."""
    confidence = F.softmax(logits.float(), dim=1).max(dim=1).values  # (B,)
    order = torch.argsort(-confidence, stable=True)
    return order[:keep].sort().values
