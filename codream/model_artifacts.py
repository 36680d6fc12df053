"""Trained-model files a user takes home: the weights plus everything needed to rebuild and use them.

A model artifact holds the factory name (`codream.models`), input shape, number of classes, the
per-channel normalisation its training data had, who trained it (a node, the coordinator's
server model, FedAvg's global model, `codream distill`) and after which round, and its
`state_dict`. It is written atomically with `torch.save` and holds only tensors and plain values,
so it is read back with `torch.load(weights_only=True)`: loading a model never runs its code.
Pure core: no grpc, no CLI.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codream.atomic_files import atomic_write
from codream.data import as_images
from codream.models import build_seeded_model
from codream.training import predict_logits

FORMAT = "codream.model/1"
ROLES = ("node", "server", "global", "distilled", "pooled")  # pooled: Centralized's


@dataclass(frozen=True)
class ModelInfo:
    """What a model artifact says about its model, besides the weights."""

    model: str  # the factory: a `codream.models` name or `package.module:factory`
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    channel_mean: tuple[float, ...]  # (C,) subtracted from raw images before the model
    channel_std: tuple[float, ...]  # (C,) then divided out
    role: str  # one of ROLES
    node_id: str  # the node that trained it, or "coordinator" / "distill"
    strategy: str  # the run's strategy ("" for a model distilled from a dreams file)
    round: int  # the last round it trained in (-1: not from a federated round)
    dataset: str  # the data set spec it was trained (or its dreams made) on

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"model role {self.role!r} is not one of {', '.join(ROLES)}")
        if len(self.channel_mean) != self.input_shape[0] or len(self.channel_std) != self.input_shape[0]:
            raise ValueError(f"normalisation has {len(self.channel_mean)} means and "
                             f"{len(self.channel_std)} stds for {self.input_shape[0]} channels")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(values))
        if missing:
            raise ValueError(f"model metadata lacks {', '.join(missing)}")
        shape = tuple(int(d) for d in values["input_shape"])
        if len(shape) != 3:
            raise ValueError(f"model metadata: input_shape {shape} is not (C, H, W)")
        return cls(
            model=str(values["model"]), input_shape=(shape[0], shape[1], shape[2]),
            num_classes=int(values["num_classes"]),
            channel_mean=tuple(float(m) for m in values["channel_mean"]),
            channel_std=tuple(float(s) for s in values["channel_std"]),
            role=str(values["role"]), node_id=str(values["node_id"]),
            strategy=str(values["strategy"]), round=int(values["round"]),
            dataset=str(values["dataset"]),
        )


def save_model(path: Path, module: nn.Module, info: ModelInfo, private: bool = False) -> Path:
    """Writes `module`'s weights and `info` to `path` atomically (a reader never sees half a file);
    `private`: mode 0600, for a node's model, which was trained on data that is not to leave it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "info": info.as_dict(),
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()},
    }
    atomic_write(path, lambda stream: torch.save(payload, stream), private=private)
    return path


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    """A loaded model (eval mode) with its metadata; `predict` takes raw images and applies the
    normalisation the model was trained with, so a user never has to know it."""

    module: nn.Module
    info: ModelInfo
    path: Path

    @property
    def device(self) -> torch.device:
        first = next(self.module.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def normalise(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw images (as in an npz data set's `x`: (N, C, H, W), (N, H, W) or (N, H, W, C);
        uint8 is scaled to [0, 1], floats taken as given) -> the model's input (N, C, H, W).
        ValueError names the shape the model takes when they do not fit."""
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        x = as_images(array, "images")
        self.check_shape(tuple(x.shape[1:]))
        # In float64, as codream.data normalises: the same inputs give the very same tensors.
        mean = np.asarray(self.info.channel_mean, dtype=np.float64)[None, :, None, None]
        std = np.asarray(self.info.channel_std, dtype=np.float64)[None, :, None, None]
        return torch.tensor((x - mean) / std, dtype=torch.float32)

    def renormalised(self, x: torch.Tensor, channel_mean: tuple[float, ...],
                     channel_std: tuple[float, ...]) -> torch.Tensor:
        """Images normalised with other statistics (another data set's own, as `load_dataset`
        gives them) -> this model's input; unchanged when the statistics are the model's."""
        if tuple(channel_mean) == self.info.channel_mean and tuple(channel_std) == self.info.channel_std:
            return x
        mean = torch.tensor(channel_mean, dtype=torch.float64)[None, :, None, None]
        std = torch.tensor(channel_std, dtype=torch.float64)[None, :, None, None]
        return self.normalise((x.double().cpu() * std + mean).numpy())

    def check_shape(self, shape: tuple[int, ...]) -> None:
        if tuple(shape) != self.info.input_shape:
            raise ValueError(f"images have shape {_shape(shape)} but the model takes "
                             f"{_shape(self.info.input_shape)}")

    def logits(self, images: np.ndarray | torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """(N, classes) logits on the CPU; `normalised`: `images` already are the model's input."""
        if normalised:
            x = torch.as_tensor(images, dtype=torch.float32)
            self.check_shape(tuple(x.shape[1:]))
        else:
            x = self.normalise(images)
        return predict_logits(self.module, x.to(self.device)).cpu()

    def predict_proba(self, images: np.ndarray | torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """(N, classes) class probabilities."""
        return F.softmax(self.logits(images, normalised), dim=1)

    def predict(self, images: np.ndarray | torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """(N,) the most probable class of each image."""
        return self.logits(images, normalised).argmax(1)


def load_model_artifact(path: str | Path, device: str | torch.device = "cpu") -> ModelArtifact:
    """The model at `path`, rebuilt from its factory and weights, in eval mode on `device`.
    ValueError says what is wrong with a file that is not a model artifact; FileNotFoundError
    when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not a CoDream model file ({cause})") from None
    except Exception as error:  # noqa: BLE001 - torch's unpickler raises several kinds
        raise ValueError(f"{path} is not a CoDream model file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a CoDream model file (format {found!r}, expected {FORMAT!r}; "
                         f"write one with codream.model_artifacts.save_model)")
    info = ModelInfo.from_dict(payload["info"])
    module = build_seeded_model(info.model, info.input_shape, info.num_classes, 0)
    try:
        module.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit a {info.model} model "
                         f"({str(error).splitlines()[0]})") from None
    module.to(device).eval()
    module.codream_info = info  # type: ignore[assignment]  # the metadata travels with the module
    return ModelArtifact(module, info, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model at `path`, ready to use (eval mode). Its input is normalised images: its
    metadata, normalisation included, is `module.codream_info`; `load_model_artifact(path)`
    adds `predict` on raw images."""
    return load_model_artifact(path, device).module


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
