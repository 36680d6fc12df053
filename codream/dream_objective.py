"""The dream objective L_k(x̂) of CoDream (Singh et al. 2024) with DeepInversion priors.

The loss a client minimises over the shared dreams: low prediction entropy (its model is
confident on them), BatchNorm statistics matching the ones its model saw on real data
(Yin et al., DeepInversion, CVPR 2020), total variation and L2 image priors, and an optional
adaptive-teaching term that pushes dreams to where a student still disagrees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DreamLossWeights:
    """Coefficients of the dream objective; reference defaults from the authors' code."""

    entropy: float = 1.0
    bn: float = 10.0
    tv: float = 2.5e-5
    l2: float = 3e-8
    adaptive: float = 0.0
    diversity: float = 0.0


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of −Σ p log p; computed from log-softmax so it never takes log(0)."""
    log_p = F.log_softmax(logits, dim=1)  # (B, classes)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def class_balance(logits: torch.Tensor) -> torch.Tensor:
    """−H(batch-mean softmax) (DAFL, Chen et al. 2019): lowest when the batch covers all classes.

    Entropy minimisation alone collapses a batch onto the few classes a model is surest of
    (on MNIST Dirichlet(0.5) we saw 180 of 256 dreams become one digit); this keeps the
    batch spread over the classes without assigning labels to dreams.
    """
    mean_p = F.softmax(logits, dim=1).mean(dim=0)  # (classes,)
    return (mean_p * mean_p.clamp_min(1e-12).log()).sum()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of vertically and horizontally neighbouring pixels."""
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]  # (B, C, H-1, W)
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]  # (B, C, H, W-1)
    return dh.pow(2).mean() + dw.pow(2).mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """‖x̂‖₂ over the whole batch."""
    return x.pow(2).sum().sqrt()


def disagreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """−KL(softmax teacher ‖ softmax student): minimising it seeks dreams the student gets wrong."""
    log_t = F.log_softmax(teacher_logits, dim=1)
    log_s = F.log_softmax(student_logits, dim=1)
    return -(log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


class BatchNormStatistics:
    """Collects, via forward hooks, how far each BN layer's input statistics are from its running ones.

    The hooks see the input of every BatchNorm layer; the loss is
    Σ_l ‖μ_l(x̂) − μ_l^run‖₂ + ‖σ²_l(x̂) − σ²_l^run‖₂ with biased variance over (N, H, W).
    Models without BatchNorm contribute zero, so any architecture can join.
    """

    BN_REDUCTIONS = ("sum", "mean")

    def __init__(self, model: nn.Module, reduction: str = "sum"):
        """`reduction`: the layers' terms summed (DeepInversion), or averaged, so a deep model
        with many BN layers pulls the shared dreams no harder than a shallow one."""
        if reduction not in self.BN_REDUCTIONS:
            raise ValueError(f"unknown BN reduction {reduction!r}; use one of {self.BN_REDUCTIONS}")
        self.reduction = reduction
        self._terms: list[torch.Tensor] = []
        self._layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @property
    def has_batchnorm(self) -> bool:
        return bool(self._layers)

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs, _output) -> None:
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))  # all but the channel axis
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        self._terms.append(
            torch.linalg.vector_norm(mean - module.running_mean)
            + torch.linalg.vector_norm(var - module.running_var)
        )

    @contextmanager
    def recording(self) -> Iterator[BatchNormStatistics]:
        """Hooks are attached only inside this block, so normal training never pays for them."""
        self._terms = []
        handles = [layer.register_forward_hook(self._hook) for layer in self._layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def loss(self) -> torch.Tensor:
        if not self._terms:
            return torch.zeros(())
        terms = torch.stack(self._terms)
        return terms.mean() if self.reduction == "mean" else terms.sum()


@dataclass
class DreamLossParts:
    """The objective's components, kept apart so tests and logs can see each one."""

    total: torch.Tensor
    entropy: torch.Tensor
    bn: torch.Tensor
    tv: torch.Tensor
    l2: torch.Tensor
    adaptive: torch.Tensor
    diversity: torch.Tensor


def dream_loss(
    model: nn.Module,
    dreams: torch.Tensor,  # (B, C, H, W)
    weights: DreamLossWeights,
    bn_stats: BatchNormStatistics | None = None,
    student: nn.Module | None = None,
    targets: torch.Tensor | None = None,  # (B,) classes or (B, classes) probabilities
) -> DreamLossParts:
    """L_k(x̂) for a model in eval mode (train mode would let dream statistics drift its BN).

    With `targets` the confidence term is CE(f_k(x̂), y) instead of the entropy: each dream is
    pulled towards its own class (`conditional_dreams`: class indices) or towards the
    federation's soft label of it (`consensus_dreams`: probabilities), reported in
    `parts.entropy`."""
    bn_stats = bn_stats or BatchNormStatistics(model)
    with bn_stats.recording():
        logits = model(dreams)
    zero = dreams.new_zeros(())
    entropy = prediction_entropy(logits) if targets is None else F.cross_entropy(logits, targets)
    bn = bn_stats.loss().to(dreams.device) if bn_stats.has_batchnorm else zero
    tv = total_variation(dreams)
    l2 = l2_prior(dreams)
    diversity = class_balance(logits) if weights.diversity > 0 else zero
    adaptive = zero
    if student is not None and weights.adaptive > 0:
        adaptive = disagreement(logits, student(dreams))
    total = (
        weights.entropy * entropy
        + weights.bn * bn
        + weights.tv * tv
        + weights.l2 * l2
        + weights.adaptive * adaptive
        + weights.diversity * diversity
    )
    return DreamLossParts(total, entropy, bn, tv, l2, adaptive, diversity)
