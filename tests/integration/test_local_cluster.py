"""Real clusters: a coordinator and node daemons as separate processes on 127.0.0.1.

Each test starts a `LocalCluster` (ports chosen by the OS, per-process logs under tmp_path) and
always tears it down. The configurations are tiny (digits, a few dream steps) so the suite fits
a 2-core CI machine; what they check does not depend on size: the cluster computes exactly what
the in-process simulation computes, survives SIGKILLed nodes and coordinators, and resumes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from codream.cli import make_parser
from codream.cli.local_cluster import LocalCluster
from codream.cli.run_config import config_flags, load_run_config
from codream.simulation import simulate

pytestmark = pytest.mark.integration

TINY = ["--dataset", "digits", "--warmup-epochs", "2", "--set", "dream.batch_size=32",
        "--set", "server_model.steps=20", "--set", "distill.epochs=1"]


def _config(args: list[str], clients: int, out: Path):
    parsed = make_parser().parse_args(["simulate", *args, "--clients", str(clients), "--out", str(out)])
    return load_run_config(None, {}, config_flags(parsed))


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _wait_for(predicate, timeout: float, what: str, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if cluster.processes["coordinator"].poll() is not None:
            raise AssertionError(f"coordinator exited while waiting for {what}:\n"
                                 + cluster.log_text("coordinator")[-3000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _progress_rounds(run_dir: Path) -> int:
    path = run_dir / "progress.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _finish(cluster: LocalCluster, timeout: float = 240.0) -> None:
    code = cluster.wait_coordinator(timeout)
    assert code == 0, cluster.log_text("coordinator")[-4000:]
    codes = cluster.wait_all(30.0)
    assert all(c == 0 for c in codes.values()), codes


def _assert_same_run(cluster_dir: Path, simulated, rounds: range) -> None:
    metrics = _metrics(cluster_dir)
    assert [m["round"] for m in metrics["rounds"]] == list(rounds)
    for ours, theirs in zip(metrics["rounds"], simulated.history, strict=True):
        assert ours["clients"] == theirs["clients"]
        assert ours.get("server_accuracy") == theirs.get("server_accuracy")
    if simulated.final_dreams is not None:
        dreams = np.load(cluster_dir / "final_dreams.npy")
        assert np.array_equal(dreams, simulated.final_dreams.numpy())


class _MetricsSampler:
    """Scrapes the coordinator process's /metrics every 0.2 s while it runs."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                continue  # not up yet, or already gone
            self.samples.append({
                s.name + json.dumps(s.labels, sort_keys=True): s.value
                for family in text_string_to_metric_families(text) for s in family.samples})

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join(10)
        return self.samples


def test_codream_cluster_with_secure_aggregation_equals_the_simulation(tmp_path):
    """4 nodes, 4 architectures, secure sums: bit-for-bit what `codream simulate` computes;
    its metrics endpoint, scraped while it runs, counts the rounds as they complete."""
    args = [*TINY, "--rounds", "2", "--models", "cnn,mlp,vgg,wide_cnn", "--set", "dream.global_steps=4"]
    with LocalCluster(tmp_path / "cluster", 4, args, node_args=["--device", "cpu"]) as cluster:
        cluster.start()
        sampler = _MetricsSampler(cluster.metrics_port)
        _finish(cluster)
        scraped = sampler.stop()
    rounds = [s.get("codream_rounds_completed_total{}", 0.0) for s in scraped]
    assert rounds == sorted(rounds) and rounds[0] < rounds[-1] and rounds[-1] >= 2, rounds
    exchanged = 'grpc_server_handled_total{"grpc_code": "OK", "grpc_method": "Exchange", ' \
                '"grpc_service": "codream.v1.Coordinator", "grpc_type": "unary"}'
    assert scraped[0].get(exchanged, 0.0) < scraped[-1][exchanged]
    assert scraped[-1]['codream_clients_per_step_count{"phase": "dream_step"}'] >= 4
    simulated = simulate(_config(args, 4, tmp_path / "sim"))
    _assert_same_run(tmp_path / "cluster", simulated, range(0, 3))
    summary = _metrics(tmp_path / "cluster")["summary"]
    assert summary["secure_aggregation"] is True and summary["transport"] == "grpc"
    assert summary["final_mean_client_accuracy"] == pytest.approx(
        simulated.summary["final_mean_client_accuracy"])
    last = _metrics(tmp_path / "cluster")["rounds"][-1]
    assert last["fewest_clients_per_dream_step"] == 4 and last["clipped_elements"] == 0
    # learning happened: the clients gain clearly from the dreams over their warm-up (0.33 ->
    # 0.67 here), and the server model, trained on 20 steps of dreams only, beats chance (0.1)
    rounds_run = _metrics(tmp_path / "cluster")["rounds"]
    assert last["mean_client_accuracy"] > rounds_run[0]["mean_client_accuracy"] + 0.2
    assert last["server_accuracy"] > 0.15


def test_a_sampled_codream_cluster_picks_the_simulations_clients_and_equals_it(tmp_path):
    """3 of 5 nodes a round (seeded by run seed and round), sums among them only, knowledge
    acquisition and evaluation on all: the cluster draws the simulation's nodes and computes
    its numbers bit for bit, round 2 continuing round 1's dreams (dream.warm_start) over gRPC."""
    args = [*TINY, "--rounds", "2", "--models", "mlp,cnn", "--set", "dream.global_steps=3",
            "--set", "clients_per_round=3", "--set", "dream.warm_start=true"]
    with LocalCluster(tmp_path / "cluster", 5, args, node_args=["--device", "cpu"]) as cluster:
        cluster.start()
        _finish(cluster)
    simulated = simulate(_config(args, 5, tmp_path / "sim"))
    _assert_same_run(tmp_path / "cluster", simulated, range(0, 3))
    rounds = _metrics(tmp_path / "cluster")["rounds"]
    assert [m["participants"] for m in rounds] == [m["participants"] for m in simulated.history]
    assert all(len(m["participants"]) == 3 and len(m["clients"]) == 5 for m in rounds)
    assert rounds[-1]["fewest_clients_per_dream_step"] == 3


def test_fedavg_cluster_over_mtls_with_secure_aggregation(tmp_path):
    args = ["--dataset", "digits", "--strategy", "fedavg", "--rounds", "2", "--models", "mlp"]
    with LocalCluster(tmp_path / "cluster", 3, args, node_args=["--device", "cpu"], tls=True) as cluster:
        cluster.start()
        _finish(cluster)
        assert "joined" in cluster.log_text("node-0")
        # --tls authenticates secure aggregation by the nodes' certificates (mTLS-bound, no
        # pinned roster): such nodes refuse any unauthenticated session, so the run finishing
        # with every node summed means every session was authenticated.
        for node in cluster.node_ids:
            assert "its mTLS certificate carries its identity key" in cluster.log_text(node)
            assert "pins a peer-identity roster" not in cluster.log_text(node)
        assert "refused secure session" not in cluster.log_text("coordinator")
        assert "without authentication" not in cluster.log_text("coordinator")
    simulated = simulate(_config(args, 3, tmp_path / "sim"))
    _assert_same_run(tmp_path / "cluster", simulated, range(1, 3))
    assert _metrics(tmp_path / "cluster")["rounds"][-1]["clients_summed"] == 3


def test_a_node_killed_mid_session_is_recovered_and_readmitted_at_the_next_session(tmp_path):
    args = [*TINY, "--rounds", "4", "--models", "mlp", "--local-epochs", "1",
            "--set", "dream.global_steps=12", "--set", "secagg.steps_per_block=4",
            "--set", "dream.batch_size=128"]
    with LocalCluster(tmp_path / "cluster", 4, args, node_args=["--device", "cpu"],
                      coordinator_args=["--rejoin-wait", "120"]) as cluster:
        cluster.start()
        # it has masked its input for a secure step: killed now, it dies inside the session
        _wait_for(lambda: "masked input for step" in cluster.log_text("node-3"), 120,
                  "a masked step", cluster)
        cluster.kill("node-3")
        cluster.start_node("node-3")
        _finish(cluster)
        coordinator_log = cluster.log_text("coordinator")
    rounds = _metrics(tmp_path / "cluster")["rounds"]
    excluded = {node: why for m in rounds for node, why in m.get("excluded", {}).items()}
    assert "recovered" in excluded.get("node-3", ""), excluded
    assert [m["round"] for m in rounds] == [0, 1, 2, 3, 4]
    # the step it died in still summed the three survivors
    killed_round = next(m for m in rounds if "node-3" in m.get("excluded", {}))
    assert killed_round["fewest_clients_per_dream_step"] >= 3
    # the restarted node joined again and was admitted when the next session began
    after_kill = coordinator_log.split("node node-3 left the federation", 1)[1]
    assert "node node-3 joined" in after_kill
    assert ": 4 members" in after_kill.split("node node-3 ready", 1)[1]
    assert "node-3" in rounds[-1]["clients"]
    # and it came back with its model as of its last round start, not from scratch
    restarted = (tmp_path / "cluster" / "logs" / "node-3.1.log").read_text()
    assert "restored its state at the start of round" in restarted


def test_a_killed_coordinator_resumes_from_its_checkpoint_without_losing_or_repeating_a_round(tmp_path):
    args = [*TINY, "--rounds", "3", "--models", "cnn,mlp,vgg", "--set", "dream.global_steps=6"]
    run_dir = tmp_path / "cluster"
    with LocalCluster(run_dir, 3, args, node_args=["--device", "cpu"]) as cluster:
        cluster.start()
        _wait_for(lambda: _progress_rounds(run_dir) >= 2, 180, "round 1 to complete", cluster)
        cluster.kill("coordinator")
        port = cluster.port
        cluster.start_coordinator(port=port)
        _finish(cluster)
        assert "resumed from" in cluster.log_text("coordinator")
    simulated = simulate(_config(args, 3, tmp_path / "sim"))
    # every round exactly once, and the nodes rolled back the interrupted round: the result is
    # the uninterrupted run's, bit for bit
    _assert_same_run(run_dir, simulated, range(0, 4))
    assert torch.get_num_threads() == 1


def test_sigterm_stops_coordinator_and_nodes_gracefully_and_keeps_the_last_checkpoint(tmp_path):
    import signal

    from coordinator.checkpoint import config_fingerprint, load_checkpoint

    args = [*TINY, "--rounds", "6", "--models", "mlp", "--set", "dream.global_steps=6"]
    run_dir = tmp_path / "cluster"
    with LocalCluster(run_dir, 2, args, node_args=["--device", "cpu"],
                      coordinator_args=["--grace-seconds", "2"]) as cluster:
        cluster.start()
        _wait_for(lambda: _progress_rounds(run_dir) >= 1, 180, "round 0 to complete", cluster)
        cluster.processes["coordinator"].send_signal(signal.SIGTERM)
        assert cluster.wait_coordinator(30) == 0
        assert "stopping gracefully" in cluster.log_text("coordinator")
        for node in cluster.node_ids:  # coordinator gone: the nodes are reconnecting
            cluster.processes[node].send_signal(signal.SIGTERM)
        assert all(cluster.processes[n].wait(30) == 0 for n in cluster.node_ids)
    saved = load_checkpoint(run_dir / "checkpoint.pt",
                            config_fingerprint(_config(args, 2, tmp_path / "unused")))
    # the checkpoint holds exactly the rounds that were reported complete, none half-served
    assert saved["next_round"] == _progress_rounds(run_dir)
    assert [m["round"] for m in saved["history"]] == list(range(_progress_rounds(run_dir)))


def test_sigterm_while_waiting_for_nodes_exits_cleanly(tmp_path):
    import signal

    with LocalCluster(tmp_path / "cluster", 2, ["--dataset", "digits"]) as cluster:
        cluster.prepare()
        cluster.start_coordinator()  # and no nodes
        cluster.processes["coordinator"].send_signal(signal.SIGTERM)
        assert cluster.wait_coordinator(30) == 0
        assert "stopped while waiting for nodes" in cluster.log_text("coordinator")


def test_a_node_with_its_own_data_set_trains_on_all_of_it(tmp_path):
    """An organisation brings its own data (`--dataset npz:PATH`); the others use the run's."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    own = tmp_path / "hospital.npz"
    keep = digits.target < 5  # this organisation only ever saw digits 0-4
    np.savez(own, x=digits.images[keep][:, None] / 16.0, y=digits.target[keep], num_classes=10)
    args = [*TINY, "--rounds", "1", "--models", "mlp", "--set", "dream.global_steps=2"]
    with LocalCluster(tmp_path / "cluster", 3, args, node_args=["--device", "cpu"]) as cluster:
        cluster.prepare()
        cluster.start_coordinator()
        cluster.start_node("node-0", ["--dataset", f"npz:{own}"])
        for node in cluster.node_ids[1:]:
            cluster.start_node(node)
        _finish(cluster)
        log = cluster.log_text("coordinator")
    expected = int(round(0.8 * keep.sum()))  # npz without a test split: a stratified 80/20 split
    samples = int(log.split("node node-0 ready: ", 1)[1].split(" samples", 1)[0])
    assert abs(samples - expected) <= 5
    rounds = _metrics(tmp_path / "cluster")["rounds"]
    assert set(rounds[-1]["clients"]) == {"node-0", "node-1", "node-2"}
