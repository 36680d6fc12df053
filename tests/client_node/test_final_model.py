"""A node daemon keeps its trained model when, and only when, the coordinator ends the run.

The scripted fake coordinator of test_daemon drives a real node (digits, an mlp): its Shutdown
task (sent only at the end of a run) makes the node write STATE_DIR/NODE.model.pt; a node
stopped by its operator mid-run writes none, and one without a state directory says it kept none.
"""

import logging
import threading

import torch
from test_daemon import FakeCoordinator, evaluate, joined, shutdown

from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_OK, NodeDaemon
from client_node.node_options import NodeOptions
from client_node.node_setup import build_logic
from codream.config import RunConfig
from codream.data import load_dataset
from codream.model_artifacts import load_model_artifact
from codream.training import predict_logits

CONFIG = RunConfig(dataset="digits", clients=2, models=("cnn", "mlp"), weighting="equal")


def _run(tmp_path, pulls, state_dir=True):
    stop = threading.Event()
    fake = FakeCoordinator(stop, joins=[joined(config=CONFIG, index=1)], pulls=pulls)
    options = NodeOptions("127.0.0.1:1", "hospital-b", ChannelSecurity(), device="cpu", pull_wait=0.5,
                          state_dir=str(tmp_path / "state") if state_dir else None)
    daemon = NodeDaemon(options, stop, connect=fake.connect, build_logic=build_logic,
                        sleep=lambda _: None)
    return daemon.run(), daemon


def test_the_runs_shutdown_makes_the_node_write_its_trained_model(tmp_path):
    code, daemon = _run(tmp_path, [evaluate(1, round_index=0), shutdown()])
    assert code == EXIT_OK
    path = tmp_path / "state" / "hospital-b.model.pt"
    assert path.stat().st_mode & 0o777 == 0o600  # trained on data that is not to leave the node
    artifact = load_model_artifact(path)
    info = artifact.info
    assert (info.model, info.role, info.node_id, info.strategy, info.round) == (
        "mlp", "node", "hospital-b", "codream", 0)
    dataset = load_dataset("digits")
    assert (info.input_shape, info.channel_mean) == (dataset.input_shape, dataset.channel_mean)
    model = daemon._built.logic.model
    assert torch.equal(artifact.logits(dataset.x_test, normalised=True),
                       predict_logits(model, dataset.x_test))


def test_a_node_stopped_mid_run_writes_no_final_model(tmp_path):
    code, _ = _run(tmp_path, [evaluate(1, round_index=0)])  # the script ends: the operator stops it
    assert code == EXIT_OK
    assert (tmp_path / "state" / "hospital-b.snapshot.pt").is_file()
    assert not (tmp_path / "state" / "hospital-b.model.pt").exists()


def test_without_a_state_dir_the_node_says_its_model_is_not_kept(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="client_node.final_model"):
        code, _ = _run(tmp_path, [evaluate(1, round_index=0), shutdown()], state_dir=False)
    assert code == EXIT_OK
    assert "without --state-dir its trained model is not kept" in caplog.text
    assert not (tmp_path / "state").exists()
