"""Atomic coordinator checkpoints, tied to the run config they were taken under.

A coordinator killed at any instant must find either the previous checkpoint or the new one,
never a torn file: we write a temporary file in the same directory, fsync it and `os.replace`
it over the old one. The file holds only tensors and plain values and is read back with
`torch.load(weights_only=True)`, so loading a checkpoint never unpickles arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from codream.atomic_files import atomic_write
from codream.config import RunConfig, to_toml

FORMAT = "codream.coordinator-checkpoint/1"
# Fields that choose where a run computes or writes, not what it computes.
_NOT_COMPUTATION = {"device": RunConfig.device, "out": RunConfig.out}


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another run config (or is not a coordinator checkpoint)."""


class Checkpointable(Protocol):
    def state_dict(self) -> dict[str, Any]: ...


def config_fingerprint(config: RunConfig) -> str:
    """sha256 of the config's TOML with `device` and `out` reset: moving a run keeps its identity."""
    canonical = dataclasses.replace(config, **_NOT_COMPUTATION)
    return hashlib.sha256(to_toml(canonical).encode("utf-8")).hexdigest()


def save_checkpoint(path: Path, logic: Checkpointable, config_fingerprint: str) -> None:
    """Writes `logic.state_dict()` to `path` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config_fingerprint": config_fingerprint,
        "state": _plain(logic.state_dict()),
    }
    atomic_write(path, lambda stream: torch.save(payload, stream))
    _fsync_directory(path.parent)


def load_checkpoint(path: Path, config_fingerprint: str) -> dict[str, Any] | None:
    """The saved round-logic state for `load_state_dict`, or None if there is no checkpoint yet.

    Raises CheckpointMismatch when the file was written under another config: resuming it would
    silently mix two different runs.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is a mismatch, with its cause
        raise CheckpointMismatch(f"{path}: not a readable coordinator checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointMismatch(f"{path}: format {found!r}, expected {FORMAT!r}")
    if payload.get("config_fingerprint") != config_fingerprint:
        raise CheckpointMismatch(
            f"{path}: written for config {payload.get('config_fingerprint')!r}, this run's config is "
            f"{config_fingerprint!r}; use another checkpoint path or the original config"
        )
    return payload["state"]


def _plain(value: Any) -> Any:
    """numpy arrays → tensors, numpy scalars → Python numbers, so weights_only can load them."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
