"""A real cluster leaves the trained models behind: each node daemon writes its own when the
coordinator ends the run (STATE/NODE.model.pt; its model never goes over the wire), the
coordinator writes the server model and the dreams, and `codream cluster` gathers the nodes'
files into RUN/models/. They are the very models `codream simulate` trains with the same config.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codream.cli import make_parser
from codream.cli.local_cluster import LocalCluster
from codream.cli.run_config import config_flags, load_run_config
from codream.data import load_dataset
from codream.dream_artifacts import load_dreams
from codream.model_artifacts import load_model_artifact
from codream.simulation import simulate
from codream.training import predict_logits

pytestmark = pytest.mark.integration

ARGS = ["--dataset", "digits", "--warmup-epochs", "1", "--rounds", "1", "--models", "mlp,cnn",
        "--set", "dream.batch_size=32", "--set", "dream.global_steps=2", "--set", "server_model.steps=10",
        "--set", "distill.epochs=1"]


def test_every_node_daemon_writes_its_final_model_and_the_cluster_gathers_them(tmp_path):
    run_dir = tmp_path / "cluster"
    with LocalCluster(run_dir, 2, ARGS, node_args=["--device", "cpu"]) as cluster:
        cluster.start()
        assert cluster.wait_coordinator(240) == 0, cluster.log_text("coordinator")[-3000:]
        assert all(code == 0 for code in cluster.wait_all(30.0).values())
        for node in cluster.node_ids:
            assert "wrote its trained model" in cluster.log_text(node)
        gathered = cluster.gather_models()
    assert [p.name for p in gathered] == ["node-0.pt", "node-1.pt"]
    assert sorted(p.name for p in (run_dir / "state").glob("*.model.pt")) == [
        "node-0.model.pt", "node-1.model.pt"]
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == ["node-0.pt", "node-1.pt",
                                                                      "server.pt"]
    parsed = make_parser().parse_args(["simulate", *ARGS, "--clients", "2", "--out", str(tmp_path / "s")])
    simulated = simulate(load_run_config(None, {}, config_flags(parsed)))
    x = load_dataset("digits").x_test
    for index, node in enumerate(cluster.node_ids):
        artifact = load_model_artifact(run_dir / "models" / f"{node}.pt")
        assert (artifact.info.node_id, artifact.info.round, artifact.info.model) == (
            node, 1, ["mlp", "cnn"][index])
        assert torch.equal(artifact.logits(x, normalised=True),
                           predict_logits(simulated.nodes[node].model, x))
    server = load_model_artifact(run_dir / "models" / "server.pt")
    assert torch.equal(server.logits(x, normalised=True),
                       predict_logits(simulated.coordinator.server_model, x))
    images, _ = simulated.coordinator.strategy.server_buffer.tensors()
    assert np.array_equal(load_dreams(run_dir / "dreams.npz").images, images.numpy())
