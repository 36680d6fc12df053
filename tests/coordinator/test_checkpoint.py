"""Coordinator checkpoints and node round snapshots: a killed coordinator resumes bit for bit."""

import dataclasses
import os
import threading

import pytest
import torch

from client_node.round_snapshot import RoundSnapshots
from codream.config import RunConfig, build, dotted, merge
from codream.data import load_dataset
from codream.in_memory_transport import drive
from codream.messages import AcquireKnowledge, LoadParameters, TrainLocal
from codream.node_build import build_node, client_partitions, node_id
from codream.round_logic import build_coordinator
from coordinator.checkpoint import (
    CheckpointMismatch,
    config_fingerprint,
    load_checkpoint,
    save_checkpoint,
)

CLIENTS = 2
TINY = {
    "dataset": "digits", "clients": CLIENTS, "rounds": 3, "warmup_epochs": 1, "local_epochs": 1,
    "partition": "iid", "device": "cpu", "seed": 5,
    # adaptive > 0 gives every node a student, so its snapshot is exercised too.
    "dream": {"batch_size": 16, "global_steps": 2, "adaptive": 0.5, "adaptive_from_round": 2},
    "server_model": {"steps": 5, "batch_size": 16},
    "distill": {"dream_batch_size": 16, "buffer_batches": 2, "epochs": 1},
    "train": {"batch_size": 64},
}


def _config(**overrides) -> RunConfig:
    return build(RunConfig, merge(TINY, dotted(overrides)))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class _Crash(Exception):
    """The coordinator process dies (SIGKILL): nothing after this point of the run happens."""


class _ResumableNode:
    """A node as its daemon runs it: every task first passes RoundSnapshots.before_task."""

    def __init__(self, logic):
        self.logic = logic
        self.node_id = logic.node_id
        self.snapshots = RoundSnapshots(logic)
        self.run_id = "run-1"
        self.rollbacks = 0
        self.crash_on = None  # (round, task type): die when this node is handed that task

    def handle(self, task):
        if self.crash_on == (task.round, type(task)):
            self.crash_on = None
            raise _Crash
        self.rollbacks += self.snapshots.before_task(task.round, self.run_id)
        return self.logic.handle(task)


def _nodes(config, dataset):
    parts = client_partitions(config, dataset)
    device = torch.device("cpu")
    return {node_id(i): _ResumableNode(build_node(config, i, dataset, parts, device))
            for i in range(config.clients)}


def _without_seconds(history):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


def _run_with_crash(config, dataset, path, crash_round, crash_task):
    """Checkpoint after each report; kill the coordinator while the last node but one is in
    `crash_round` (the others already applied part of it); restart from the file and finish."""
    fingerprint = config_fingerprint(config)
    nodes = _nodes(config, dataset)
    reports = []

    def checkpoint(logic):
        def on_report(report):
            reports.append(report)
            save_checkpoint(path, logic, fingerprint)
        return on_report

    first = build_coordinator(config, dataset, torch.device("cpu"))
    assert load_checkpoint(path, fingerprint) is None  # a fresh run finds nothing to resume
    nodes[node_id(CLIENTS - 1)].crash_on = (crash_round, crash_task)
    with pytest.raises(_Crash):
        drive(first.run(), nodes, on_report=checkpoint(first))
    assert [r.round for r in reports][-1] == crash_round - 1
    del first

    for node in nodes.values():
        node.run_id = "run-2"
    resumed = build_coordinator(config, dataset, torch.device("cpu"))
    resumed.load_state_dict(load_checkpoint(path, fingerprint))
    assert resumed.next_round == crash_round
    drive(resumed.run(), nodes, on_report=checkpoint(resumed))
    return resumed, nodes, reports


def _run_uninterrupted(config, dataset):
    nodes = _nodes(config, dataset)
    logic = build_coordinator(config, dataset, torch.device("cpu"))
    drive(logic.run(), nodes)
    return logic, nodes


def _assert_same_models(nodes_a, nodes_b):
    for name in nodes_a:
        a, b = nodes_a[name].logic, nodes_b[name].logic
        for module_a, module_b in ((a.model, b.model), (a.student, b.student)):
            if module_a is None:
                assert module_b is None
                continue
            for (key, x), y in zip(module_a.state_dict().items(), module_b.state_dict().values(),
                                   strict=True):
                assert torch.equal(x, y), f"{name}: {key}"


def test_codream_resumes_after_a_crash_mid_round_bit_for_bit(digits, tmp_path):
    config = _config(strategy="codream")
    reference, reference_nodes = _run_uninterrupted(config, digits)
    # node-0 has trained, dreamed and already distilled round 2 when the coordinator dies.
    resumed, nodes, reports = _run_with_crash(config, digits, tmp_path / "coordinator.pt",
                                              crash_round=2, crash_task=AcquireKnowledge)

    assert [r.round for r in reports] == [0, 1, 2, 3]  # every round reported exactly once
    assert [m["round"] for m in resumed.history] == [0, 1, 2, 3]
    assert _without_seconds(resumed.history) == _without_seconds(reference.history)
    assert all("server_accuracy" in m for m in resumed.history[1:])
    assert torch.equal(resumed.last_dreams, reference.last_dreams)
    for x, y in zip(resumed.server_model.state_dict().values(),
                    reference.server_model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    _assert_same_models(nodes, reference_nodes)
    assert nodes["node-0"].rollbacks == 1  # it had begun round 2: rolled back once
    assert nodes[node_id(CLIENTS - 1)].rollbacks == 1


def test_fedavg_resumes_after_a_crash_mid_round_bit_for_bit(digits, tmp_path):
    config = _config(strategy="fedavg", rounds=2)
    reference, reference_nodes = _run_uninterrupted(config, digits)
    # node-0 has already loaded round 2's average when the coordinator dies.
    resumed, nodes, reports = _run_with_crash(config, digits, tmp_path / "coordinator.pt",
                                              crash_round=2, crash_task=LoadParameters)

    assert [r.round for r in reports] == [1, 2]
    assert _without_seconds(resumed.history) == _without_seconds(reference.history)
    assert torch.equal(torch.from_numpy(resumed.strategy.global_parameters),
                       torch.from_numpy(reference.strategy.global_parameters))
    _assert_same_models(nodes, reference_nodes)


def test_a_restart_after_the_last_round_runs_nothing(digits, tmp_path):
    config = _config(strategy="independent", rounds=1, warmup_epochs=1)
    logic, _ = _run_uninterrupted(config, digits)
    path = tmp_path / "done.pt"
    save_checkpoint(path, logic, config_fingerprint(config))
    again = build_coordinator(config, digits, torch.device("cpu"))
    again.load_state_dict(load_checkpoint(path, config_fingerprint(config)))
    assert list(again.run()) == []
    assert again.history == logic.history


def test_fingerprint_ignores_device_out_and_rounds_but_nothing_else():
    config = _config()
    assert config_fingerprint(config) == config_fingerprint(
        dataclasses.replace(config, device="auto", out="elsewhere/run", rounds=9))
    assert config_fingerprint(config) != config_fingerprint(dataclasses.replace(config, seed=6))
    assert config_fingerprint(config) != config_fingerprint(_config(**{"dream.global_steps": 3}))
    assert config_fingerprint(config) != config_fingerprint(_config(threads=2))  # other bits


def test_checkpoint_of_another_config_names_the_fields_that_differ(digits, tmp_path):
    config = _config(strategy="independent")
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, build_coordinator(config, digits, torch.device("cpu")),
                    config_fingerprint(config))
    other = config_fingerprint(_config(strategy="independent", seed=6, **{"dream.global_steps": 3}))
    with pytest.raises(CheckpointMismatch) as refused:
        load_checkpoint(path, other)
    assert "(dream.global_steps: 2 in the checkpoint, 3 now; seed: 5 in the checkpoint, 6 now)" in str(
        refused.value)
    assert "rounds" not in str(refused.value) and "device" not in str(refused.value)
    assert isinstance(CheckpointMismatch("x"), ValueError)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="not a readable"):
        load_checkpoint(path, config_fingerprint(config))


def test_a_checkpoint_without_its_config_still_gives_the_hash_message(digits, tmp_path):
    config = _config(strategy="independent")
    path = tmp_path / "old.pt"
    # As checkpoints were written before they stored the config: a plain fingerprint string.
    save_checkpoint(path, build_coordinator(config, digits, torch.device("cpu")), "0" * 64)
    assert "config" not in torch.load(path, weights_only=True)
    with pytest.raises(CheckpointMismatch, match=r"written for config '0{64}', this run's config is"):
        load_checkpoint(path, config_fingerprint(config))


def test_resuming_with_fewer_rounds_than_completed_is_refused(digits, tmp_path):
    config = _config(strategy="independent", rounds=2, warmup_epochs=1)
    logic, _ = _run_uninterrupted(config, digits)
    path = tmp_path / "done.pt"
    save_checkpoint(path, logic, config_fingerprint(config))
    with pytest.raises(CheckpointMismatch, match=r"rounds: the checkpoint has completed round 2.*"
                                                 r"rounds >= 2"):
        load_checkpoint(path, config_fingerprint(dataclasses.replace(config, rounds=1)))
    assert load_checkpoint(path, config_fingerprint(config))["next_round"] == 3  # the same: fine


def test_a_finished_run_resumed_with_more_rounds_runs_only_the_new_round_bit_for_bit(digits, tmp_path):
    three = _config(strategy="codream", rounds=3)
    two = dataclasses.replace(three, rounds=2)
    reference, reference_nodes = _run_uninterrupted(three, digits)

    path = tmp_path / "coordinator.pt"
    nodes = _nodes(two, digits)
    first = build_coordinator(two, digits, torch.device("cpu"))
    drive(first.run(), nodes,
          on_report=lambda report: save_checkpoint(path, first, config_fingerprint(two)))
    assert [m["round"] for m in first.history] == [0, 1, 2]

    for node in nodes.values():
        node.run_id = "run-2"  # a new coordinator process
    extended = build_coordinator(three, digits, torch.device("cpu"))
    extended.load_state_dict(load_checkpoint(path, config_fingerprint(three)))
    reports = []
    drive(extended.run(), nodes, on_report=reports.append)

    assert [r.round for r in reports] == [3]  # exactly the new round
    assert all(node.rollbacks == 0 for node in nodes.values())
    assert _without_seconds(extended.history) == _without_seconds(reference.history)
    assert torch.equal(extended.last_dreams, reference.last_dreams)
    _assert_same_models(nodes, reference_nodes)


def test_checkpoint_is_atomic_and_weights_only(digits, tmp_path):
    config = _config(strategy="fedavg", rounds=1)
    logic, _ = _run_uninterrupted(config, digits)
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, logic, config_fingerprint(config))
    save_checkpoint(path, logic, config_fingerprint(config))  # overwrites in place
    assert os.listdir(path.parent) == ["ckpt.pt"]  # no temporary file left behind
    payload = torch.load(path, weights_only=True)  # plain tensors and values only
    assert isinstance(payload["state"]["global_parameters"], torch.Tensor)
    assert payload["state"]["next_round"] == 2

    class Unpicklable:
        def state_dict(self):
            return {"bad": threading.Lock()}  # torch.save fails half-way through writing

    before = path.read_bytes()
    with pytest.raises(TypeError, match="pickle"):
        save_checkpoint(path, Unpicklable(), "x")
    assert path.read_bytes() == before  # the previous checkpoint survives a failed write
    assert os.listdir(path.parent) == ["ckpt.pt"]


def test_round_snapshots_restore_on_a_new_coordinator_run(digits):
    config = _config(strategy="codream")
    logic = build_node(config, 0, digits, client_partitions(config, digits), torch.device("cpu"))
    snapshots = RoundSnapshots(logic)
    assert snapshots.round == -1
    assert snapshots.before_task(1, "run-1") is False
    assert snapshots.round == 1
    start = {k: v.clone() for k, v in logic.model.state_dict().items()}
    generator_start = logic.generator.get_state()
    logic.buffer.add(torch.zeros(2, 1, 8, 8), torch.zeros(2, 10))
    logic.handle(TrainLocal("r1/train", 1, 1))
    assert snapshots.before_task(1, "run-1") is False  # same run: carry on
    assert any(not torch.equal(v, start[k]) for k, v in logic.model.state_dict().items())

    assert snapshots.before_task(1, "run-2") is True  # the round is re-run: back to its start
    for key, value in logic.model.state_dict().items():
        assert torch.equal(value, start[key]), key
    assert torch.equal(logic.generator.get_state(), generator_start)
    assert logic.buffer.num_batches == 0
    assert snapshots.before_task(1, "run-2") is False

    logic.handle(TrainLocal("r1/train", 1, 1))
    assert snapshots.before_task(1, "run-3") is True  # a second restart restores it again
    for key, value in logic.model.state_dict().items():
        assert torch.equal(value, start[key]), key

    assert snapshots.before_task(2, "run-3") is False
    assert snapshots.round == 2
    with pytest.raises(ValueError, match="round 1"):
        snapshots.before_task(1, "run-3")
