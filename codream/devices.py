"""Where a process computes: the torch device (`auto` takes CUDA when present) and its threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str) -> torch.device:
    """The device `name` asks for; ValueError saying what to use instead when it is not here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"{name} was asked for but CUDA is not available on this machine; "
                             "use auto or cpu")
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} was asked for but this machine has {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1}); use one of them, auto or cpu")
        return device
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` inside, and put back after (a run's thread count
    is part of the run: float sums in another order give other bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
