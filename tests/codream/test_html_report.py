"""report.html as a pure function of a run directory: what it shows, that it needs nothing from
outside (no script, stylesheet or address), that every string from the run is escaped, and that
every simulate run writes one. The browser test (test_report_browser.py) renders it for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from codream.config import RunConfig, build, dotted, merge
from codream.html_report import write_report
from codream.run_outputs import RUN_FILES
from codream.simulation import simulate
from codream.svg_charts import integer_ticks, nice_ticks

HOSTILE = "<script>alert('x')</script>&\"'"
TINY = {
    "dataset": "digits", "clients": 2, "rounds": 1, "warmup_epochs": 0, "local_epochs": 0,
    "partition": "iid", "models": ["mlp"], "device": "cpu", "seed": 3,
    "dream": {"batch_size": 8, "global_steps": 2},
    "server_model": {"steps": 5, "batch_size": 8},
    "distill": {"dream_batch_size": 8, "buffer_batches": 1, "epochs": 1},
    "train": {"batch_size": 64},
}


def _run_dir(tmp_path: Path, node: str = "node-0", model: str = "cnn") -> Path:
    """A run directory as a run writes it, by hand: two rounds, two clients, a server model."""
    rounds = [{"round": r, "mean_client_accuracy": 0.5 + r / 10, "seconds": 1.0,
               "clients": {node: {"accuracy": 0.5 + r / 10, "loss": 1.0},
                           "node-1": {"accuracy": 0.5 + r / 10, "loss": 1.0}},
               "bytes": {node: {"sent": 100 * r, "received": 200 * r},
                         "node-1": {"sent": 100 * r, "received": 200 * r}},
               "server_accuracy": 0.3 + r / 10} for r in range(2)]
    summary = {"strategy": "codream", "dataset": "digits", "models": {node: model, "node-1": "mlp"},
               "class_histogram": [[5, 0, 3], [0, 7, 1]], "final_mean_client_accuracy": 0.6,
               "final_server_accuracy": 0.4, "wall_seconds": 2.0}
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": {"clients": 2}, "rounds": rounds,
                                                  "summary": summary}))
    (run / "config.toml").write_text(f'strategy = "codream"\nout = "{HOSTILE}"\n')
    return run


def test_the_report_shows_each_part_of_a_run(tmp_path):
    page = write_report(_run_dir(tmp_path)).read_text()
    for figure in ("fig-accuracy", "fig-histogram", "fig-bytes"):
        assert f"<figure id='{figure}'>" in page
    assert "server model (dreams only)" in page and "client mean" in page
    assert "no dream grid in this run" in page  # none was written
    assert page.count("<polyline") == 4  # two clients, their mean, the server model
    assert ">7</text>" in page  # a histogram count
    assert "<li><a href='metrics.json'>metrics.json</a>" in page


def test_the_report_is_self_contained(tmp_path):
    run = _run_dir(tmp_path)
    (run / "dreams.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = write_report(run).read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "src='data:image/png;base64," in page
    addresses = set(re.findall(r"https?://[^\s'\"<>]+", page))
    assert addresses == {"http://www.w3.org/2000/svg"}  # the SVG namespace: a name, never fetched


def test_every_string_from_the_run_is_escaped(tmp_path):
    page = write_report(_run_dir(tmp_path, node=HOSTILE, model=HOSTILE)).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;&#x27;" in page


def test_a_directory_without_metrics_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        write_report(tmp_path)


def test_every_simulate_run_writes_its_report(tmp_path):
    assert "report.html" in RUN_FILES  # so --force clears it with the rest
    config = build(RunConfig, merge(TINY, dotted({"out": str(tmp_path / "run"), "strategy": "fedavg"})))
    simulate(config, tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<title>CoDream run: fedavg on digits</title>" in page
    assert "no dream grid in this run" in page
    assert "<figure id='fig-accuracy'>" in page and "<figure id='fig-histogram'>" in page


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (0.07, 0.93), (0.0, 143952.0), (5.0, 5.0)])
def test_ticks_cover_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12


def test_round_ticks_are_whole_numbers():
    assert integer_ticks(0, 3) == [0, 1, 2, 3]
    assert all(isinstance(t, int) for t in integer_ticks(0, 50))
    assert len(integer_ticks(0, 50)) <= 9
