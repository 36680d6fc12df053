"""`codream report RUN_DIR`: report.html written again from a run directory's files alone; a
directory that is not a run's is one line naming RUN_DIR and what to give, exit 2."""

from __future__ import annotations

import pytest
from test_html_report import _run_dir

from codream.cli import main
from codream.html_report import run_page


def _report(argv, capsys):
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_it_writes_the_report_again_from_the_runs_files(tmp_path, capsys):
    run = _run_dir(tmp_path)
    (run / "report.html").write_text("an old page")
    expected = run_page(run)  # the page a run writes for these files (its file list included)
    code, out, err = _report([str(run)], capsys)
    assert (code, out, err) == (0, f"{run / 'report.html'}\n", "")
    page = (run / "report.html").read_text()
    assert page == expected
    assert "<figure id='fig-accuracy'>" in page and "server model (dreams only)" in page


def test_it_writes_a_report_a_run_never_had(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert not (run / "report.html").exists()
    assert _report([str(run)], capsys)[0] == 0
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("make, says", [
    (lambda d: d / "missing", "RUN_DIR {d}/missing: no such directory; give the --out of a "
                              "simulate, cluster, coordinator or compare run"),
    (lambda d: d, "RUN_DIR {d}: not a run directory (no metrics.json or comparison.json in it); "
                  "give the --out of"),
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt", "RUN_DIR {d}/file.txt: no such "
                                                                    "directory"),
    (lambda d: (d / "metrics.json").write_text("[1, 2]") and d, "RUN_DIR {d}: cannot read its run "
                                                                "files: {d}/metrics.json: expected a "
                                                                "JSON object"),
    (lambda d: (d / "metrics.json").write_text("{not json") and d, "RUN_DIR {d}: cannot read its "
                                                                   "run files: Expecting"),
])
def test_a_directory_that_is_not_a_runs_is_one_line_exit_2(tmp_path, capsys, make, says):
    target = make(tmp_path)
    code, out, err = _report([str(target)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("codream report: error: "), err
    assert says.format(d=tmp_path) in err, err
    assert not (tmp_path / "report.html").exists()
