"""Knowledge acquisition's recipe against hand-computed values: logit-adjusted loss, dream shifts."""

from __future__ import annotations

import math

import pytest
import torch

from codream.config import ConfigError, DistillConfig
from codream.training import local_cross_entropy, log_class_prior


def test_log_class_prior_is_laplace_smoothed_so_missing_classes_stay_finite() -> None:
    prior = log_class_prior(torch.tensor([0, 0, 1]), num_classes=3)
    # counts + 1 = (3, 2, 1) over 6
    assert prior.tolist() == pytest.approx([math.log(3 / 6), math.log(2 / 6), math.log(1 / 6)])


def test_balanced_cross_entropy_adds_the_log_prior_to_the_logits() -> None:
    logits = torch.zeros(1, 3)
    y = torch.tensor([0])
    log_prior = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert local_cross_entropy(logits, y, None).item() == pytest.approx(math.log(3))
    # softmax(log π) = π, so the loss is −log π_0
    assert local_cross_entropy(logits, y, log_prior).item() == pytest.approx(-math.log(0.5))


def test_balanced_loss_barely_pushes_down_a_class_the_client_lacks() -> None:
    """Plain CE lowers every wrong class's logit by its softmax share; the adjusted loss gives a
    class with prior ~0 almost no gradient, leaving it to the dreams' soft labels."""
    logits = torch.zeros(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    local_cross_entropy(logits, y, None).backward()
    plain = logits.grad[:, 2].abs().sum().item()
    logits.grad = None
    prior = log_class_prior(torch.tensor([0] * 500 + [1] * 500), num_classes=3)
    local_cross_entropy(logits, y, prior).backward()
    adjusted = logits.grad[:, 2].abs().sum().item()
    assert plain == pytest.approx(4 * (1 / 3) / 4)
    assert adjusted < plain / 100


def test_local_loss_is_validated() -> None:
    assert DistillConfig(local_loss="balanced").local_loss == "balanced"
    with pytest.raises(ConfigError, match="distill.local_loss"):
        DistillConfig(local_loss="focal")


def test_shift_dreams_moves_each_dream_by_its_own_offset_repeating_the_edge() -> None:
    from codream.training import shift_dreams

    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float).view(2, 1, 3, 3)
    generator = torch.Generator().manual_seed(0)
    offsets = torch.randint(-1, 2, (2, 2), generator=torch.Generator().manual_seed(0))
    out = shift_dreams(x, 1, generator)
    for i, (dr, dc) in enumerate(offsets.tolist()):
        for r in range(3):
            for c in range(3):
                source_r = min(max(r - dr, 0), 2)
                source_c = min(max(c - dc, 0), 2)
                assert out[i, 0, r, c] == x[i, 0, source_r, source_c]
    assert torch.equal(shift_dreams(x, 0, generator), x)


def test_cosine_schedule_halves_the_second_of_two_steps() -> None:
    """Two epochs of one batch each: cosine annealing over 2 steps uses lr, then lr·(1+cos(π/2))/2."""
    import torch.nn.functional as F
    from torch import nn

    from codream.training import OptimizerConfig, knowledge_acquisition

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    x, y = torch.randn(2, 1, 2, 2), torch.tensor([0, 2])
    dreams, logits = torch.randn(4, 1, 2, 2), torch.randn(4, 3)
    recipe = OptimizerConfig(lr=0.5, momentum=0.0, weight_decay=0.0, batch_size=2)

    def gradient(weight: torch.Tensor) -> torch.Tensor:
        w = weight.clone().requires_grad_(True)
        F.cross_entropy(x.flatten(1) @ w.T, y).backward()
        return w.grad

    w0 = model[1].weight.detach().clone()
    w1 = w0 - 0.5 * gradient(w0)
    expected = w1 - 0.25 * gradient(w1)
    knowledge_acquisition(model, x, y, dreams, logits, 2, recipe, kd_weight=0.0, temperature=2.0,
                          dream_batch_size=2, generator=torch.Generator().manual_seed(0), cosine=True)
    assert torch.allclose(model[1].weight.detach(), expected, atol=1e-6)


def test_supervised_training_with_a_log_prior_takes_the_logit_adjusted_step() -> None:
    """One SGD step of `train_supervised` with `log_prior` is the step of CE(f(x) + log π, y)."""
    from torch import nn

    from codream.training import OptimizerConfig, train_supervised

    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 0])
    prior = log_class_prior(torch.tensor([0] * 30 + [1] * 10), num_classes=3)
    recipe = OptimizerConfig(lr=0.5, momentum=0.0, weight_decay=0.0, batch_size=4)
    results = {}
    for name, log_prior in (("plain", None), ("balanced", prior)):
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
        nn.init.zeros_(model[1].weight)
        train_supervised(model, x, y, 1, recipe, torch.Generator().manual_seed(0), cosine=False,
                         log_prior=log_prior)
        results[name] = model[1].weight.detach().clone()
    expected = {}
    for name, log_prior in (("plain", None), ("balanced", prior)):
        w = torch.zeros(3, 4, requires_grad=True)
        local_cross_entropy(x.flatten(1) @ w.T, y, log_prior).backward()
        expected[name] = -0.5 * w.grad
    assert torch.allclose(results["plain"], expected["plain"], atol=1e-6)
    assert torch.allclose(results["balanced"], expected["balanced"], atol=1e-6)
    assert not torch.allclose(results["plain"], results["balanced"])


def test_train_local_loss_is_validated() -> None:
    from codream.config import TrainConfig

    assert TrainConfig(local_loss="balanced").local_loss == "balanced"
    with pytest.raises(ConfigError, match="train.local_loss"):
        TrainConfig(local_loss="focal")
