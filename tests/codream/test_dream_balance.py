"""Balancing heterogeneous clients' pull on the shared dreams: BN-term reduction and update RMS."""

import pytest
import torch
from torch import nn

from codream.config import ConfigError, RunConfig, build
from codream.dream_objective import BatchNormStatistics
from codream.local_dreaming import LocalDreamConfig, local_dream_update, normalise_update


def _two_bn_layers() -> nn.Module:
    """Two BN layers whose running statistics are (0, 1): the terms are the batch's own stats."""
    model = nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm1d(2)).eval()
    return model


def test_the_bn_term_is_summed_or_averaged_over_layers():
    model = _two_bn_layers()
    x = torch.tensor([[1.0, 3.0], [3.0, 5.0]])  # mean (2, 4), biased var (1, 1)
    # Layer 1 sees x: ‖(2, 4) − 0‖ + ‖(1, 1) − 1‖ = √20. Layer 2 (eval) sees x unchanged by BN
    # up to its affine identity: the same batch normalised with running (0, 1) is x / √(1+eps).
    scale = 1 / (1 + 1e-5) ** 0.5
    second = (20 ** 0.5) * scale + ((scale ** 2 - 1) ** 2 * 2) ** 0.5
    for reduction, expected in (("sum", 20 ** 0.5 + second), ("mean", (20 ** 0.5 + second) / 2)):
        stats = BatchNormStatistics(model, reduction)
        with stats.recording():
            model(x)
        torch.testing.assert_close(stats.loss(), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_rms_normalisation_scales_each_dream_to_unit_rms():
    delta = torch.zeros(2, 1, 2, 2)
    delta[0] = 3.0  # rms 3
    delta[1, 0, 0, 0] = 4.0  # rms √(16/4) = 2
    out = normalise_update(delta, "rms")
    torch.testing.assert_close(out[0], torch.ones(1, 2, 2))
    torch.testing.assert_close(out[1, 0, 0, 0], torch.tensor(2.0))
    assert out[1].pow(2).mean().item() == pytest.approx(1.0)
    assert torch.equal(normalise_update(delta, "none"), delta)
    assert torch.equal(normalise_update(torch.zeros(1, 1, 2, 2), "rms"), torch.zeros(1, 1, 2, 2))


def test_a_client_update_under_rms_has_unit_rms_per_dream():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 1, 6, 6))
    model.eval()
    delta = local_dream_update(model, torch.randn(5, 1, 6, 6), LocalDreamConfig(update_norm="rms"))
    torch.testing.assert_close(delta.pow(2).mean(dim=(1, 2, 3)), torch.ones(5))


def test_the_settings_are_validated_naming_the_field():
    with pytest.raises(ConfigError, match="dream.bn_reduction: must be one of sum, mean"):
        build(RunConfig, {"dream": {"bn_reduction": "max"}})
    with pytest.raises(ConfigError, match="dream.update_norm: must be one of none, rms"):
        build(RunConfig, {"dream": {"update_norm": "l1"}})
    local = build(RunConfig, {"dream": {"bn_reduction": "mean", "update_norm": "rms"}}).dream.local()
    assert (local.bn_reduction, local.update_norm) == ("mean", "rms")
