"""Supervised training, evaluation and distillation loops shared by nodes, the server model and baselines.

Every loop takes an explicit torch.Generator for shuffling so that a run is reproducible
from its seeds, whichever transport drives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class OptimizerConfig:
    """A training loop's optimiser: SGD with momentum (the method's warm-up recipe) or Adam.

    Adam adapts its step per parameter, so one learning rate suits very different
    architectures (an MLP, a VGG, a ResNet), where SGD's best rate differs per model.
    `weight_decay` is an L2 term in both.
    """

    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    batch_size: int = 64
    name: str = "sgd"


def make_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.name!r}; use one of {', '.join(OPTIMIZERS)}")


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _batches_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))


def _cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int
                     ) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def train_supervised(
    model: nn.Module,
    x: torch.Tensor,  # (N, C, H, W) on the model's device
    y: torch.Tensor,  # (N,)
    epochs: int,
    config: OptimizerConfig,
    generator: torch.Generator,
    cosine: bool = True,
    log_prior: torch.Tensor | None = None,
) -> float:
    """Cross-entropy training; returns the mean loss of the last epoch (nan if no batches).

    `log_prior` (classes,): the loss is logit-adjusted by the local class prior
    (`local_cross_entropy`), so the model's own scores come out class-balanced."""
    if epochs <= 0 or len(x) == 0:
        return float("nan")
    optimizer = make_optimizer(model, config)
    batches_per_epoch = _batches_per_epoch(len(x), config.batch_size)
    scheduler = _cosine_schedule(optimizer, epochs * batches_per_epoch) if cosine else None
    model.train()
    last = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in _batches(len(x), config.batch_size, generator):
            if len(idx) < 2:  # BatchNorm cannot normalise a single sample
                continue
            idx = idx.to(x.device)
            loss = local_cross_entropy(model(x[idx]), y[idx], log_prior)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    return last


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits in eval mode, in chunks so a large test set fits any device."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out  # (N, classes)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a held-out set."""
    logits = predict_logits(model, x)
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(softmax(z̄/T) ‖ softmax(s/T)); the T² keeps gradients comparable across T."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    target = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, target, reduction="batchmean") * temperature**2


class frozen_batchnorm_statistics:
    """Within the block BN layers still normalise with batch statistics but keep their running ones.

    Knowledge acquisition runs dreams through the model in train mode; without this the running
    statistics (used at test time, and as the BN prior of the next synthesis) would drift towards
    the dreams' statistics.
    """

    def __init__(self, model: nn.Module):
        self._layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._saved: list[float | None] = []

    def __enter__(self) -> None:
        self._saved = [m.momentum for m in self._layers]
        for m in self._layers:
            m.momentum = 0.0

    def __exit__(self, *exc) -> None:
        for m, momentum in zip(self._layers, self._saved, strict=False):
            m.momentum = momentum


class batchnorm_in_eval_mode:
    """Within the block BN layers normalise with their running (real-data) statistics.

    Dreams match the BN statistics only approximately; normalising them with their own batch
    statistics teaches features the model never uses at test time, where BN uses the running
    ones. Deep models with many BN layers suffer most. The weights still learn; the running
    statistics are neither used for the batch nor updated.
    """

    def __init__(self, model: nn.Module):
        self._layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._modes: list[bool] = []

    def __enter__(self) -> None:
        self._modes = [m.training for m in self._layers]
        for m in self._layers:
            m.eval()

    def __exit__(self, *exc) -> None:
        for m, mode in zip(self._layers, self._modes, strict=False):
            m.train(mode)


DREAM_BN_MODES = ("batch", "running")
LOCAL_LOSSES = ("ce", "balanced")


def log_class_prior(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log π_c of a client's labels, Laplace-smoothed so a class it lacks stays finite: (classes,)."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float() + 1.0
    return (counts / counts.sum()).log().to(labels.device)


def local_cross_entropy(logits: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor | None
                        ) -> torch.Tensor:
    """CE on local data; with `log_prior` the logit-adjusted (balanced-softmax) loss
    CE(f(x) + log π, y) of Menon et al. 2021: the local label skew is explained by the prior
    instead of being learnt into f, so f's own scores stay class-balanced and the classes a client
    lacks are left to the dreams' soft labels instead of being pushed down by every local batch."""
    if log_prior is None:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits + log_prior, y)


def shift_dreams(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each dream translated by its own random whole-pixel offset in [−max_shift, max_shift]²,
    the edge pixels repeated into the gap, so that a student cannot fit the pixel-exact
    artefacts of the synthesis instead of the class evidence (measured: it did not help on
    MNIST, so it is off by default)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape  # (B, C, H, W)
    offsets = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator)
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift), mode="replicate")
    rows = (torch.arange(h) + max_shift).view(1, h) - offsets[:, :1]  # (B, H)
    cols = (torch.arange(w) + max_shift).view(1, w) - offsets[:, 1:]  # (B, W)
    rows, cols = rows.to(x.device), cols.to(x.device)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def sample_dreams(
    dreams: torch.Tensor, targets: torch.Tensor, size: int, generator: torch.Generator,
    max_shift: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of buffered dreams and their targets, optionally shifted (`shift_dreams`)."""
    idx = torch.randint(len(dreams), (min(size, len(dreams)),), generator=generator)
    idx = idx.to(dreams.device)
    return shift_dreams(dreams[idx], max_shift, generator), targets[idx]


def knowledge_acquisition(
    model: nn.Module,
    x: torch.Tensor,  # (N, C, H, W) local data
    y: torch.Tensor,  # (N,)
    dreams: torch.Tensor,  # (D, C, H, W) the dream buffer
    dream_logits: torch.Tensor,  # (D, classes) aggregated soft labels z̄
    epochs: int,
    config: OptimizerConfig,
    kd_weight: float,
    temperature: float,
    dream_batch_size: int,
    generator: torch.Generator,
    dream_bn: str = "batch",
    log_prior: torch.Tensor | None = None,
    max_shift: int = 0,
    cosine: bool = False,
) -> float:
    """CE on local data + λ·KD on dreams, in separate forward passes so BN statistics never mix.

    `dream_bn`: "batch" normalises dreams with their own batch statistics (running ones kept);
    "running" with the model's running statistics from real data, as at test time.
    `log_prior` (classes,): the local CE is logit-adjusted by it (`local_cross_entropy`).
    `max_shift`: dreams are randomly translated by up to this many pixels (`shift_dreams`).
    `cosine`: the learning rate decays to 0 over the call, so the model a round ends with is a
    settled one rather than wherever the last large SGD step left it (deep nets swung by ±10
    points between rounds at a constant rate)."""
    if dream_bn not in DREAM_BN_MODES:
        raise ValueError(f"unknown dream_bn {dream_bn!r}; use one of {', '.join(DREAM_BN_MODES)}")
    if epochs <= 0:
        return float("nan")
    optimizer = make_optimizer(model, config)
    scheduler = _cosine_schedule(optimizer, epochs * _batches_per_epoch(len(x), config.batch_size)
                                 ) if cosine else None
    model.train()
    last = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in _batches(len(x), config.batch_size, generator):
            if len(idx) < 2:
                continue
            idx = idx.to(x.device)
            loss = local_cross_entropy(model(x[idx]), y[idx], log_prior)
            dream_x, dream_z = sample_dreams(dreams, dream_logits, dream_batch_size, generator,
                                             max_shift)
            bn_mode = batchnorm_in_eval_mode if dream_bn == "running" else frozen_batchnorm_statistics
            with bn_mode(model):
                kd = distillation_loss(model(dream_x), dream_z, temperature)
            loss = loss + kd_weight * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    return last


def train_on_dreams(
    model: nn.Module,
    dreams: torch.Tensor,  # (D, C, H, W)
    dream_logits: torch.Tensor,  # (D, classes)
    steps: int,
    config: OptimizerConfig,
    temperature: float,
    generator: torch.Generator,
    max_shift: int = 0,
) -> float:
    """Distil soft labels into a model that never sees real data (the server model)."""
    if steps <= 0:
        return float("nan")
    optimizer = make_optimizer(model, config)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        dream_x, dream_z = sample_dreams(dreams, dream_logits, config.batch_size, generator,
                                         max_shift)
        loss = distillation_loss(model(dream_x), dream_z, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
    return loss_value
