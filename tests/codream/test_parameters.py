"""Tests for codream.parameters: flat float32 state round trip, BN buffers included, lengths checked."""

import numpy as np
import pytest
import torch
from torch import nn

from codream.models import build_model
from codream.parameters import flatten_state, load_flat_state, state_size


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))


def test_flatten_layout_and_size_by_hand():
    model = _small()
    # conv 2·1·3·3 = 18; BN weight, bias, running_mean, running_var 4·2 = 8; linear 3·2 + 3 = 9.
    assert state_size(model) == 35
    flat = flatten_state(model)
    assert flat.shape == (35,) and flat.dtype == np.float32
    bn = model[1]
    bn.running_mean.fill_(7.0)
    flat = flatten_state(model)
    np.testing.assert_array_equal(flat[18 + 4 : 18 + 6], [7.0, 7.0])  # after weight and bias


def test_round_trip_includes_batchnorm_buffers():
    torch.manual_seed(0)
    source = build_model("cnn", (1, 8, 8), 10)
    source.train()
    source(torch.randn(16, 1, 8, 8) * 3 + 2)  # moves running_mean / running_var off their defaults
    torch.manual_seed(1)
    target = build_model("cnn", (1, 8, 8), 10)
    flat = flatten_state(source)
    load_flat_state(target, flat)
    src, dst = source.state_dict(), target.state_dict()
    for key, value in src.items():
        if value.is_floating_point():
            assert torch.equal(value, dst[key]), key
    assert any("running_mean" in k for k in src)
    np.testing.assert_array_equal(flatten_state(target), flat)
    x = torch.randn(4, 1, 8, 8)
    source.eval()
    target.eval()
    assert torch.equal(source(x), target(x))


def test_load_does_not_alias_the_vector():
    model = _small()
    flat = np.arange(35, dtype=np.float32)
    load_flat_state(model, flat)
    flat[:] = -1.0
    assert flatten_state(model)[5] == 5.0


@pytest.mark.parametrize("length", [0, 34, 36])
def test_wrong_length_raises(length):
    model = _small()
    before = flatten_state(model)
    with pytest.raises(ValueError, match="shape"):
        load_flat_state(model, np.zeros(length, dtype=np.float32))
    np.testing.assert_array_equal(flatten_state(model), before)


def test_two_dimensional_vector_raises():
    with pytest.raises(ValueError):
        load_flat_state(_small(), np.zeros((35, 1), dtype=np.float32))
