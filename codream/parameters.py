"""Flat float32 views of a model's state, for FedAvg over parameters (and BN running statistics)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _float_entries(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    # num_batches_tracked is an integer counter, not something to average.
    return [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]


def flatten_state(model: nn.Module) -> np.ndarray:
    """(P,) float32 on the CPU: parameters and running statistics in state_dict order."""
    parts = [v.detach().reshape(-1).float().cpu() for _, v in _float_entries(model)]
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)


def state_size(model: nn.Module) -> int:
    return sum(v.numel() for _, v in _float_entries(model))


def load_flat_state(model: nn.Module, flat: np.ndarray) -> None:
    """Inverse of flatten_state; refuses a vector of the wrong length rather than truncating."""
    expected = state_size(model)
    if flat.shape != (expected,):
        raise ValueError(f"parameter vector has shape {flat.shape}, model needs ({expected},)")
    state = model.state_dict()
    offset = 0
    for key, value in _float_entries(model):
        chunk = torch.from_numpy(np.ascontiguousarray(flat[offset : offset + value.numel()]))
        state[key].copy_(chunk.view_as(value).to(value.dtype))
        offset += value.numel()
