"""A strategy is one file: this test file alone defines a new one from existing tasks and runs it.

`NoiseDistillation` is a FedMD-like method with no data to share: every round each client
trains locally, the clients' soft labels on a fixed batch of seeded noise are summed (securely),
and every client distils the summed labels. It reuses TrainLocal, SoftLabels and
AcquireKnowledge; nothing outside this file changes to run it end to end in `simulate`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codream.config import ConfigError, RunConfig, build
from codream.local_dreaming import initial_dreams
from codream.messages import AcquireKnowledge, Evaluate, SoftLabels, TrainLocal
from codream.round_protocol import Broadcast, RoundSteps
from codream.simulation import simulate
from codream.soft_labels import aggregated_logits, soft_label_size
from codream.strategies import STRATEGIES, Strategy, register, unregister

NOISE = 16  # noise inputs whose soft labels the clients share


class NoiseDistillation(Strategy):
    name = "noise_distillation"
    tasks = (TrainLocal, SoftLabels, AcquireKnowledge)

    def round(self, round_index: int) -> RoundSteps:
        r, config = round_index, self.config
        epochs = config.warmup_epochs if r == 0 else config.local_epochs
        yield Broadcast(TrainLocal(f"r{r}/train", r, epochs))
        if r == 0:
            return {}
        noise = initial_dreams(config.seed + r, (NOISE, *self.setting.input_shape))
        mode, classes = config.distill.soft_labels, self.setting.num_classes
        total = (yield Broadcast(SoftLabels(f"r{r}/labels", r, noise),
                                 soft_label_size(NOISE, classes, mode))).total
        logits = aggregated_logits(torch.from_numpy(total.total.astype(np.float32)), total.weight,
                                   NOISE, classes, mode)
        yield Broadcast(AcquireKnowledge(f"r{r}/acquire", r, noise, logits))
        return {"labels_summed": len(total.contributors)}


class Undeclared(Strategy):
    """Sends a task it does not declare: the round logic must refuse it."""

    name = "undeclared"
    tasks = (TrainLocal,)

    def round(self, round_index: int) -> RoundSteps:
        yield Broadcast(Evaluate(f"r{round_index}/eval", round_index))
        return {}


@pytest.fixture
def registered():
    for strategy in (NoiseDistillation, Undeclared):
        register(strategy)
    yield
    for strategy in (NoiseDistillation, Undeclared):
        unregister(strategy.name)


def _config(strategy: str, **fields) -> RunConfig:
    return build(RunConfig, {
        "strategy": strategy, "dataset": "digits", "clients": 3, "rounds": 2, "partition": "iid",
        "warmup_epochs": 1, "local_epochs": 1, "seed": 5, "device": "cpu",
        "distill": {"epochs": 1, "dream_batch_size": 16, "buffer_batches": 2}, **fields,
    })


def test_a_strategy_is_unknown_until_registered():
    assert "noise_distillation" not in STRATEGIES
    with pytest.raises(ConfigError, match="strategy: must be one of codream, fedavg"):
        _config("noise_distillation")


def test_a_strategy_defined_in_one_file_runs_end_to_end_with_secure_aggregation(registered, tmp_path):
    result = simulate(_config("noise_distillation"), tmp_path)

    assert [m["round"] for m in result.history] == [0, 1, 2]  # round 0 is the warm-up
    assert result.summary["secure_aggregation"] is True
    assert [m.get("labels_summed") for m in result.history] == [None, 3, 3]
    for metrics in result.history:
        assert set(metrics["clients"]) == {"node-0", "node-1", "node-2"}
        assert all(0.0 <= c["accuracy"] <= 1.0 for c in metrics["clients"].values())
    # Round 1 sends each node the noise twice (soft labels, acquisition) plus the summed logits,
    # and each node sends back its (NOISE x classes) soft labels: 4-byte floats throughout.
    noise_bytes = 4 * NOISE * 64
    logits_bytes = 4 * soft_label_size(NOISE, 10, "class_counts")
    for traffic in result.history[1]["bytes"].values():
        assert traffic == {"received": 2 * noise_bytes + 4 * NOISE * 10, "sent": logits_bytes}
    assert (tmp_path / "metrics.json").is_file()
    assert 'strategy = "noise_distillation"' in (tmp_path / "config.toml").read_text()


def test_knowledge_acquisition_runs_on_every_node(registered):
    """Acquiring the shared labels changes the models: the run differs from local training alone."""
    shared = simulate(_config("noise_distillation", distill={"epochs": 3, "kd_weight": 50.0}))
    alone = simulate(_config("independent"))
    assert shared.history[0]["clients"] == alone.history[0]["clients"]  # the same warm-up
    assert shared.history[2]["clients"] != alone.history[2]["clients"]


def test_a_strategy_that_sends_an_undeclared_task_is_refused(registered):
    with pytest.raises(TypeError, match="sent Evaluate, which is not among the tasks it declares"):
        simulate(_config("undeclared"))
