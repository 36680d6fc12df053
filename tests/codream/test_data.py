"""Tests for codream.data: shapes, normalisation, deterministic splits and npz validation."""

import importlib.util

import numpy as np
import pytest
import torch

from codream.data import load_dataset


@pytest.mark.parametrize(
    "spec, n_train, n_test, shape",
    [("digits", 1437, 360, (1, 8, 8)), ("mnist", 4000, 1000, (1, 28, 28))],
)
def test_builtin_shapes_dtypes_and_normalisation(spec, n_train, n_test, shape):
    ds = load_dataset(spec)
    assert ds.x_train.shape == (n_train, *shape) and ds.x_train.dtype == torch.float32
    assert ds.x_test.shape == (n_test, *shape) and ds.x_test.dtype == torch.float32
    assert ds.y_train.shape == (n_train,) and ds.y_train.dtype == torch.int64
    assert ds.y_test.shape == (n_test,) and ds.y_test.dtype == torch.int64
    assert ds.input_shape == shape and ds.num_classes == 10
    assert abs(ds.x_train.mean().item()) < 1e-4
    assert abs(ds.x_train.std().item() - 1.0) < 1e-3
    assert len(ds.channel_mean) == len(ds.channel_std) == 1 and ds.channel_std[0] > 0
    # Stratified: every class is present in both splits in near-equal shares.
    assert torch.bincount(ds.y_test, minlength=10).min() >= n_test // 10 - 2


def test_split_is_deterministic_and_depends_on_seed():
    a, b = load_dataset("digits", data_seed=0), load_dataset("digits", data_seed=0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset("digits", data_seed=1)
    assert not torch.equal(a.y_train, c.y_train)


def test_returned_tensors_do_not_alias_the_cache():
    a = load_dataset("digits")
    a.x_train.zero_()
    assert load_dataset("digits").x_train.abs().sum() > 0


def test_unknown_spec_names_allowed_specs():
    with pytest.raises(ValueError, match="digits, mnist, npz:PATH"):
        load_dataset("cifar")


def _images(rng, n, shape, dtype=np.uint8):
    return rng.integers(0, 256, size=(n, *shape)).astype(dtype)


def test_npz_round_trip_channels_last_with_split(tmp_path):
    rng = np.random.default_rng(0)
    x = _images(rng, 100, (6, 6, 3))  # (N, H, W, C) uint8
    y = np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.input_shape == (3, 6, 6) and ds.num_classes == 4
    assert len(ds.x_train) == 80 and len(ds.x_test) == 20
    assert torch.allclose(ds.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    # Undoing the normalisation gives back the original pixels, in the original layout.
    mean = torch.tensor(ds.channel_mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.channel_std).view(1, 3, 1, 1)
    pixels = ((ds.x_train * std + mean) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    originals = {row.tobytes() for row in x}
    assert all(p.numpy().tobytes() in originals for p in pixels)


@pytest.mark.parametrize("shape", [(5, 5), (2, 5, 5)])
def test_npz_with_test_arrays_and_float_input(tmp_path, shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, *shape)).astype(np.float32)
    xt = rng.normal(size=(10, *shape)).astype(np.float64)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3, x_test=xt, y_test=np.arange(10) % 3)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    c = 1 if len(shape) == 2 else 2
    assert ds.input_shape == (c, 5, 5) and len(ds.x_test) == 10 and ds.num_classes == 3
    expected = (x - x.mean(axis=(0, -2, -1), keepdims=True)) / x.std(
        axis=(0, -2, -1), keepdims=True
    )
    assert np.allclose(ds.x_train.numpy().reshape(expected.shape), expected, atol=1e-5)


def _bad(**arrays):
    rng = np.random.default_rng(2)
    base = {"x": _images(rng, 20, (4, 4)), "y": np.arange(20) % 2}
    base.update(arrays)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "arrays, message",
    [
        (_bad(x=None), "lacks array 'x'"),
        (_bad(y=None), "lacks array 'y'"),
        (_bad(y=np.arange(19) % 2), "19 labels but there are 20 images"),
        (_bad(x=np.zeros((20, 16), np.uint8)), "must have shape"),
        (_bad(x=np.full((20, 4, 4), np.nan, np.float32)), "non-finite"),
        (_bad(x=np.zeros((20, 4, 4), np.int32)), "uint8 or floating"),
        (_bad(y=np.arange(20) * 0.5), "labels must be integers"),
        (_bad(y=np.arange(20) % 2 - 1), r"in \[0, num_classes\)"),
        (_bad(y=np.arange(20) % 3, num_classes=np.array(2)), r"in \[0, num_classes\)"),
        (_bad(y=np.arange(20).reshape(20, 1)), "1-D labels"),
        (_bad(x_test=np.zeros((5, 4, 4), np.uint8)), "both 'x_test' and 'y_test'"),
        (
            _bad(x_test=np.zeros((5, 3, 3), np.uint8), y_test=np.zeros(5, np.int64)),
            "'x_test' samples have shape",
        ),
    ],
)
def test_bad_npz_raises_clear_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(f"npz:{path}")


def test_missing_npz_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed"
)
def test_torchvision_spec_without_torchvision_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="needs torchvision"):
        load_dataset(f"torchvision:MNIST?root={tmp_path}")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="needs torchvision")
def test_torchvision_spec_never_downloads(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_dataset(f"torchvision:MNIST?root={tmp_path}")
