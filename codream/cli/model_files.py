"""Opening what `evaluate`, `predict` and `distill` take (model files, data sets), and measuring a
model on a data set, with every mistake one line naming the argument and the fix (ConfigError)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codream.cli import preflight
from codream.config import ConfigError
from codream.data import Dataset
from codream.model_artifacts import ModelArtifact, load_model_artifact
from codream.training import evaluate

SPLITS = ("test", "train")


def add_model_argument(parser: Any) -> None:
    """The MODEL positional that evaluate and predict share, with one help text."""
    parser.add_argument("model", metavar="MODEL", help="a model file (RUN/models/NODE.pt, "
                        "RUN/models/server.pt, or what `codream distill` wrote)")


def open_model(path: str, device: str, what: str = "MODEL") -> ModelArtifact:
    """The model artifact at `path` on `device`; ConfigError naming `what` when it cannot be."""
    torch_device = preflight.check_device(device, "--device")
    if not Path(path).is_file():
        raise ConfigError(f"{what} {path}: no such file; give a model file a run wrote "
                          f"(RUN/models/NODE.pt, RUN/models/server.pt) or `codream distill --out`")
    try:
        return load_model_artifact(path, torch_device)
    except ValueError as error:
        raise ConfigError(f"{what} {error}") from None


def open_dataset(spec: str, flag: str = "--dataset") -> Dataset:
    """The data set `spec` (simulate's --dataset syntax); ConfigError naming `flag`."""
    return preflight.check_dataset(spec, flag)


def check_fits(artifact: ModelArtifact, dataset: Dataset, flag: str = "--dataset") -> None:
    """The data set's images and labels must be what the model takes and predicts."""
    info = artifact.info
    if dataset.input_shape != info.input_shape:
        raise ConfigError(
            f"{flag} {dataset.name}: its images are {_shape(dataset.input_shape)} but the model takes "
            f"{_shape(info.input_shape)}; give a data set of that shape (the model was trained on "
            f"{info.dataset})")
    if dataset.num_classes > info.num_classes:
        raise ConfigError(
            f"{flag} {dataset.name}: it has {dataset.num_classes} classes but the model predicts "
            f"{info.num_classes}; give a data set with labels in [0, {info.num_classes})")


def measure(artifact: ModelArtifact, dataset: Dataset, split: str = "test") -> dict[str, Any]:
    """Accuracy and mean cross-entropy of the model on `dataset`'s split, its images brought to
    the model's normalisation first (a no-op on the data set it was trained on)."""
    check_fits(artifact, dataset)
    x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_train, dataset.y_train)
    inputs = artifact.renormalised(x, dataset.channel_mean, dataset.channel_std)
    accuracy, loss = evaluate(artifact.module, inputs.to(artifact.device), y.to(artifact.device))
    return {"dataset": dataset.name, "split": split, "samples": len(y), "accuracy": accuracy,
            "loss": loss}


def describe(artifact: ModelArtifact) -> str:
    """One phrase saying what the model is, e.g. `mlp of node node-1 (codream, round 4)`."""
    info = artifact.info
    who = {"node": f"of node {info.node_id}", "server": "(the server model)",
           "global": "(FedAvg's global model)", "distilled": "(distilled from dreams)",
           "pooled": "(trained on the pooled data)"}[info.role]
    when = f" ({info.strategy}, round {info.round})" if info.strategy else ""
    return f"{info.model} {who}{when}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
