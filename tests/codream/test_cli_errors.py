"""A new user's mistakes, each run as its own `codream` process: one line on stderr naming the
flag, field or variable and what is allowed, exit status 2, no traceback, and nothing trained
or written.

Interpreter and torch start-up cost ~3 s of CPU a process, too much for ~35 cases on a 2-core
machine, so a launcher process imports the CLI once and forks one child per case, which runs
`codream.cli` as `python -m codream.cli` does (runpy, as __main__) with the case's argv and
environment; `test_the_launcher_agrees_with_python_dash_m` checks it against a real
`python -m codream.cli`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

REPOSITORY = Path(__file__).resolve().parents[2]
QUICK_EXIT = ["--join-timeout", "1", "--port", "0", "--health-port", "0", "--no-metrics"]


@dataclass(frozen=True)
class Case:
    argv: list[str]  # after `python -m codream.cli`; {d} is the case's scratch directory
    says: tuple[str, ...]  # every phrase must be in the one line
    env: dict[str, str] = field(default_factory=dict)
    never: tuple[str, ...] = ()  # phrases that must not reach the user
    prepare: Callable[[Path], None] | None = None  # files the case needs in its directory
    untouched: str | None = "run"  # a path under {d} the failed run must not have created
    code: int = 2
    lines: int | None = 1  # stderr lines (None: any, e.g. a traceback)


def _npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda d: np.savez(d / "data.npz", **arrays)


def _images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size), dtype=np.float32)


def _earlier_run(d: Path) -> None:
    (d / "run").mkdir()
    (d / "run" / "config.toml").write_text("rounds = 1\n")
    (d / "run" / "metrics.json").write_text("{}")


def _checkpoint_of_seed_5(d: Path) -> None:
    from codream.config import RunConfig
    from coordinator.checkpoint import config_fingerprint, save_checkpoint

    class Finished:
        def state_dict(self):
            return {"strategy": "codream", "next_round": 1, "history": []}

    save_checkpoint(d / "run" / "checkpoint.pt", Finished(),
                    config_fingerprint(RunConfig(seed=5, out=str(d / "run"))))


def _pki(d: Path) -> None:
    (d / "pki").mkdir()
    for name in ("ca.pem", "server.pem", "server.key"):
        (d / "pki" / name).write_text("x")


def _a_file(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text("not a certificate")


SIMULATE = ["simulate", "--no-progress", "--out", "{d}/run"]
COORDINATOR = ["coordinator", *QUICK_EXIT, "--out", "{d}/run"]
NODE = ["node", "--node-id", "node-0", "--coordinator", "127.0.0.1:1", "--health-port", "0",
        "--no-metrics"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

CASES = {
    "unknown data set": Case(
        [*SIMULATE, "--dataset", "cifar"],
        ("codream simulate: error: --dataset: unknown data set spec 'cifar'; allowed: digits, mnist",)),
    "negative Dirichlet alpha": Case(
        [*SIMULATE, "--partition", "dirichlet:-1"],
        ("--partition: must be 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, got 'dirichlet:-1'",)),
    "more clients than the data set can give min_client_size": Case(
        [*SIMULATE, "--clients", "500"],
        ("--clients: cannot give each of 500 clients min_client_size=10 training samples: digits has "
         "1437", "use fewer clients or a smaller --set min_client_size=N")),
    "more clients per round than clients": Case(
        [*SIMULATE, "--clients-per-round", "9"],
        ("codream simulate: error: --clients-per-round: a count must be a whole number <= clients "
         "(4), got 9.0",)),
    "a sampled round below colluding_nodes + 2": Case(
        [*SIMULATE, "--clients-per-round", "0.5", "--set", "secagg.colluding_nodes=1"],
        ("min_clients: must be >= secagg.colluding_nodes + 2 = 3 while sampling", "got 2",
         "--set min_clients=3")),
    "an unknown masking graph": Case(
        [*SIMULATE, "--set", "secagg.graph=sparse"],
        ("--set secagg.graph: must be 'auto', 'complete' or 'secagg+', got 'sparse'",)),
    "unknown model": Case(
        [*SIMULATE, "--models", "cnn,resnet99"],
        ("--models: unknown model 'resnet99'; registered: cnn, mlp, resnet8, vgg, wide_cnn",)),
    "cuda without a GPU": Case(
        [*SIMULATE, "--device", "cuda"],
        ("--device: cuda was asked for but CUDA is not available on this machine; use auto or cpu",)),
    "npz: no such file": Case(
        [*SIMULATE, "--dataset", "npz:{d}/missing.npz"], ("--dataset: npz data set", "does not exist")),
    "npz: a text file renamed .npz": Case(
        [*SIMULATE, "--dataset", "npz:{d}/data.npz"],
        ("--dataset: npz data set", "is not a NumPy .npz archive; write one with numpy.savez"),
        never=("allow_pickle", "pickle"), prepare=_a_file("data.npz")),
    "npz: no array x": Case(
        [*SIMULATE, "--dataset", "npz:{d}/data.npz"], ("--dataset:", "lacks array 'x' (images)"),
        prepare=_npz(y=np.arange(100) % 2)),
    "npz: no array y": Case(
        [*SIMULATE, "--dataset", "npz:{d}/data.npz"], ("--dataset:", "lacks array 'y' (integer labels)"),
        prepare=_npz(x=_images(100, 8))),
    "npz: 3x3 images too small for a model": Case(
        [*SIMULATE, "--dataset", "npz:{d}/data.npz", "--models", "cnn,vgg"],
        ("--models: vgg cannot take the 1x3x3 images of npz:", "use larger images or another model"),
        prepare=_npz(x=_images(100, 3), y=np.arange(100) % 2)),
    "npz: 3x3 images too small for the server model": Case(
        [*SIMULATE, "--dataset", "npz:{d}/data.npz", "--models", "mlp",
         "--set", "server_model.model=wide_cnn"],
        ("--set server_model.model: wide_cnn cannot take the 1x3x3 images",),
        prepare=_npz(x=_images(100, 3), y=np.arange(100) % 2)),
    "npz: labels not integers": Case(
        [*SIMULATE, "--dataset", "npz:{d}/data.npz"],
        ("--dataset:", "'y' labels must be integers, got values such as 0.5"),
        prepare=_npz(x=_images(100, 8), y=np.arange(100) * 0.5)),
    "unknown log level": Case(
        ["--log-level", "LOUD", "simulate"],
        ("codream: error: argument --log-level: invalid choice: 'LOUD' (choose from", "'INFO'")),
    "certs where nothing can be written": Case(
        ["certs", "--out", "/proc/x", "--nodes", "node-0"],
        ("codream certs: error: --out /proc/x: cannot write there",)),
    "certs: a reserved node id": Case(
        ["certs", "--out", "{d}/pki", "--nodes", "ca"], ("codream certs: error: --nodes: 'ca' must",)),
    "certs over an existing PKI": Case(
        ["certs", "--out", "{d}/pki", "--nodes", "node-0"],
        ("--out", "already holds a PKI (3 files); add --force to replace it whole"),
        prepare=_pki, untouched=None),
    "coordinator: TLS files missing": Case(
        [*COORDINATOR, "--tls-cert", "{d}/server.pem", "--tls-key", "{d}/server.key"],
        ("codream coordinator: error: --tls-cert: no such file",)),
    "coordinator: a certificate without its key": Case(
        [*COORDINATOR, "--tls-cert", "{d}/server.pem"],
        ("--tls-cert/--tls-key: give both",), never=("ServerSecurity", "cert_file"),
        prepare=_a_file("server.pem")),
    "coordinator: mTLS without a certificate": Case(
        [*COORDINATOR, "--tls-client-ca", "{d}/ca.pem"],
        ("--tls-client-ca: mTLS needs --tls-cert and --tls-key too",), prepare=_a_file("ca.pem")),
    "coordinator: a roster of the wrong length": Case(
        [*COORDINATOR, "--node-ids", "a,b,c"],
        ("--node-ids: names 3 nodes but the run has 4 clients",), never=("node_ids",)),
    "coordinator: another run's checkpoint": Case(
        [*COORDINATOR, "--seed", "6"],
        ("--out", "written under another run config (seed: 5 in the checkpoint, 6 now)", "--force"),
        prepare=_checkpoint_of_seed_5, untouched=None),
    "coordinator: outputs without a checkpoint": Case(
        COORDINATOR, ("holds an earlier run's outputs (config.toml, metrics.json) but no "
                      "checkpoint.pt", "--force"), prepare=_earlier_run, untouched=None),
    "node: TLS files missing": Case(
        [*NODE, "--tls-ca", "{d}/ca.pem"], ("codream node: error: --tls-ca: no such file",)),
    "node: a certificate without its key": Case(
        [*NODE, "--tls-ca", "{d}/ca.pem", "--tls-cert", "{d}/ca.pem"],
        ("codream node: error:", "--tls-key", "--tls-cert"), never=("ChannelSecurity", "key_file"),
        prepare=_a_file("ca.pem")),
    "node: its own npz data set is checked before it joins": Case(
        [*NODE, "--dataset", "npz:{d}/data.npz"], ("codream node: error: --dataset:", "lacks array 'y'"),
        prepare=_npz(x=_images(100, 8))),
    "the node's token variable is not run configuration (simulate)": Case(
        [*SIMULATE, "--dataset", "cifar"], ("error: --dataset: unknown data set",),
        env={"CODREAM_NODE_TOKEN": "s3cret"}, never=("node_token", "s3cret")),
    "the node's token variable is not run configuration (coordinator)": Case(
        [*COORDINATOR, "--tls-cert", "{d}/missing.pem", "--tls-key", "{d}/missing.key"],
        ("error: --tls-cert: no such file",), env={"CODREAM_NODE_TOKEN": "s3cret"},
        never=("node_token", "s3cret")),
    "a bad value from the environment says so": Case(
        SIMULATE, ("codream simulate: error: CODREAM_DREAM__GLOBAL_STEPS (environment): must be >= 1",),
        env={"CODREAM_DREAM__GLOBAL_STEPS": "0"}),
    "a reused --out": Case(
        SIMULATE, ("--out", "holds an earlier run (config.toml, metrics.json); choose a new --out, "
                   "or add --force"), prepare=_earlier_run, untouched=None),
    "a reused --out of a cluster": Case(
        ["cluster", "--no-progress", "--out", "{d}/run"], ("holds an earlier run", "--force"),
        prepare=_earlier_run, untouched=None),
    "secure aggregation with one client (simulate)": Case(
        [*SIMULATE, "--clients", "1"],
        ("--clients: secure aggregation", "needs at least 2 clients", "got 1",
         "add clients or --set secagg.enabled=false")),
    "secure aggregation with one client (coordinator)": Case(
        [*COORDINATOR, "--clients", "1"], ("--clients: secure aggregation", "--set secagg.enabled=false")),
    "secure aggregation with one client (cluster)": Case(
        ["cluster", "--nodes", "1", "--no-progress", "--out", "{d}/run"],
        ("codream cluster: error: --nodes: secure aggregation", "--set secagg.enabled=false")),
    "cluster: --clients beside --nodes": Case(
        ["cluster", "--clients", "3", "--nodes", "4", "--no-progress", "--out", "{d}/run"],
        ("--clients: a cluster has one client per node process: give --nodes only",)),
    "cluster: cuda nodes without a GPU": Case(
        ["cluster", "--node-device", "cuda", "--no-progress", "--out", "{d}/run"],
        ("--node-device: cuda was asked for but CUDA is not available",)),
    "--debug shows the traceback": Case(
        ["--debug", *SIMULATE, "--dataset", "cifar"],
        ("Traceback", "codream simulate: error: --dataset: unknown data set"), lines=None),
}
CASES["node requiring authentication without an identity"] = Case(
    [*NODE, "--secagg-authentication", "required"],
    ("codream node: error: --secagg-authentication required: this node has no identity",))
CASES["coordinator requiring authentication without identities"] = Case(
    [*COORDINATOR, "--set", "secagg.authentication=required"],
    ('codream coordinator: error: secagg.authentication = "required": the coordinator has no '
     "identity keys", "--identities"))
CASES["an unknown authentication mode"] = Case(
    [*SIMULATE, "--set", "secagg.authentication=sometimes"],
    ("secagg.authentication", "must be 'auto', 'required' or 'off', got 'sometimes'"))
CASES["--version"] = Case(["--version"], (), code=0, lines=0)  # checked on its own below
NEEDS_NO_CUDA = {"cuda without a GPU", "cluster: cuda nodes without a GPU"}


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str
    stdout: str
    directory: Path


# Runs each case of cases.json in a forked child, at most two at a time; writes codes.json.
LAUNCHER = r"""
import json, os, runpy, sys, traceback
import codream.cli  # the expensive part (torch), once; nothing computes before the forks
cases = json.load(open(sys.argv[1]))

def child(case):
    code = 1
    try:
        os.environ.clear()
        os.environ.update(case["env"])
        err = os.open(case["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.dup2(os.open(case["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        sys.argv = ["codream", *case["argv"]]
        runpy.run_module("codream.cli", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

codes, running, waiting = {}, {}, list(enumerate(cases))
while waiting or running:
    while waiting and len(running) < 2:
        index, case = waiting.pop(0)
        pid = os.fork()
        if pid == 0:
            child(case)
        running[pid] = index
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
json.dump([codes[i] for i in range(len(cases))], open(sys.argv[2], "w"))
"""


def _environment(extra: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODREAM_")}
    return {**environ, **extra}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("cli-errors")
    jobs = []
    for index, case in enumerate(CASES.values()):
        directory = root / f"case-{index}"
        directory.mkdir()
        if case.prepare is not None:
            case.prepare(directory)
        jobs.append({"argv": [part.replace("{d}", str(directory)) for part in case.argv],
                     "env": _environment(case.env), "stderr": str(directory / "stderr.txt"),
                     "stdout": str(directory / "stdout.txt")})
    (root / "cases.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, "-c", LAUNCHER, str(root / "cases.json"), str(root / "codes.json")],
                   cwd=REPOSITORY, check=True, timeout=300)
    codes = json.loads((root / "codes.json").read_text())
    return {name: Outcome(code, Path(job["stderr"]).read_text(), Path(job["stdout"]).read_text(),
                          Path(job["stderr"]).parent)
            for name, code, job in zip(CASES, codes, jobs, strict=True)}


@pytest.mark.parametrize("name", [pytest.param(n, marks=NO_CUDA) if n in NEEDS_NO_CUDA else n
                                  for n in CASES if n != "--version"])
def test_a_user_error_is_one_line_naming_what_to_change(outcomes, name):
    case, outcome = CASES[name], outcomes[name]
    err = outcome.stderr
    assert outcome.code == case.code, err
    if case.lines is not None:
        assert len(err.splitlines()) == case.lines, err
        assert "Traceback" not in err
    for phrase in case.says:
        assert phrase in err, (phrase, err)
    for phrase in case.never:
        assert phrase not in err, (phrase, err)
    if case.untouched is not None:
        assert not (outcome.directory / case.untouched).exists(), "a failed start wrote its --out"


def test_version_comes_from_the_package_metadata(outcomes):
    from importlib.metadata import version

    outcome = outcomes["--version"]
    assert (outcome.code, outcome.stderr) == (0, "")
    assert outcome.stdout.strip() == f"codream {version('codream')}"


def test_the_launcher_agrees_with_python_dash_m(outcomes, tmp_path):
    name = "negative Dirichlet alpha"
    argv = [part.replace("{d}", str(tmp_path)) for part in CASES[name].argv]
    done = subprocess.run([sys.executable, "-m", "codream.cli", *argv], cwd=REPOSITORY,
                          env=_environment({}), capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (outcomes[name].code, outcomes[name].stderr)
