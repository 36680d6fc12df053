"""A run's --out: an earlier run is refused unless --force, which deletes what runs write there
and nothing else, so a run directory never mixes two runs; `certs --force` replaces a PKI whole."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from codream.cli import run_directory
from codream.config import ConfigError


def _earlier_codream_run(run_dir):
    run_dir.mkdir(parents=True)
    for name in ("config.toml", "metrics.json", "accuracy.png", "dreams.png", "final_dreams.npy",
                 "checkpoint.pt", "progress.jsonl", ".metrics.json.x1y2.tmp", "dreams.npz"):
        (run_dir / name).write_text("earlier")
    (run_dir / "models").mkdir()
    (run_dir / "models" / "server.pt").write_text("earlier")
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "node-0.log").write_text("earlier")
    (run_dir / "notes.txt").write_text("the user's own file")


def test_a_new_run_refuses_an_earlier_one_unless_forced(tmp_path):
    run_directory.check_new_run(tmp_path / "fresh", force=False)  # nothing there: fine
    run_directory.check_new_run(tmp_path, force=False)  # a folder of other things: fine
    _earlier_codream_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"--out .*run: holds an earlier run \(accuracy\.png, "
                                          r"checkpoint\.pt, .*\); choose a new --out, or add --force"):
        run_directory.check_new_run(tmp_path / "run", force=False)
    run_directory.check_new_run(tmp_path / "run", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        run_directory.check_new_run(tmp_path / "file", force=True)


def test_clearing_deletes_what_runs_write_and_nothing_else(tmp_path):
    run_dir = tmp_path / "run"
    _earlier_codream_run(run_dir)
    run_directory.clear(run_dir)
    assert sorted(os.listdir(run_dir)) == ["notes.txt"]


def test_a_coordinator_resumes_a_checkpoint_but_refuses_outputs_without_one(tmp_path):
    run_dir = tmp_path / "run"
    _earlier_codream_run(run_dir)
    run_directory.check_resumable(run_dir, force=False)  # checkpoint.pt: resume it
    (run_dir / "checkpoint.pt").unlink()
    with pytest.raises(ConfigError, match=r"holds an earlier run's outputs \(.*\) but no checkpoint\.pt "
                                          r"to resume from; .* --force"):
        run_directory.check_resumable(run_dir, force=False)
    run_directory.check_resumable(run_dir, force=True)
    (run_dir / "config.toml").unlink()
    (run_dir / "metrics.json").unlink()
    for name in ("accuracy.png", "dreams.png", "final_dreams.npy", "progress.jsonl", "dreams.npz",
                 "models/server.pt", "models"):
        path = run_dir / name
        path.rmdir() if path.is_dir() else path.unlink()
    run_directory.check_resumable(run_dir, force=False)  # logs of a cluster's launcher: fine


def test_an_unwritable_out_fails_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match=r"--out /proc/x/run: cannot create the run directory"):
        run_directory.create(Path("/proc/x/run"))


def test_simulate_with_force_leaves_none_of_the_earlier_runs_files(tmp_path, monkeypatch, capsys):
    from codream.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    run_dir = tmp_path / "run"
    _earlier_codream_run(run_dir)
    for key in [k for k in os.environ if k.startswith("CODREAM_")]:
        monkeypatch.delenv(key)
    argv = ["simulate", "--strategy", "independent", "--clients", "2", "--rounds", "0",
            "--warmup-epochs", "0", "--partition", "iid", "--models", "mlp", "--device", "cpu",
            "--no-progress", "--out", str(run_dir)]
    try:
        assert main(argv) == 2
        assert "holds an earlier run" in capsys.readouterr().err
        assert (run_dir / "dreams.png").read_text() == "earlier"  # refused: nothing touched
        assert main([*argv, "--force"]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    # Independent writes no dreams: the earlier CoDream run's must not be left beside its metrics.
    assert sorted(os.listdir(run_dir)) == ["accuracy.png", "config.toml", "metrics.json", "models",
                                           "notes.txt", "report.html"]
    assert sorted(os.listdir(run_dir / "models")) == ["node-0.pt", "node-1.pt"]  # this run's only


def test_certs_refuses_an_existing_pki_and_force_replaces_it_whole(tmp_path, capsys):
    from codream.cli.certs_command import main

    pki = tmp_path / "pki"
    assert main(["--out", str(pki), "--nodes", "node-0,node-1,node-2"]) == 0
    before = (pki / "ca.pem").read_bytes()
    assert main(["--out", str(pki), "--nodes", "node-0"]) == 2
    assert "already holds a PKI (13 files); add --force" in capsys.readouterr().err
    assert (pki / "ca.pem").read_bytes() == before
    assert main(["--out", str(pki), "--nodes", "node-0", "--force"]) == 0
    assert sorted(os.listdir(pki)) == ["ca.pem", "identities.toml", "node-0.identity.key", "node-0.key",
                                   "node-0.pem", "server.key", "server.pem"]
    assert (pki / "ca.pem").read_bytes() != before  # a new CA: old node certificates are void
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left behind
    (pki / "notes.txt").write_text("not a certificate")
    assert main(["--out", str(pki), "--nodes", "node-0", "--force"]) == 2
    assert "not a PKI's (notes.txt)" in capsys.readouterr().err
