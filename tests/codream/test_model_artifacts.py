"""What a user takes home from a run: the trained models and the dream data set, reloaded.

One real `codream simulate` (digits, 2 clients, 1 round, a few steps) writes RUN/models/ and
RUN/dreams.npz; every test reads those files back the way a user would (`codream.load_model`,
`codream evaluate / predict / distill`) and checks them against the in-memory objects the run
kept: the same predictions bit for bit, the run's reported accuracies, the server buffer's dreams.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import codream
from codream.cli import main
from codream.config import RunConfig, build
from codream.data import _load_raw, load_dataset
from codream.dream_artifacts import load_dreams
from codream.model_artifacts import load_model_artifact
from codream.simulation import simulate
from codream.training import predict_logits

TINY = {"dataset": "digits", "clients": 2, "rounds": 1, "models": ["cnn", "mlp"], "warmup_epochs": 1,
        "local_epochs": 1, "dream": {"batch_size": 32, "global_steps": 2},
        "server_model": {"steps": 10}, "distill": {"epochs": 1}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("artifacts") / "run"
    config = build(RunConfig, {**TINY, "out": str(run_dir)})
    return simulate(config, run_dir)


@pytest.fixture(autouse=True)
def _keep_logging():
    """`main` configures the root logger; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_run_directory_holds_every_nodes_model_the_server_model_and_the_dreams(run):
    assert sorted(p.name for p in (run.run_dir / "models").iterdir()) == [
        "node-0.pt", "node-1.pt", "server.pt"]
    assert (run.run_dir / "dreams.npz").is_file()


@pytest.mark.parametrize("index", [0, 1])
def test_a_reloaded_node_model_predicts_exactly_what_the_runs_model_did(run, index):
    dataset = load_dataset("digits")
    artifact = load_model_artifact(run.run_dir / "models" / f"node-{index}.pt")
    info = artifact.info
    assert (info.model, info.role, info.node_id, info.strategy, info.round) == (
        TINY["models"][index], "node", f"node-{index}", "codream", 1)
    assert info.input_shape == (1, 8, 8) and info.num_classes == 10 and info.dataset == "digits"
    assert info.channel_mean == dataset.channel_mean and info.channel_std == dataset.channel_std
    expected = predict_logits(run.nodes[f"node-{index}"].model, dataset.x_test)
    assert torch.equal(artifact.logits(dataset.x_test, normalised=True), expected)
    # raw images, as a user has them: the artifact applies the run's normalisation itself
    raw_test = _load_raw("digits", 0)[2]
    assert torch.equal(artifact.logits(raw_test), expected)
    assert torch.equal(artifact.predict(raw_test), expected.argmax(1))
    assert torch.allclose(artifact.predict_proba(raw_test).sum(1), torch.ones(len(raw_test)))


def test_load_model_gives_a_ready_module_in_eval_mode_with_its_metadata(run):
    module = codream.load_model(run.run_dir / "models" / "server.pt")
    assert isinstance(module, torch.nn.Module) and not module.training
    assert module.codream_info.role == "server" and module.codream_info.model == "cnn"
    server = run.coordinator.server_model
    x = load_dataset("digits").x_test
    with torch.no_grad():
        assert torch.equal(module(x), predict_logits(server, x))


@pytest.mark.parametrize("name", ["node-0", "node-1", "server"])
def test_evaluate_reports_the_accuracy_the_run_reported_for_that_model(run, name, capsys):
    code, out, _ = _cli(["evaluate", str(run.run_dir / "models" / f"{name}.pt"), "--dataset", "digits",
                         "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    summary = json.loads((run.run_dir / "metrics.json").read_text())["summary"]
    reported = (summary["final_server_accuracy"] if name == "server"
                else summary["final_client_accuracy"][name])
    assert result["accuracy"] == reported and result["samples"] == 360
    code, out, _ = _cli(["evaluate", str(run.run_dir / "models" / f"{name}.pt"), "--dataset",
                         "digits"], capsys)
    assert code == 0 and f"accuracy {reported:.4f}" in out


def test_evaluate_brings_another_normalisation_to_the_models(run, tmp_path, capsys):
    """An npz of the same images has other statistics (its own train split): evaluate maps
    them to the model's, so the accuracy is the run's (up to float ties)."""
    x_train, y_train, x_test, y_test, _ = _load_raw("digits", 0)
    np.savez(tmp_path / "mine.npz", x=x_train[:200] * 0.5 + 0.1, y=y_train[:200], x_test=x_test,
             y_test=y_test)
    path = run.run_dir / "models" / "node-0.pt"
    code, out, _ = _cli(["evaluate", str(path), "--dataset", f"npz:{tmp_path / 'mine.npz'}", "--json"],
                        capsys)
    assert code == 0
    summary = json.loads((run.run_dir / "metrics.json").read_text())["summary"]
    assert json.loads(out)["accuracy"] == pytest.approx(summary["final_client_accuracy"]["node-0"],
                                                        abs=1.5 / 360)


def test_predict_writes_classes_and_probabilities_as_npz_csv_or_to_stdout(run, tmp_path, capsys):
    raw_test = _load_raw("digits", 0)[2][:7]
    np.savez(tmp_path / "images.npz", x=raw_test[:, 0])  # (N, H, W): a channel axis is added
    model = run.run_dir / "models" / "node-1.pt"
    artifact = load_model_artifact(model)
    expected = artifact.predict_proba(raw_test).numpy()
    assert _cli(["predict", str(model), "--input", str(tmp_path / "images.npz"), "--output",
                 str(tmp_path / "p.npz")], capsys)[0] == 0
    with np.load(tmp_path / "p.npz") as saved:
        assert np.array_equal(saved["classes"], expected.argmax(1))
        assert np.allclose(saved["probabilities"], expected)
    assert _cli(["predict", str(model), "--input", str(tmp_path / "images.npz"), "--output",
                 str(tmp_path / "p.csv")], capsys)[0] == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "index,class," + ",".join(f"p{k}" for k in range(10)) and len(lines) == 8
    assert [int(line.split(",")[1]) for line in lines[1:]] == expected.argmax(1).tolist()
    code, out, _ = _cli(["predict", str(model), "--input", str(tmp_path / "images.npz")], capsys)
    assert code == 0 and out.splitlines() == lines


def test_the_dreams_file_is_the_server_buffer_with_its_soft_labels(run):
    dreams = load_dreams(run.run_dir / "dreams.npz")
    images, logits = run.coordinator.strategy.server_buffer.tensors()
    assert np.array_equal(dreams.images, images.numpy())
    assert np.array_equal(dreams.soft_labels, logits.numpy())
    assert np.array_equal(dreams.labels, logits.argmax(1).numpy())
    assert dreams.channel_mean == load_dataset("digits").channel_mean
    assert (dreams.dataset, dreams.round, dreams.input_shape, dreams.num_classes) == (
        "digits", 1, (1, 8, 8), 10)
    assert np.array_equal(np.load(run.run_dir / "final_dreams.npy"), dreams.images[-32:])


def test_distill_trains_a_fresh_architecture_on_the_dreams_alone(run, tmp_path, capsys):
    out_file = tmp_path / "student.pt"
    code, out, _ = _cli(["distill", "--dreams", str(run.run_dir / "dreams.npz"), "--model", "resnet8",
                         "--steps", "5", "--batch-size", "16", "--out", str(out_file), "--dataset",
                         "digits"], capsys)
    assert code == 0 and "wrote" in out and "accuracy" in out
    artifact = load_model_artifact(out_file)
    assert (artifact.info.model, artifact.info.role, artifact.info.round) == ("resnet8", "distilled", 1)
    assert artifact.info.channel_std == load_dataset("digits").channel_std
    code, again, _ = _cli(["evaluate", str(out_file), "--dataset", "digits"], capsys)
    assert code == 0 and again.split("accuracy ")[1][:6] == out.split("accuracy ")[1][:6]


def test_fedavg_leaves_the_global_model_which_every_node_holds(tmp_path):
    run_dir = tmp_path / "fedavg"
    config = build(RunConfig, {**TINY, "strategy": "fedavg", "models": ["mlp"], "out": str(run_dir)})
    result = simulate(config, run_dir)
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == ["global.pt", "node-0.pt",
                                                                       "node-1.pt"]
    assert not (run_dir / "dreams.npz").exists()
    x = load_dataset("digits").x_test
    global_model = load_model_artifact(run_dir / "models" / "global.pt")
    assert global_model.info.role == "global" and global_model.info.round == 1
    for node in result.nodes.values():  # after the last round every node loaded the average
        assert torch.equal(global_model.logits(x, normalised=True), predict_logits(node.model, x))


def _write_wrong_inputs(d: Path) -> None:
    np.savez(d / "big.npz", x=np.zeros((3, 28, 28), np.float32), y=np.arange(3), x_test=np.zeros(
        (3, 28, 28), np.float32), y_test=np.arange(3), num_classes=10)
    np.savez(d / "noimages.npz", pictures=np.zeros((3, 8, 8), np.float32))
    np.save(d / "plain.npy", np.zeros((3, 8, 8), np.float32))
    (d / "taken.pt").write_text("someone's file")


@pytest.mark.parametrize("argv, says", [
    (["evaluate", "{d}/missing.pt", "--dataset", "digits"], "MODEL {d}/missing.pt: no such file"),
    (["evaluate", "{run}/metrics.json", "--dataset", "digits"], "is not a CoDream model file"),
    (["evaluate", "{model}", "--dataset", "npz:{d}/big.npz"],
     "--dataset npz:{d}/big.npz: its images are 1x28x28 but the model takes 1x8x8"),
    (["evaluate", "{model}", "--dataset", "imagenet"], "--dataset: unknown data set spec"),
    (["predict", "{model}", "--input", "{d}/big.npz"],
     "--input {d}/big.npz: images have shape 1x28x28 but the model takes 1x8x8"),
    (["predict", "{model}", "--input", "{d}/nothing.npz"], "--input {d}/nothing.npz: no such file"),
    (["predict", "{model}", "--input", "{d}/noimages.npz"], "has no array 'x' (it has pictures)"),
    (["predict", "{model}", "--input", "{d}/plain.npy"], "not a NumPy .npz archive"),
    (["predict", "{model}", "--input", "{d}/noimages.npz", "--output", "{d}/p.txt"],
     "--output {d}/p.txt: must end in .npz or .csv"),
    (["distill", "--dreams", "{run}/dreams.npz", "--model", "nope", "--out", "{d}/n.pt"],
     "--model nope: unknown model 'nope'; registered: cnn"),
    (["distill", "--dreams", "{d}/missing.npz", "--model", "cnn", "--out", "{d}/n.pt"],
     "--dreams {d}/missing.npz: no such file"),
    (["distill", "--dreams", "{d}/noimages.npz", "--model", "cnn", "--out", "{d}/n.pt"],
     "lacks array(s) images, soft_labels"),
    (["distill", "--dreams", "{run}/dreams.npz", "--model", "cnn", "--out", "{d}/taken.pt"],
     "--out {d}/taken.pt: exists; choose another --out or add --force"),
    (["distill", "--dreams", "{run}/dreams.npz", "--model", "cnn", "--steps", "0"],
     "--steps: must be >= 1"),
    (["distill", "--dreams", "{run}/dreams.npz", "--model", "cnn", "--out", "{d}/n.pt", "--dataset",
      "npz:{d}/big.npz"], "--dataset npz:{d}/big.npz: its images are 1x28x28 but the dreams are 1x8x8"),
])
def test_a_wrong_input_is_one_line_naming_the_flag_and_exit_2(run, tmp_path, capsys, argv, says):
    _write_wrong_inputs(tmp_path)
    values = {"d": str(tmp_path), "run": str(run.run_dir), "model": str(run.run_dir / "models/node-0.pt")}
    code, out, err = _cli([a.format(**values) for a in argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"codream {argv[0]}: error: ")
    assert says.format(**values) in err
    assert "Traceback" not in err
    assert not (tmp_path / "n.pt").exists()


def test_the_readmes_walk_through_really_works(run, capsys):
    """The Python snippet in README.md's 'What a run leaves behind', run on this run's directory."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## What a run leaves behind", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "codream.load_model(" in snippet and "runs/main/" in snippet
    exec(compile(snippet.replace("runs/main/", f"{run.run_dir}/"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "cnn (1, 8, 8) 10 node-0 1"
    assert printed[2] == "torch.Size([8, 10])"
