"""Atomic file writes: a reader, or a crash, sees the old file or the new one, never half of one.

One writer for metrics, checkpoints, node snapshots, secrets and ready files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object], private: bool = False, *,
                 durable: bool = False) -> None:
    """`write` fills a temp file in the same folder; fsync, then rename over `path`: a reader,
    or a crash, sees the old file or the new one, never half of one. `private`: mode 0600.
    `durable`: also fsync the folder, so that the rename itself survives a power cut once this
    returns (for a record the caller acts on next, not only one it may lose and rewrite)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if not private:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, which makes the renames in it durable (POSIX: the entry is the folder's)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode()))
