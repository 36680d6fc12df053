"""Small image classifiers with BatchNorm, by registry name or `package.module:factory` path."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

import torch
from torch import nn

# Every built-in model has BatchNorm layers: their running statistics are the prior that the
# dream objective matches (DeepInversion), so a model without them gives weaker dreams.
# Every model ends in adaptive pooling (or flattens a fixed input), so 8x8, 28x28 and 32x32
# inputs all work without per-size variants.


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Two conv-BN-ReLU blocks and a small head: the fast default for CPU federations."""
    c = input_shape[0]
    return nn.Sequential(
        *_conv_bn(c, 16),  # (B, 16, H, W)
        nn.MaxPool2d(2),  # (B, 16, H/2, W/2)
        *_conv_bn(16, 32),  # (B, 32, H/2, W/2)
        nn.AdaptiveAvgPool2d(4),  # (B, 32, 4, 4)
        nn.Flatten(),  # (B, 512)
        nn.Linear(512, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),  # (B, num_classes)
    )


def _wide_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Three wider conv blocks: a stronger, slower client model for heterogeneous federations."""
    c = input_shape[0]
    return nn.Sequential(
        *_conv_bn(c, 32),  # (B, 32, H, W)
        nn.MaxPool2d(2),  # (B, 32, H/2, W/2)
        *_conv_bn(32, 64),
        nn.MaxPool2d(2),  # (B, 64, H/4, W/4)
        *_conv_bn(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, 128)
        nn.Linear(128, num_classes),
    )


class _BasicBlock(nn.Module):
    """He et al. 2016 basic block; a 1x1 projection on the shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _resnet8(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-8: stem + 3 stages of one basic block (16, 32, 64 channels), as in CIFAR ResNets."""
    c = input_shape[0]
    return nn.Sequential(
        *_conv_bn(c, 16),  # (B, 16, H, W)
        _BasicBlock(16, 16, 1),
        _BasicBlock(16, 32, 2),  # (B, 32, H/2, W/2)
        _BasicBlock(32, 64, 2),  # (B, 64, H/4, W/4)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, 64)
        nn.Linear(64, num_classes),
    )


def _vgg(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """VGG-style stacks (Simonyan & Zisserman 2015) with BN, cut down to small images."""
    c = input_shape[0]
    return nn.Sequential(
        *_conv_bn(c, 16),
        *_conv_bn(16, 16),
        nn.MaxPool2d(2),  # (B, 16, H/2, W/2)
        *_conv_bn(16, 32),
        *_conv_bn(32, 32),
        nn.MaxPool2d(2),  # (B, 32, H/4, W/4)
        *_conv_bn(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, 64)
        nn.Linear(64, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),
    )


def _mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Two hidden layers with BatchNorm1d: no convolutions, so a very different architecture."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(),  # (B, C*H*W)
        nn.Linear(c * h * w, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(inplace=True),
        nn.Linear(128, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),
    )


_REGISTRY: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "cnn": _cnn,
    "wide_cnn": _wide_cnn,
    "resnet8": _resnet8,
    "vgg": _vgg,
    "mlp": _mlp,
}


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build a fresh, randomly initialised model.

    `name` is a registered name or `package.module:factory`, where the factory is called as
    `factory(input_shape=..., num_classes=...)` and must return an nn.Module: clients can bring
    their own architecture as long as it maps (B, C, H, W) to (B, num_classes) logits.
    """
    dims = tuple(int(d) for d in input_shape)
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {dims}")
    input_shape = (dims[0], dims[1], dims[2])
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if name in _REGISTRY:
        return _REGISTRY[name](input_shape, num_classes)
    if ":" in name:
        return _build_from_path(name, input_shape, num_classes)
    raise ValueError(
        f"unknown model {name!r}; registered: {', '.join(available_models())}, "
        f"or a 'package.module:factory' path"
    )


def _build_from_path(path: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model path {path!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model path {path!r}: cannot import {module_name!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model path {path!r}: {module_name!r} has no callable {attr!r}")
    model = factory(input_shape=input_shape, num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model path {path!r}: factory returned {type(model).__name__}, not a torch nn.Module"
        )
    return model


_GLOBAL_RNG = threading.Lock()  # torch's CPU generator is one per process, shared by threads


def build_seeded_model(name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int
                       ) -> nn.Module:
    """`build_model` with its initial weights drawn from `seed`, leaving the global generator as it
    was. Held under a lock: nodes built on threads of one process must get exactly the weights
    `codream simulate` gives them."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, input_shape, num_classes)
