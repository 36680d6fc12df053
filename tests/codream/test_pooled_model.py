"""A pooled (non-federated) strategy's run leaves its model in RUN/models/pooled.pt, as the
federated ones leave theirs: the model its `run_pooled` returns, loadable and measurable with
`codream evaluate` at exactly the accuracy the run reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from codream.cli import main
from codream.config import RunConfig, build
from codream.data import load_dataset
from codream.model_artifacts import load_model_artifact
from codream.models import build_seeded_model
from codream.simulation import simulate
from codream.strategies import Strategy, register, unregister
from codream.training import evaluate, predict_logits, train_supervised

RETURNED: list[torch.nn.Module] = []


class PooledReturningItsModel(Strategy):
    """Centralized's loop, returning its model at the end, as a pooled run hands it over."""

    name = "pooled_returning"
    federated = False

    @classmethod
    def run_pooled(cls, config, dataset, device) -> Iterator[dict[str, Any]]:
        model = build_seeded_model(config.model_for(0), dataset.input_shape, dataset.num_classes,
                                   config.seed + 1).to(device)
        generator = torch.Generator().manual_seed(config.seed)
        for r in range(config.rounds + 1):
            started = time.perf_counter()
            train_supervised(model, dataset.x_train, dataset.y_train, 1,
                             config.train.optimizer_config(), generator)
            accuracy, loss = evaluate(model, dataset.x_test, dataset.y_test)
            yield {"round": r, "clients": {"pooled": {"accuracy": accuracy, "loss": loss}},
                   "mean_client_accuracy": accuracy, "bytes": {},
                   "seconds": time.perf_counter() - started}
        RETURNED.append(model)
        return model


@pytest.fixture
def registered():
    register(PooledReturningItsModel)
    RETURNED.clear()
    yield
    unregister(PooledReturningItsModel.name)


def test_the_pooled_runs_model_is_written_and_measures_as_reported(registered, tmp_path, capsys):
    config = build(RunConfig, {"strategy": "pooled_returning", "dataset": "digits", "clients": 2,
                               "rounds": 1, "models": ["mlp"], "device": "cpu", "seed": 3,
                               "train": {"batch_size": 64}, "out": str(tmp_path / "run")})
    result = simulate(config, tmp_path / "run")
    path = tmp_path / "run" / "models" / "pooled.pt"
    artifact = load_model_artifact(path)
    info = artifact.info
    assert (info.model, info.role, info.node_id, info.strategy, info.round, info.dataset) == (
        "mlp", "pooled", "pooled", "pooled_returning", 1, "digits")
    [model] = RETURNED
    dataset = load_dataset("digits")
    assert torch.equal(artifact.logits(dataset.x_test, normalised=True),
                       predict_logits(model, dataset.x_test))
    capsys.readouterr()
    assert main(["evaluate", str(path), "--dataset", "digits"]) == 0
    reported = result.history[-1]["mean_client_accuracy"]
    out = capsys.readouterr().out
    assert "mlp (trained on the pooled data) (pooled_returning, round 1)" in out
    assert f"accuracy {reported:.4f}" in out


class PooledReturningNothing(PooledReturningItsModel):
    name = "pooled_returning_nothing"

    @classmethod
    def run_pooled(cls, config, dataset, device) -> Iterator[dict[str, Any]]:
        yield from super().run_pooled(config, dataset, device)  # its model is dropped here


def test_a_pooled_run_that_returns_no_model_writes_none(registered, tmp_path):
    register(PooledReturningNothing)
    try:
        config = build(RunConfig, {"strategy": "pooled_returning_nothing", "dataset": "digits",
                                   "clients": 2, "rounds": 0, "models": ["mlp"], "device": "cpu",
                                   "out": str(tmp_path / "run")})
        simulate(config, tmp_path / "run")
    finally:
        unregister(PooledReturningNothing.name)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "models" / "pooled.pt").exists()


def test_centralized_writes_its_model_at_the_accuracy_it_reported(tmp_path):
    config = build(RunConfig, {"strategy": "centralized", "dataset": "digits", "clients": 2,
                               "rounds": 0, "warmup_epochs": 2, "models": ["mlp"],
                               "device": "cpu", "out": str(tmp_path / "run")})
    result = simulate(config, tmp_path / "run")
    artifact = load_model_artifact(tmp_path / "run" / "models" / "pooled.pt")
    assert (artifact.info.role, artifact.info.strategy) == ("pooled", "centralized")
    dataset = load_dataset("digits")
    logits = artifact.logits(dataset.x_test, normalised=True)
    accuracy = (logits.argmax(1) == dataset.y_test).float().mean().item()
    assert accuracy == pytest.approx(result.history[-1]["mean_client_accuracy"], abs=1e-6)
