"""A run's --out directory: an earlier run's files are never mixed with a new run's.

`simulate` and `cluster` start a new run: a directory an earlier run wrote to is refused unless
--force, which first deletes exactly what runs write there (never anything else). A coordinator
resumes from the checkpoint it finds there; without one, an earlier run's outputs are refused
the same way, and --force starts afresh.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from codream.config import ConfigError
from codream.run_outputs import RUN_FILES

CHECKPOINT = "checkpoint.pt"
COORDINATOR_ENTRIES = (*RUN_FILES, CHECKPOINT, "progress.jsonl")
# What `codream cluster` (codream.cli.local_cluster) writes besides its coordinator's files.
RUN_ENTRIES = (*COORDINATOR_ENTRIES, "cluster-config.toml", "coordinator.ready.json", "logs",
               "secrets", "state")


def earlier_run(run_dir: Path, entries: Sequence[str] = RUN_ENTRIES) -> list[str]:
    """The entries an earlier run left in `run_dir`, sorted (empty: nothing to mix with)."""
    if not run_dir.is_dir():
        return []
    return sorted(name for name in entries if (run_dir / name).exists())


def check_new_run(run_dir: Path, force: bool, entries: Sequence[str] = RUN_ENTRIES) -> None:
    """ConfigError if `run_dir` is not a directory or holds an earlier run and `force` is off."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: is a file, not a directory")
    found = earlier_run(run_dir, entries)
    if found and not force:
        raise ConfigError(
            f"--out {run_dir}: holds an earlier run ({', '.join(found)}); choose a new --out, "
            f"or add --force to delete that run's files first")


def check_resumable(run_dir: Path, force: bool) -> None:
    """A coordinator's --out: a checkpoint is resumed; outputs without one are refused."""
    if (run_dir / CHECKPOINT).is_file() or force:
        check_new_run(run_dir, True, COORDINATOR_ENTRIES)
        return
    found = earlier_run(run_dir, COORDINATOR_ENTRIES)
    if found:
        raise ConfigError(
            f"--out {run_dir}: holds an earlier run's outputs ({', '.join(found)}) but no "
            f"{CHECKPOINT} to resume from; choose a new --out, or add --force to delete them first")


def clear(run_dir: Path, entries: Sequence[str] = RUN_ENTRIES) -> None:
    """Deletes what runs write in `run_dir` (and atomic writes' leftovers), nothing else."""
    for name in earlier_run(run_dir, entries):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in entries:
        for leftover in run_dir.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def create(run_dir: Path) -> None:
    """Makes `run_dir` before the run starts, so an unwritable --out fails now, not at the end."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as error:
        raise ConfigError(f"--out {run_dir}: cannot create the run directory: "
                          f"{error.strerror or error}") from error


def add_force_flag(parser: argparse.ArgumentParser,
                   text: str = "when --out holds an earlier run, delete the files runs write "
                               "there (only those) before this run starts") -> None:
    parser.add_argument("--force", action="store_true", help=text)
