"""What the CLI shows: every flag's default and unit in --help, one-line parser errors, the
progress bar's total for each strategy in simulate and cluster, integer round ticks."""

from __future__ import annotations

import argparse
import os

import pytest

from codream.cli import make_parser
from codream.cli.progress import progress_total
from codream.config import RunConfig

COMMANDS = ("simulate", "coordinator", "node", "cluster", "certs", "evaluate", "predict", "distill",
            "report")


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_default_and_explains_every_flag(name):
    parser = _subparser(name)
    text = parser.format_help()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if shown:
            assert "default" in parser._get_formatter()._get_help_string(action), action.option_strings
    assert "(default: None)" not in text


def test_help_gives_units_and_the_run_configs_defaults():
    coordinator = " ".join(_subparser("coordinator").format_help().split())
    assert "--task-timeout SECONDS seconds a node may take for one task" in coordinator
    assert "(default: 900.0)" in coordinator and "in MiB" in coordinator
    simulate = " ".join(_subparser("simulate").format_help().split())
    assert f"--clients K number of clients K (default: {RunConfig().clients})" in simulate
    assert "--threads N torch threads in every process of the run" in simulate
    assert "--force" in simulate


def test_a_parser_error_is_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exited:
        make_parser().parse_args(["simulate", "--clients", "many"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == ("codream simulate: error: argument --clients: invalid int value: 'many' "
                   "(see codream simulate --help)\n")


def test_log_level_is_case_insensitive_and_checked():
    assert make_parser().parse_args(["--log-level", "info", "simulate"]).log_level == "INFO"
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--log-level", "LOUD", "simulate"])


@pytest.mark.parametrize("strategy, total", [("codream", 3), ("fedavg", 2), ("independent", 3),
                                             ("centralized", 3)])
def test_progress_total_for_two_rounds(strategy, total):
    assert progress_total(RunConfig(strategy=strategy, rounds=2)) == total


class _BarMade(Exception):
    pass


@pytest.mark.parametrize("command", ["simulate", "cluster"])
@pytest.mark.parametrize("strategy, total", [("codream", 3), ("fedavg", 2)])
def test_simulate_and_cluster_bars_count_the_strategys_rounds(command, strategy, total, monkeypatch,
                                                              tmp_path):
    import importlib

    module = importlib.import_module(f"codream.cli.{command}_command")
    made = {}

    def bar(**kwargs):
        made.update(kwargs)
        raise _BarMade  # stop before anything trains or a process starts

    monkeypatch.setattr(module, "tqdm", bar)
    monkeypatch.setattr(module.preflight, "check_run", lambda config: None)
    for key in [k for k in os.environ if k.startswith("CODREAM_")]:
        monkeypatch.delenv(key)
    args = make_parser().parse_args([command, "--strategy", strategy, "--rounds", "2",
                                     "--out", str(tmp_path / "run"), "--no-progress"])
    with pytest.raises(_BarMade):
        args.func(args)
    assert made["total"] == total


def test_the_accuracy_plot_has_whole_round_ticks():
    from codream.report import accuracy_figure

    history = [{"round": r, "mean_client_accuracy": 0.5 + r / 10,
                "clients": {"node-0": {"accuracy": 0.5}}} for r in range(3)]
    figure = accuracy_figure(history, "t")
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
