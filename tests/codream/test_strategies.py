"""End-to-end tests of every strategy on digits through simulate() and the in-memory transport."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codream.aggregation import Contribution
from codream.config import RunConfig, build, dotted, merge
from codream.data import load_dataset
from codream.in_memory_transport import drive
from codream.messages import DreamStep, Skip
from codream.node_build import build_node, client_partitions, node_id
from codream.parameters import flatten_state
from codream.round_logic import build_coordinator
from codream.simulation import simulate
from codream.toml_compat import tomllib

pytestmark = pytest.mark.integration

STRATEGIES = ("codream", "fedavg", "independent", "centralized")
CLIENTS, ROUNDS, B, S, CLASSES = 3, 2, 32, 3, 10
DIGIT_SHAPE = (1, 8, 8)
BASE = {
    "dataset": "digits", "clients": CLIENTS, "rounds": ROUNDS, "warmup_epochs": 2, "local_epochs": 1,
    "partition": "iid", "device": "cpu", "seed": 3,
    "dream": {"batch_size": B, "global_steps": S},
    "server_model": {"steps": 20, "batch_size": 32},
    "distill": {"dream_batch_size": 32, "buffer_batches": 2},
}


def _config(**overrides) -> RunConfig:
    return build(RunConfig, merge(BASE, dotted(overrides)))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they cost 10×."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    out = {}
    for strategy in STRATEGIES:
        run_dir = tmp_path_factory.mktemp(strategy)
        out[strategy] = (simulate(_config(strategy=strategy), run_dir), run_dir)
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_metrics_per_round_and_client(runs, strategy):
    result, _ = runs[strategy]
    rounds = [m["round"] for m in result.history]
    assert rounds == (list(range(1, ROUNDS + 1)) if strategy == "fedavg" else list(range(ROUNDS + 1)))
    expected_clients = {"pooled"} if strategy == "centralized" else {node_id(i) for i in range(CLIENTS)}
    for metrics in result.history:
        assert set(metrics["clients"]) == expected_clients
        for client in metrics["clients"].values():
            assert 0.0 <= client["accuracy"] <= 1.0
            assert np.isfinite(client["loss"])
        assert metrics["mean_client_accuracy"] == pytest.approx(
            np.mean([c["accuracy"] for c in metrics["clients"].values()])
        )
    # Digits is easy: two warm-up epochs already put every strategy far above chance (0.1).
    assert result.summary["final_mean_client_accuracy"] > 0.5
    if strategy == "codream":
        assert all(0.0 <= m["server_accuracy"] <= 1.0 for m in result.history[1:])
        assert all(m["fewest_clients_per_dream_step"] == CLIENTS for m in result.history[1:])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_run_directory(runs, strategy):
    result, run_dir = runs[strategy]
    payload = json.loads((run_dir / "metrics.json").read_text())
    assert len(payload["rounds"]) == len(result.history)
    assert payload["summary"]["strategy"] == strategy
    recorded = build(RunConfig, tomllib.loads((run_dir / "config.toml").read_text()))
    assert recorded == _config(strategy=strategy)
    assert (run_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    has_dreams = (run_dir / "dreams.png").exists()
    assert has_dreams == (strategy == "codream")
    if has_dreams:
        assert (run_dir / "dreams.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert result.final_dreams.shape == (B, *DIGIT_SHAPE)
        assert torch.isfinite(result.final_dreams).all()
    else:
        assert result.final_dreams is None


@pytest.mark.parametrize("strategy", ["codream", "fedavg"])
def test_federated_strategies_count_traffic(runs, strategy):
    result, _ = runs[strategy]
    assert result.summary["bytes_sent_per_client_per_round"] > 0
    assert result.summary["bytes_received_per_client_per_round"] > 0
    for metrics in result.history:
        if metrics["round"] == 0:
            continue  # warm-up only: nothing on the wire
        assert set(metrics["bytes"]) == {node_id(i) for i in range(CLIENTS)}
        for traffic in metrics["bytes"].values():
            assert traffic["sent"] > 0 and traffic["received"] > 0


def test_independent_sends_no_payload(runs):
    result, _ = runs["independent"]
    assert all(t == {"received": 0, "sent": 0} for m in result.history for t in m["bytes"].values())


def _codream_traffic(history):
    return [m["bytes"] for m in history]


def test_codream_bytes_are_the_dream_size_per_step(runs):
    # Up: one Δ per global step (B·C·H·W float32) plus the soft labels (B·classes float32, and
    # with the default class-count soft labels the client's class counts, classes float32).
    # Down: dreams at steps 1..S−1 (step 0 sends only a seed), with the soft-label request and with
    # the knowledge-acquisition task (which also carries the aggregated logits).
    result, _ = runs["codream"]
    dream_bytes = B * int(np.prod(DIGIT_SHAPE)) * 4
    label_bytes = B * CLASSES * 4
    for metrics in result.history[1:]:
        for traffic in metrics["bytes"].values():
            assert traffic["sent"] == S * dream_bytes + label_bytes + CLASSES * 4
            assert traffic["received"] == (S - 1) * dream_bytes + 2 * dream_bytes + label_bytes
    assert all(t == {"received": 0, "sent": 0} for t in result.history[0]["bytes"].values())
    # Per round means per round that moved payload: the warm-up's 0 bytes are not a round of it.
    summary = result.summary
    assert summary["bytes_sent_per_client_per_round"] == S * dream_bytes + label_bytes + CLASSES * 4
    assert summary["bytes_received_per_client_per_round"] == (S + 1) * dream_bytes + label_bytes


def test_codream_bytes_do_not_depend_on_model_size_but_fedavg_bytes_do(runs, one_thread):
    # Same dream settings, no training (bytes do not depend on it): only the model changes.
    cheap = {"rounds": 1, "warmup_epochs": 0, "local_epochs": 0, "distill.epochs": 0,
             "server_model.steps": 0}
    small = simulate(_config(strategy="codream", models="cnn", **cheap))
    wide = simulate(_config(strategy="codream", models="wide_cnn", **cheap))
    assert _codream_traffic(small.history) == _codream_traffic(wide.history)
    assert _codream_traffic(small.history)[1]["node-0"]["sent"] > 0
    # The contrast: FedAvg ships the parameters, so its traffic follows the model size.
    fedavg_small = simulate(_config(strategy="fedavg", models="cnn", **cheap))
    fedavg_wide = simulate(_config(strategy="fedavg", models="wide_cnn", **cheap))
    assert (fedavg_small.summary["bytes_sent_per_client_per_round"]
            != fedavg_wide.summary["bytes_sent_per_client_per_round"])


def _federation(config: RunConfig):
    dataset = load_dataset(config.dataset)
    parts = client_partitions(config, dataset)
    device = torch.device("cpu")
    nodes = {node_id(i): build_node(config, i, dataset, parts, device) for i in range(config.clients)}
    return nodes, build_coordinator(config, dataset, device)


def test_fedavg_clients_end_with_identical_parameters(runs, one_thread):
    result, _ = runs["fedavg"]
    for metrics in result.history:
        accuracies = {c["accuracy"] for c in metrics["clients"].values()}
        losses = {c["loss"] for c in metrics["clients"].values()}
        assert len(accuracies) == 1 and len(losses) == 1
        assert metrics["clients_summed"] == CLIENTS

    config = _config(strategy="fedavg", rounds=1)
    nodes, coordinator = _federation(config)
    initial = flatten_state(nodes["node-0"].model)
    reports = []
    drive(coordinator.run(), nodes, on_report=reports.append)
    flats = [flatten_state(node.model) for node in nodes.values()]
    for flat in flats[1:]:
        np.testing.assert_array_equal(flat, flats[0])
    assert not np.array_equal(flats[0], initial)  # the federation did train
    assert len(reports) == 1


class _NaNDreams:
    """A node whose dream updates are NaN (a numerical blow-up, or a buggy client); all else honest."""

    def __init__(self, node):
        self.node = node
        self.node_id = node.node_id
        self.dream_steps = 0

    def handle(self, task):
        reply = self.node.handle(task)
        if isinstance(task, DreamStep):
            self.dream_steps += 1
            assert isinstance(reply, Contribution)
            values = np.full_like(reply.weighted_values, np.nan)
            return Contribution(values, reply.weight)
        return reply


def test_node_with_nan_updates_is_excluded_and_the_run_finishes(one_thread):
    config = _config(strategy="codream", rounds=1, warmup_epochs=1, **{"server_model.steps": 5})
    nodes, coordinator = _federation(config)
    bad = _NaNDreams(nodes["node-1"])
    nodes["node-1"] = bad
    reports = []
    drive(coordinator.run(), nodes, on_report=reports.append)
    assert [r.round for r in reports] == [0, 1]
    last = reports[-1].metrics
    assert bad.dream_steps == S  # it was asked every step, and excluded every step
    assert last["fewest_clients_per_dream_step"] == CLIENTS - 1
    assert set(last["excluded"]) == {"node-1"}
    assert "non-finite" in last["excluded"]["node-1"]
    assert coordinator.last_dreams is not None and torch.isfinite(coordinator.last_dreams).all()
    assert 0.0 <= last["server_accuracy"] <= 1.0
    # The honest nodes' models stay finite after distilling the dreams.
    for name in ("node-0", "node-2"):
        assert np.isfinite(flatten_state(nodes[name].model)).all()


def test_node_guard_turns_non_finite_values_into_a_skip(one_thread):
    config = _config(strategy="codream")
    nodes, _ = _federation(config)
    node = nodes["node-0"]
    reply = node._contribution(torch.tensor([1.0, float("inf")]), "dream update", 1)
    assert isinstance(reply, Skip) and "non-finite" in reply.reason
    ok = node._contribution(torch.tensor([1.0, 2.0]), "dream update", 1)
    assert isinstance(ok, Contribution)
    np.testing.assert_allclose(ok.weighted_values, [node.weight, 2 * node.weight])


def test_same_config_gives_identical_final_dreams(runs, one_thread):
    first, _ = runs["codream"]
    again = simulate(_config(strategy="codream"))
    assert torch.equal(first.final_dreams, again.final_dreams)
    assert [m["clients"] for m in first.history] == [m["clients"] for m in again.history]
    other_seed = simulate(_config(strategy="codream", seed=4, rounds=1, warmup_epochs=1))
    assert not torch.equal(first.final_dreams, other_seed.final_dreams)


def test_cli_simulate_writes_the_run_directory(tmp_path, capsys, monkeypatch, one_thread):
    import logging

    from codream.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["simulate", "--strategy", "independent", "--clients", "2", "--rounds", "1",
                     "--warmup-epochs", "1", "--partition", "iid", "--device", "cpu", "--no-progress",
                     "--out", str(tmp_path / "cli-run")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 0
    assert "final mean client accuracy" in capsys.readouterr().out
    assert {p.name for p in Path(tmp_path / "cli-run").iterdir()} >= {"metrics.json", "config.toml",
                                                                       "accuracy.png"}


class _Recording:
    """An honest node that records the tasks it is sent."""

    def __init__(self, node):
        self.node = node
        self.node_id = node.node_id
        self.tasks = []

    def handle(self, task):
        self.tasks.append(task)
        return self.node.handle(task)


def test_one_knowledge_acquisition_per_round_over_all_its_dream_batches(one_thread):
    """Two batches a round: two syntheses and two soft-label sums, then one acquisition carrying
    both batches; the node's buffer, like the server's, counts them as two dream batches."""
    config = _config(strategy="codream", rounds=1, warmup_epochs=1,
                     **{"server_model.steps": 5, "dream.batches_per_round": 2})
    nodes, coordinator = _federation(config)
    recording = _Recording(nodes["node-0"])
    nodes["node-0"] = recording
    drive(coordinator.run(), nodes)
    kinds = [type(t).__name__ for t in recording.tasks if t.round == 1]
    assert kinds.count("DreamStep") == 2 * S and kinds.count("SoftLabels") == 2
    acquisitions = [t for t in recording.tasks if type(t).__name__ == "AcquireKnowledge"]
    assert len(acquisitions) == 1 and acquisitions[0].dreams.shape == (2 * B, *DIGIT_SHAPE)
    assert acquisitions[0].logits.shape == (2 * B, CLASSES)
    assert recording.node.buffer.num_batches == 2
    assert coordinator.strategy.server_buffer.num_batches == 2


def test_keep_confident_distils_only_the_dreams_whose_summed_label_is_surest(one_thread):
    """distill.keep_confident = 0.25: of each batch of B the coordinator relays the B/4 dreams
    whose z̄ has the highest max probability; node and server buffer them as one batch each."""
    config = _config(strategy="codream", rounds=1, warmup_epochs=1,
                     **{"server_model.steps": 5, "dream.batches_per_round": 2,
                        "distill.keep_confident": 0.25})
    nodes, coordinator = _federation(config)
    recording = _Recording(nodes["node-0"])
    nodes["node-0"] = recording
    drive(coordinator.run(), nodes)
    (acquisition,) = [t for t in recording.tasks if type(t).__name__ == "AcquireKnowledge"]
    kept = B // 4
    assert acquisition.dreams.shape == (2 * kept, *DIGIT_SHAPE)
    assert recording.node.buffer.num_batches == 2 and len(recording.node.buffer) == 2 * kept
    assert coordinator.strategy.server_buffer.num_batches == 2


def test_consensus_steps_carry_the_previous_steps_summed_soft_labels(one_thread):
    """dream.consensus: step 0 carries no targets, every later step the z̄ the coordinator summed
    from the previous step's contributions (B, classes), and each contribution is longer by the
    soft-label values."""
    config = _config(strategy="codream", rounds=1, warmup_epochs=1,
                     **{"server_model.steps": 5, "dream.consensus": True})
    nodes, coordinator = _federation(config)
    recording = _Recording(nodes["node-0"])
    nodes["node-0"] = recording
    replies = []
    original = recording.handle

    def handle(task):
        reply = original(task)
        replies.append((task, reply))
        return reply

    recording.handle = handle
    drive(coordinator.run(), nodes)
    steps = [(t, r) for t, r in replies if type(t).__name__ == "DreamStep"]
    assert len(steps) == S and steps[0][0].targets is None
    for task, reply in steps[1:]:
        assert task.targets.shape == (B, CLASSES) and torch.isfinite(task.targets).all()
        assert len(reply.weighted_values) == B * 64 + B * CLASSES + CLASSES
    assert not torch.equal(steps[1][0].targets, steps[2][0].targets)  # z̄ follows the dreams


@pytest.mark.parametrize("warm_start", [True, False])
def test_warm_start_resumes_each_batch_from_its_final_dreams_of_the_round_before(one_thread,
                                                                                 warm_start):
    """dream.warm_start: step 0 of batch b in round 2 carries exactly the dreams batch b ended
    round 1 with (those round 1 distilled); without it, only a fresh seed. Later steps move on."""
    config = _config(strategy="codream", rounds=2, warmup_epochs=1, local_epochs=0,
                     **{"server_model.steps": 5, "dream.batches_per_round": 2,
                        "dream.warm_start": warm_start})
    nodes, coordinator = _federation(config)
    recording = _Recording(nodes["node-0"])
    nodes["node-0"] = recording
    drive(coordinator.run(), nodes)
    steps = {(t.round, t.batch, t.step): t for t in recording.tasks if isinstance(t, DreamStep)}
    first_acquisition = next(t for t in recording.tasks
                             if type(t).__name__ == "AcquireKnowledge" and t.round == 1)
    for b in range(2):
        assert steps[(1, b, 0)].dreams is None
        resumed = steps[(2, b, 0)].dreams
        if not warm_start:
            assert resumed is None
            continue
        assert torch.equal(resumed, first_acquisition.dreams[b * B:(b + 1) * B])
        assert not torch.equal(steps[(2, b, 1)].dreams, resumed)
    state = coordinator.strategy.state_dict()  # a checkpoint keeps where each batch resumes
    assert sorted(state["continued_dreams"]) == ([0, 1] if warm_start else [])
    restored = build_coordinator(config, load_dataset(config.dataset), torch.device("cpu")).strategy
    restored.load_state_dict(state)
    assert restored.continued.keys() == coordinator.strategy.continued.keys()
    for b, dreams in restored.continued.items():
        assert torch.equal(dreams, coordinator.strategy.continued[b])
    del state["continued_dreams"]  # a checkpoint from before warm_start: every batch fresh
    restored.load_state_dict(state)
    assert restored.continued == {}
