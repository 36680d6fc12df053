"""`codream compare` end to end: real runs of several strategies on digits, one sub-run each, the
table (comparison.json, comparison.md, the printed table), the overlaid plot and the report;
a mistake in --strategies is one line naming it and the allowed names, exit 2, nothing written."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os

import pytest

from codream.cli import main, make_parser
from codream.comparison import comparison_figure, write_comparison
from codream.strategies import STRATEGIES

pytestmark = pytest.mark.integration

TINY_TOML = """\
dataset = "digits"
clients = 2
rounds = 2
warmup_epochs = 1
local_epochs = 1
partition = "iid"
models = ["mlp"]
device = "cpu"
seed = 3
[dream]
batch_size = 8
global_steps = 2
[server_model]
steps = 5
batch_size = 8
[distill]
dream_batch_size = 8
buffer_batches = 1
epochs = 1
[train]
batch_size = 64
"""
ALLOWED = ", ".join(STRATEGIES)


@pytest.fixture(autouse=True)
def no_codream_environment(monkeypatch):
    for key in [k for k in os.environ if k.startswith("CODREAM_")]:
        monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """One real comparison of three strategies through the CLI, with what it printed."""
    root = tmp_path_factory.mktemp("compare")
    (root / "tiny.toml").write_text(TINY_TOML)
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("CODREAM_")]:
            patch.delenv(key)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["compare", "--config", str(root / "tiny.toml"), "--strategies",
                         "codream,fedavg,independent", "--out", str(out), "--no-progress"])
    return code, out, printed.getvalue(), root


def test_each_strategy_runs_into_its_own_sub_run(comparison):
    code, out, _, _ = comparison
    assert code == 0
    for strategy in ("codream", "fedavg", "independent"):
        metrics = json.loads((out / strategy / "metrics.json").read_text())
        assert metrics["config"]["strategy"] == strategy
        assert metrics["config"]["out"] == str(out / strategy)
        assert metrics["config"]["rounds"] == 2 and metrics["config"]["models"] == ["mlp"]
        assert (out / strategy / "report.html").is_file()
    assert (out / "codream" / "dreams.png").is_file()


def test_the_table_has_one_row_per_strategy(comparison):
    _, out, printed, _ = comparison
    table = json.loads((out / "comparison.json").read_text())
    assert table["strategies"] == ["codream", "fedavg", "independent"]
    rows = {row["strategy"]: row for row in table["rows"]}
    assert rows["codream"]["final_server_accuracy"] is not None
    assert rows["fedavg"]["final_server_accuracy"] is None
    assert rows["independent"]["bytes_per_client_per_round"] == 0
    assert rows["fedavg"]["bytes_per_client_per_round"] > rows["codream"]["bytes_per_client_per_round"] > 0
    assert rows["codream"]["rounds"] == [0, 1, 2] and rows["fedavg"]["rounds"] == [1, 2]
    for row in rows.values():
        assert 0 <= row["final_mean_client_accuracy"] <= 1 and row["wall_seconds"] > 0
        assert row["run_dir"] == row["strategy"]
    markdown = (out / "comparison.md").read_text()
    assert markdown.splitlines()[0].startswith("| strategy | mean client accuracy | std |")
    assert len(markdown.splitlines()) == 5 and markdown in printed
    assert "| fedavg |" in markdown and " — |" in markdown  # fedavg has no server model


def test_the_plot_and_the_report(comparison):
    _, out, _, _ = comparison
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert "<title>CoDream comparison: codream, fedavg, independent</title>" in page
    for strategy in ("codream", "fedavg", "independent"):
        assert f"<a href='{strategy}/report.html'>{strategy}</a>" in page


def test_the_plot_has_whole_round_ticks(comparison):
    _, out, _, _ = comparison
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    figure = comparison_figure(rows)
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["codream", "fedavg", "independent"]


def test_the_comparison_is_rebuilt_from_the_directory_alone(comparison):
    _, out, _, _ = comparison
    before = json.loads((out / "comparison.json").read_text())
    rows = write_comparison(out, {s: out / s for s in before["strategies"]})
    assert json.loads((out / "comparison.json").read_text()) == before
    assert [r["strategy"] for r in rows] == before["strategies"]


def test_a_second_comparison_into_the_same_out_is_refused(comparison, capsys):
    _, out, _, root = comparison
    code = main(["compare", "--config", str(root / "tiny.toml"), "--strategies", "independent",
                 "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"codream compare: error: --out {out}: holds an earlier run (")
    assert "--force" in err and err.count("\n") == 1


@pytest.mark.parametrize("strategies, says", [
    ("codream,fedavgg", f"--strategies: unknown strategy 'fedavgg'; allowed: {ALLOWED}"),
    (",", f"--strategies: name at least one strategy; allowed: {ALLOWED}"),
    ("fedavg,fedavg", "--strategies: fedavg named more than once"),
])
def test_a_wrong_strategies_list_is_one_line_and_exit_2(tmp_path, capsys, strategies, says):
    code = main(["compare", "--strategies", strategies, "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == f"codream compare: error: {says}\n"
    assert not (tmp_path / "out").exists()


def test_a_config_one_strategy_refuses_names_that_strategy(tmp_path, capsys):
    code = main(["compare", "--strategies", "codream,fedavg", "--models", "mlp,cnn",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("codream compare: error: --strategies fedavg: --models: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_help_names_every_default_and_has_no_strategy_flag():
    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    compare = commands.choices["compare"]
    text = " ".join(compare.format_help().split())
    assert "--strategies NAMES" in text and "(default: codream,fedavg,independent)" in text
    assert "--strategy " not in text and "--clients K number of clients K (default:" in text
    for action in compare._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
