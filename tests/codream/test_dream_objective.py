"""Tests for codream.dream_objective: hand-computed entropy, TV, L2, the BN prior and its hooks."""

import math

import pytest
import torch
from torch import nn

from codream.dream_objective import (
    BatchNormStatistics,
    DreamLossWeights,
    disagreement,
    dream_loss,
    l2_prior,
    prediction_entropy,
    total_variation,
)


def test_entropy_of_uniform_logits_is_log_classes():
    for classes in (2, 10):
        logits = torch.full((3, classes), 0.7)
        assert prediction_entropy(logits).item() == pytest.approx(math.log(classes), rel=1e-6)


def test_entropy_of_peaked_logits_is_near_zero_and_finite():
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    h = prediction_entropy(logits)
    assert torch.isfinite(h)
    assert 0.0 <= h.item() < 1e-6


def test_entropy_two_samples_by_hand():
    # Sample 1: logits (0, log 3) → p = (1/4, 3/4); sample 2: uniform over 2 → log 2.
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]], dtype=torch.float64)
    h1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = (h1 + math.log(2.0)) / 2
    assert prediction_entropy(logits).item() == pytest.approx(expected, rel=1e-12)


def test_total_variation_by_hand():
    # One 2x3 image: rows (0 1 3) and (2 2 2).
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    # vertical diffs: 2, 1, -1 → squares 4, 1, 1 → mean 2
    # horizontal diffs: 1, 2, 0, 0 → squares 1, 4, 0, 0 → mean 1.25
    assert total_variation(x).item() == pytest.approx(3.25)
    assert total_variation(torch.full((2, 3, 4, 4), 5.0)).item() == 0.0


def test_l2_prior_by_hand():
    x = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]], [[[0.0, 0.0], [0.0, 12.0]]]])  # (2, 1, 2, 2)
    assert l2_prior(x).item() == pytest.approx(13.0)


def _bn_model(channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm2d(channels), nn.Flatten(), nn.Linear(channels * 4 * 4, 5)
    ).eval()


def test_bn_loss_is_zero_when_batch_statistics_equal_running_ones():
    torch.manual_seed(0)
    model = _bn_model()
    x = torch.randn(6, 3, 4, 4) * 2 + 1
    bn = model[0]
    bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    bn.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
    stats = BatchNormStatistics(model)
    with stats.recording():
        model(x)
    assert stats.has_batchnorm
    assert stats.loss().item() == pytest.approx(0.0, abs=1e-5)


def test_bn_loss_by_hand_when_statistics_differ():
    model = _bn_model(channels=2)
    x = torch.zeros(2, 2, 4, 4)
    x[:, 1] = 3.0  # channel means (0, 3), biased variances (0, 0)
    # Running stats are the defaults: mean (0, 0), var (1, 1).
    # ‖(0, 3) − (0, 0)‖ = 3; ‖(0, 0) − (1, 1)‖ = √2.
    stats = BatchNormStatistics(model)
    with stats.recording():
        model(x)
    assert stats.loss().item() == pytest.approx(3.0 + math.sqrt(2.0), rel=1e-6)


def test_bn_loss_uses_biased_variance():
    model = _bn_model(channels=1)
    x = torch.randn(4, 1, 4, 4)
    bn = model[0]
    bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    bn.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=True))  # the wrong (unbiased) one
    stats = BatchNormStatistics(model)
    with stats.recording():
        model(x)
    assert stats.loss().item() > 1e-4


def test_bn_loss_sums_over_layers():
    model = nn.Sequential(nn.BatchNorm2d(1), nn.BatchNorm2d(1)).eval()
    x = torch.full((2, 1, 2, 2), 2.0)
    # Layer 1 input: mean 2 var 0 → 2 + 1 = 3. Its output (eval): 2/√(1+eps) ≈ 2 → again ≈ 3.
    stats = BatchNormStatistics(model)
    with stats.recording():
        model(x)
    assert stats.loss().item() == pytest.approx(6.0, rel=1e-4)


def test_model_without_batchnorm_contributes_zero():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    stats = BatchNormStatistics(model)
    assert not stats.has_batchnorm
    with stats.recording():
        model(torch.randn(2, 3, 4, 4))
    assert stats.loss().item() == 0.0
    parts = dream_loss(model, torch.randn(2, 3, 4, 4), DreamLossWeights())
    assert parts.bn.item() == 0.0
    assert torch.isfinite(parts.total)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_after_recording_even_on_error():
    model = _bn_model()
    before = _hook_count(model)
    stats = BatchNormStatistics(model)
    with stats.recording():
        assert _hook_count(model) == before + 1
        model(torch.randn(2, 3, 4, 4))
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError), stats.recording():
        raise RuntimeError("boom")
    assert _hook_count(model) == before
    for _ in range(3):
        dream_loss(model, torch.randn(2, 3, 4, 4), DreamLossWeights())
    assert _hook_count(model) == before


def test_recording_starts_fresh_each_time():
    model = _bn_model()
    stats = BatchNormStatistics(model)
    x = torch.randn(4, 3, 4, 4)
    with stats.recording():
        model(x)
    once = stats.loss().item()
    with stats.recording():
        model(x)
    assert stats.loss().item() == pytest.approx(once)


def test_disagreement_zero_for_equal_and_negative_otherwise():
    torch.manual_seed(1)
    logits = torch.randn(5, 4)
    assert disagreement(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.randn(5, 4)
    assert disagreement(logits, other).item() < 0
    # By hand: teacher p = (1/2, 1/2), student q = (1/4, 3/4): KL = ½ log 2 + ½ log(2/3).
    t = torch.zeros(1, 2)
    s = torch.tensor([[0.0, math.log(3.0)]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert disagreement(t, s).item() == pytest.approx(-kl, rel=1e-5)


def test_dream_loss_combines_weighted_parts():
    torch.manual_seed(2)
    model = _bn_model()
    student = _bn_model()
    x = torch.randn(4, 3, 4, 4)
    weights = DreamLossWeights(entropy=2.0, bn=3.0, tv=5.0, l2=7.0, adaptive=11.0)
    parts = dream_loss(model, x, weights, student=student)
    expected = (2 * parts.entropy + 3 * parts.bn + 5 * parts.tv + 7 * parts.l2 + 11 * parts.adaptive)
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts.adaptive.item() < 0
    assert parts.tv.item() == pytest.approx(total_variation(x).item())
    assert parts.l2.item() == pytest.approx(l2_prior(x).item())
    # The adaptive term is off when its weight is zero, even with a student.
    off = dream_loss(model, x, DreamLossWeights(adaptive=0.0), student=student)
    assert off.adaptive.item() == 0.0


def test_class_balance_is_lowest_for_a_batch_spread_over_all_classes():
    from codream.dream_objective import class_balance

    spread = torch.eye(4) * 20  # each sample confidently a different class
    collapsed = torch.zeros(4, 4)
    collapsed[:, 0] = 20  # every sample the same class
    assert class_balance(spread).item() == pytest.approx(-math.log(4), abs=1e-4)
    assert class_balance(collapsed).item() == pytest.approx(0.0, abs=1e-4)
