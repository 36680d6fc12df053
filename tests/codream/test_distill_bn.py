"""Distilling on dreams with BN in eval mode: running statistics used, kept, modes restored."""

import pytest
import torch
from torch import nn

from codream.config import ConfigError, RunConfig, build
from codream.training import OptimizerConfig, batchnorm_in_eval_mode, knowledge_acquisition


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    model[2].running_mean.fill_(0.5)
    model[2].running_var.fill_(2.0)
    return model


def test_inside_the_block_bn_uses_running_statistics_and_keeps_them():
    model = _model().train()
    x = torch.randn(6, 1, 2, 2)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    with batchnorm_in_eval_mode(model):
        got = model(x)
        assert not model[2].training and model.training
    torch.testing.assert_close(got, expected)
    assert torch.equal(model[2].running_mean, torch.full((3,), 0.5))
    assert model[2].training  # restored


def test_knowledge_acquisition_runs_with_running_bn_and_refuses_unknown_modes():
    model = _model()
    dreams, logits = torch.randn(8, 1, 2, 2), torch.randn(8, 2)
    x, y = torch.randn(16, 1, 2, 2), torch.randint(0, 2, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    knowledge_acquisition(model, x, y, dreams, logits, 1, OptimizerConfig(lr=0.1, batch_size=8), 1.0,
                          2.0, 4, torch.Generator().manual_seed(0), dream_bn="running")
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="unknown dream_bn"):
        knowledge_acquisition(model, x, y, dreams, logits, 1, OptimizerConfig(), 1.0, 2.0, 4,
                              torch.Generator(), dream_bn="none")


def test_the_setting_is_validated_naming_the_field():
    with pytest.raises(ConfigError, match="distill.dream_bn: must be one of batch, running"):
        build(RunConfig, {"distill": {"dream_bn": "frozen"}})
