"""The dream data set a CoDream run leaves behind: the final dreams with their aggregated soft labels.

One `.npz` (plain arrays, read without pickle): `images` (N, C, H, W) float32, the dreams in the
models' input space (normalised: a pixel is image·std + mean), `soft_labels` (N, classes) the
aggregated logits the clients agreed on, `labels` (N,) their argmax, `channel_mean` and
`channel_std` (C,) the normalisation of the data the run trained on, `dataset` and `round`.
It is what the server model learnt from, so any architecture can be trained on it again
(`codream distill`) without touching a client's data.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from codream.atomic_files import atomic_write

_ARRAYS = ("images", "soft_labels", "labels", "channel_mean", "channel_std")


@dataclass(frozen=True, eq=False)
class DreamSet:
    images: np.ndarray  # (N, C, H, W) float32, normalised like the run's data
    soft_labels: np.ndarray  # (N, classes) float32 aggregated logits
    labels: np.ndarray  # (N,) int64 argmax of soft_labels
    channel_mean: tuple[float, ...]  # (C,)
    channel_std: tuple[float, ...]  # (C,)
    dataset: str
    round: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return int(self.soft_labels.shape[1])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dreams, logits) as float32 tensors, as `training.train_on_dreams` takes them."""
        return torch.from_numpy(self.images.copy()), torch.from_numpy(self.soft_labels.copy())


def save_dreams(path: Path, dreams: torch.Tensor, logits: torch.Tensor, channel_mean: tuple[float, ...],
                channel_std: tuple[float, ...], dataset: str, round_index: int) -> Path:
    """Writes the dream data set to `path` atomically; dreams (N, C, H, W), logits (N, classes)."""
    if dreams.ndim != 4 or logits.ndim != 2 or len(dreams) != len(logits):
        raise ValueError(f"dreams {tuple(dreams.shape)} and soft labels {tuple(logits.shape)} "
                         "must be (N, C, H, W) and (N, classes)")
    images = dreams.detach().float().cpu().numpy()
    soft = logits.detach().float().cpu().numpy()
    arrays = {"images": images, "soft_labels": soft, "labels": soft.argmax(1).astype(np.int64),
              "channel_mean": np.asarray(channel_mean, dtype=np.float64),
              "channel_std": np.asarray(channel_std, dtype=np.float64),
              "dataset": np.asarray(dataset), "round": np.asarray(round_index, dtype=np.int64)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(stream: BinaryIO) -> None:
        np.savez(stream, **arrays)

    atomic_write(path, write)
    return path


def load_dreams(path: str | Path) -> DreamSet:
    """The dream data set at `path`; ValueError names what is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dreams file {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError, TypeError):
        raise ValueError(f"{path} is not a dreams .npz archive (as a CoDream run writes to "
                         "RUN/dreams.npz)") from None
    missing = [key for key in _ARRAYS if key not in arrays]
    if missing:
        raise ValueError(f"{path} lacks array(s) {', '.join(missing)}; a dreams file holds "
                         f"{', '.join(_ARRAYS)}")
    images = np.ascontiguousarray(arrays["images"], dtype=np.float32)
    soft = np.ascontiguousarray(arrays["soft_labels"], dtype=np.float32)
    if images.ndim != 4 or soft.ndim != 2 or len(images) != len(soft) or len(images) == 0:
        raise ValueError(f"{path}: images {images.shape} and soft_labels {soft.shape} must be "
                         "(N, C, H, W) and (N, classes) with N > 0")
    mean = tuple(float(m) for m in np.ravel(arrays["channel_mean"]))
    std = tuple(float(s) for s in np.ravel(arrays["channel_std"]))
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(f"{path}: channel_mean/channel_std need one entry per channel "
                         f"({images.shape[1]})")
    return DreamSet(images, soft, np.asarray(arrays["labels"], dtype=np.int64), mean, std,
                    str(arrays["dataset"]) if "dataset" in arrays else "",
                    int(arrays["round"]) if "round" in arrays else -1)
