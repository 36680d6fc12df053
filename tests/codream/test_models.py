"""Tests for codream.models: output shapes, BatchNorm presence, trainability, user factories."""

import pytest
import torch
from torch import nn

from codream.models import available_models, build_model

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches run fastest on one thread, and far faster when other processes share the
    cores (OpenMP workers otherwise spin against each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_lists_the_built_in_models():
    assert available_models() == ["cnn", "mlp", "resnet8", "vgg", "wide_cnn"]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", available_models())
def test_logits_shape_and_batchnorm(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, num_classes=7)
    out = model(torch.randn(4, *shape))  # (B, num_classes)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    model.eval()
    assert model(torch.randn(1, *shape)).shape == (1, 7)  # eval mode works on a single sample


@pytest.mark.parametrize("name", available_models())
def test_a_few_sgd_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = build_model(name, SHAPES["digits"], num_classes=10)
    x, y = torch.randn(32, *SHAPES["digits"]), torch.arange(32) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_cnn_is_small():
    n = sum(p.numel() for p in build_model("cnn", SHAPES["mnist"], 10).parameters())
    assert 30_000 <= n <= 60_000


USER_MODULE = """
from torch import nn


def tiny(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def not_a_model(input_shape, num_classes):
    return "model"

value = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "codream_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "codream_user_models"


def test_user_factory_path(user_module):
    model = build_model(f"{user_module}:tiny", (1, 8, 8), 5)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("{m}:missing", "no callable 'missing'"),
        ("{m}:value", "no callable 'value'"),
        ("{m}:not_a_model", "returned str, not a torch nn.Module"),
        (":tiny", "must look like 'package.module:factory'"),
        ("{m}:", "must look like 'package.module:factory'"),
    ],
)
def test_bad_user_paths_raise(user_module, path, message):
    with pytest.raises(ValueError, match=message):
        build_model(path.format(m=user_module), (1, 8, 8), 5)


def test_unknown_name_lists_registered_models():
    with pytest.raises(ValueError, match="registered: cnn, mlp, resnet8, vgg, wide_cnn"):
        build_model("resnet50", (1, 8, 8), 10)


@pytest.mark.parametrize(
    "shape, num_classes, message",
    [((8, 8), 10, "input_shape"), ((1, 0, 8), 10, "input_shape"), ((1, 8, 8), 1, "num_classes")],
)
def test_bad_shape_or_classes(shape, num_classes, message):
    with pytest.raises(ValueError, match=message):
        build_model("cnn", shape, num_classes)
