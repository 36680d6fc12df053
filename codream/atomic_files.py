"""Atomic file writes: a reader, or a crash, sees the old file or the new one, never half of one.

One writer for metrics, checkpoints, node snapshots, secrets and ready files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object], private: bool = False) -> None:
    """`write` fills a temp file in the same folder; fsync, then rename over `path`: a reader,
    or a crash, sees the old file or the new one, never half of one. `private`: mode 0600."""
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


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode()))
