"""TaskRunner on real task logic (tiny digits run): plain results equal the logic's, secure sums too."""

import dataclasses

import numpy as np
import pytest
import torch
from node_helpers import NoSnapshots, SecureCoordinator

from client_node.task_runner import TaskRunner
from codream.aggregation import Contribution
from codream.config import DreamConfig, RunConfig
from codream.data import load_dataset
from codream.messages import DreamStep, Evaluate
from codream.node_build import build_node, client_partitions
from protos import serde
from secagg import SecAggConfig

CONFIG = RunConfig(dataset="digits", clients=3, rounds=1, warmup_epochs=0, models=("mlp",),
                   device="cpu", dream=DreamConfig(batch_size=8, global_steps=2))
SHAPE = (8, 1, 8, 8)  # (B, C, H, W)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(CONFIG.dataset)


PLAIN = dataclasses.replace(CONFIG, secagg=dataclasses.replace(CONFIG.secagg, enabled=False))


def build(dataset, index, config=CONFIG):
    return build_node(config, index, dataset, client_partitions(config, dataset),
                      torch.device("cpu"))


def dream_task(step=0, dreams=None):
    return serde.task_to_proto(DreamStep("d0", 0, 0, step, 1234, SHAPE, dreams))


def test_a_node_whose_run_requires_secure_aggregation_never_sends_a_clear_update(dataset):
    result = TaskRunner("node-0", build(dataset, 0), NoSnapshots()).run(dream_task(), "member-0")
    assert result.WhichOneof("body") == "skip" and "refusing to send a clear update" in result.skip.reason


def test_plain_dream_step_equals_the_task_logic_contribution(dataset):
    snapshots = NoSnapshots()
    runner = TaskRunner("node-0", build(dataset, 0, PLAIN), snapshots)
    task = dream_task()
    task.coordinator_run, task.sequence = "run-a", 7
    result = runner.run(task, "member-0")
    assert (result.member_id, result.task_id, result.sequence) == ("member-0", "d0", 7)
    expected = build(dataset, 0, PLAIN).handle(serde.task_from_proto(task))
    got = serde.reply_from_proto(result, size=int(np.prod(SHAPE)))
    assert isinstance(got, Contribution) and isinstance(expected, Contribution)
    np.testing.assert_array_equal(got.weighted_values, expected.weighted_values)
    assert got.weight == expected.weight
    assert snapshots.calls == [(0, "run-a")]


def test_evaluate_reports_on_the_test_set(dataset):
    runner = TaskRunner("node-1", build(dataset, 1), NoSnapshots())
    result = runner.run(serde.task_to_proto(Evaluate("e", 0)), "m")
    assert result.WhichOneof("body") == "eval_report"
    assert result.eval_report.num_samples == len(dataset.x_test)


def test_secure_dream_step_sums_to_the_plain_contributions(dataset):
    logics = {i: build(dataset, i) for i in range(3)}
    plain = {i: build(dataset, i).handle(serde.task_from_proto(dream_task())) for i in range(3)}
    unit = sum(logic.weight for logic in logics.values())
    dim = int(np.prod(SHAPE))
    config = SecAggConfig(n_clients=3, dim=dim, clip=50.0, max_weight=1.0)
    runners = {i: TaskRunner(f"node-{i}", logics[i], NoSnapshots()) for i in range(3)}
    coordinator = SecureCoordinator(config, runners, unit)

    result, masked = coordinator.step(lambda i: {"dream_step": dream_task().dream_step})

    expected = sum(plain[i].weighted_values.astype(np.float64) for i in range(3)) / unit
    assert result.clipped == 0 and result.survivors == (0, 1, 2)
    assert np.abs(result.total - expected).max() <= result.error_bound
    assert result.weight == pytest.approx(1.0, abs=1e-6)  # Σ w_k / W
    assert all(m.masked.skip_reason == "" for m in masked.values())
