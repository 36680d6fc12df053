"""A node's round-start snapshot survives its process: a restarted node resumes its model."""

from __future__ import annotations

import torch

from client_node.round_snapshot import RoundSnapshots
from codream.config import DreamConfig, RunConfig
from codream.data import load_dataset
from codream.messages import TrainLocal
from codream.node_build import build_node, client_partitions

CONFIG = RunConfig(dataset="digits", clients=2, rounds=1, warmup_epochs=0, models=("mlp",),
                   dream=DreamConfig(batch_size=8, global_steps=1))


def _node(index: int = 0):
    dataset = load_dataset(CONFIG.dataset)
    return build_node(CONFIG, index, dataset, client_partitions(CONFIG, dataset), torch.device("cpu"))


def _state(logic):
    return {k: v.clone() for k, v in logic.model.state_dict().items()}


def test_a_restarted_node_resumes_from_its_last_round_start(tmp_path):
    path = tmp_path / "node-0.snapshot.pt"
    first = _node()
    snapshots = RoundSnapshots(first, path, "run-a")
    first.handle(TrainLocal("r0/train", 0, 1))  # round 0 ran without a snapshot on disk yet
    snapshots.before_task(1, "coordinator-1")  # round 1 begins: its start is written
    at_round_1 = _state(first)
    first.handle(TrainLocal("r1/train", 1, 1))  # then the process dies mid-round
    assert path.is_file() and not list(tmp_path.glob(".snapshot-*"))

    restarted = _node()
    assert not all(torch.equal(v, at_round_1[k]) for k, v in restarted.model.state_dict().items())
    resumed = RoundSnapshots(restarted, path, "run-a")
    assert resumed.load() and resumed.round == 1
    assert all(torch.equal(v, at_round_1[k]) for k, v in restarted.model.state_dict().items())
    # the same round from the (unchanged) coordinator: keep going from the restored start
    resumed.before_task(1, "coordinator-1")
    assert all(torch.equal(v, at_round_1[k]) for k, v in restarted.model.state_dict().items())


def test_a_snapshot_of_another_run_or_node_is_ignored(tmp_path):
    path = tmp_path / "node-0.snapshot.pt"
    node = _node()
    RoundSnapshots(node, path, "run-a").before_task(2, "c")
    fresh = _node()
    before = _state(fresh)
    other = RoundSnapshots(fresh, path, "run-b")
    assert not other.load() and other.round == -1
    assert all(torch.equal(v, before[k]) for k, v in fresh.model.state_dict().items())
    assert not RoundSnapshots(_node(), tmp_path / "missing.pt", "run-a").load()


def test_a_snapshot_ahead_of_the_coordinator_is_an_earlier_run_and_is_dropped(tmp_path):
    """Same config, same --state-dir, a fresh coordinator at round 0: start from scratch."""
    path = tmp_path / "node-0.snapshot.pt"
    old = _node()
    old.handle(TrainLocal("r0/train", 0, 1))
    RoundSnapshots(old, path, "run-a").before_task(3, "old-coordinator")

    restarted = _node()
    initial = _state(restarted)
    snapshots = RoundSnapshots(restarted, path, "run-a")
    assert snapshots.load() and snapshots.round == 3
    assert not snapshots.before_task(0, "new-coordinator")  # no ValueError: a new run
    assert snapshots.round == 0
    assert all(torch.equal(v, initial[k]) for k, v in restarted.model.state_dict().items())


def test_a_finished_run_extended_by_more_rounds_continues_from_the_trained_model(tmp_path):
    """`finish` (on the run's Shutdown) snapshots the final state as the next round's start;
    a node restarted for an extended run (only `rounds` differs) resumes from it."""
    import dataclasses

    from client_node.node_setup import snapshot_fingerprint

    path = tmp_path / "node-0.snapshot.pt"
    node = _node()
    snapshots = RoundSnapshots(node, path, snapshot_fingerprint(CONFIG, 0))
    snapshots.before_task(1, "coordinator-1")
    node.handle(TrainLocal("r1/train", 1, 1))  # the last round's training
    trained = _state(node)
    snapshots.finish()
    assert snapshots.round == 2

    extended = dataclasses.replace(CONFIG, rounds=3)
    assert snapshot_fingerprint(extended, 0) == snapshot_fingerprint(CONFIG, 0)
    assert snapshot_fingerprint(extended, 1) != snapshot_fingerprint(CONFIG, 0)
    other = dataclasses.replace(CONFIG, seed=CONFIG.seed + 1)
    assert snapshot_fingerprint(other, 0) != snapshot_fingerprint(CONFIG, 0)

    restarted = _node()
    resumed = RoundSnapshots(restarted, path, snapshot_fingerprint(extended, 0))
    assert resumed.load() and resumed.round == 2
    resumed.before_task(2, "coordinator-2")  # the extended run's first new round
    assert all(torch.equal(v, trained[k]) for k, v in restarted.model.state_dict().items())
