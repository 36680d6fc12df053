"""Atomic coordinator checkpoints, tied to the run config they were taken under.

A coordinator killed at any instant must find either the previous checkpoint or the new one,
never a torn file: we write a temporary file in the same directory, fsync it and `os.replace`
it over the old one. The file holds only tensors and plain values and is read back with
`torch.load(weights_only=True)`, so loading a checkpoint never unpickles arbitrary objects.

Beside the config's fingerprint it stores the fields it hashes, so a mismatch names the fields
that differ. `rounds` is not part of the identity: a finished run may be extended by resuming
it with more rounds (never fewer than it has completed).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from codream.atomic_files import atomic_write
from codream.config import NOT_COMPUTATION, RunConfig, computation_of, to_dict, to_toml

FORMAT = "codream.coordinator-checkpoint/1"
_ABSENT = "(absent)"


class ConfigFingerprint(str):
    """sha256 of a config's computation (a plain `str` wherever it is compared or stored), with
    the flat fields it hashes and the config's rounds, for messages and the rounds check."""

    fields: dict[str, Any]
    rounds: int

    def __new__(cls, digest: str, fields: dict[str, Any], rounds: int) -> ConfigFingerprint:
        made = super().__new__(cls, digest)
        made.fields, made.rounds = fields, rounds
        return made


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another run config (or is not a coordinator checkpoint)."""


class Checkpointable(Protocol):
    def state_dict(self) -> dict[str, Any]: ...


def config_fingerprint(config: RunConfig) -> ConfigFingerprint:
    """sha256 of the config's TOML with `device`, `out` and `rounds` reset: moving a run, or
    extending it, keeps its identity."""
    canonical = computation_of(config)
    digest = hashlib.sha256(to_toml(canonical).encode("utf-8")).hexdigest()
    fields = {k: v for k, v in _flat(to_dict(config)).items() if k not in NOT_COMPUTATION}
    return ConfigFingerprint(digest, fields, config.rounds)


def save_checkpoint(path: Path, logic: Checkpointable, config_fingerprint: str) -> None:
    """Writes `logic.state_dict()` to `path` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config_fingerprint": str(config_fingerprint),
        "state": _plain(logic.state_dict()),
    }
    if isinstance(config_fingerprint, ConfigFingerprint):
        payload["config"] = config_fingerprint.fields
    atomic_write(path, lambda stream: torch.save(payload, stream))
    _fsync_directory(path.parent)


def load_checkpoint(path: Path, config_fingerprint: str) -> dict[str, Any] | None:
    """The saved round-logic state for `load_state_dict`, or None if there is no checkpoint yet.

    Raises CheckpointMismatch when the file was written under another config (naming the fields
    that differ where the checkpoint stored them): resuming it would silently mix two different
    runs. With a ConfigFingerprint, also when the config has fewer rounds than the checkpoint
    has completed.
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
        differences = _differences(payload.get("config"), config_fingerprint)
        if differences:
            raise CheckpointMismatch(
                f"{path}: written under another run config ({differences}); use the original "
                f"config or another checkpoint path")
        raise CheckpointMismatch(
            f"{path}: written for config {payload.get('config_fingerprint')!r}, this run's config is "
            f"{str(config_fingerprint)!r}; use another checkpoint path or the original config"
        )
    state = payload["state"]
    if isinstance(config_fingerprint, ConfigFingerprint) and isinstance(state, dict):
        completed = int(state.get("next_round", 0)) - 1
        if config_fingerprint.rounds < completed:
            raise CheckpointMismatch(
                f"{path}: rounds: the checkpoint has completed round {completed}, this run ends "
                f"at round {config_fingerprint.rounds}; resume with rounds >= {completed} (more "
                f"extends the run)")
    return state


def _differences(saved: Any, current: str) -> str:
    """'seed: 5 in the checkpoint, 6 now; ...', or '' when either side has no fields to compare."""
    if not isinstance(saved, dict) or not isinstance(current, ConfigFingerprint):
        return ""
    now = current.fields
    names = sorted(name for name in set(saved) | set(now)
                   if saved.get(name, _ABSENT) != now.get(name, _ABSENT))
    return "; ".join(f"{name}: {saved.get(name, _ABSENT)!r} in the checkpoint, "
                     f"{now.get(name, _ABSENT)!r} now" for name in names)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'dream': {'bn': 10.0}} → {'dream.bn': 10.0}; tuples become lists (weights_only loads them)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


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
