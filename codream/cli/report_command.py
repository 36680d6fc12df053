"""`codream report RUN_DIR`: writes RUN_DIR/report.html again from the directory's files.

The page is a pure function of what a run wrote (`codream.html_report`), so an older run, one
whose report was deleted or one written before the report learnt something new can be
reported again without running anything. A comparison's directory (`codream compare --out`)
gets its comparison page.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from codream.cli.parsing import add_command
from codream.comparison_table import COMPARISON_JSON
from codream.config import ConfigError
from codream.html_report import METRICS, write_report

WHAT_TO_GIVE = "give the --out of a simulate, cluster, coordinator or compare run"


def run_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"RUN_DIR {run_dir}: no such directory; {WHAT_TO_GIVE}")
    if not (run_dir / METRICS).is_file() and not (run_dir / COMPARISON_JSON).is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: not a run directory (no {METRICS} or "
                          f"{COMPARISON_JSON} in it); {WHAT_TO_GIVE}")
    try:
        path = write_report(run_dir)
    except ValueError as error:  # a metrics file that is no JSON object
        raise ConfigError(f"RUN_DIR {run_dir}: cannot read its run files: {error}") from None
    except OSError as error:
        raise ConfigError(f"RUN_DIR {run_dir}: cannot write its report.html: {error}") from None
    print(path)
    return 0


def add_report_command(commands: Any) -> argparse.ArgumentParser:
    parser = add_command(commands, "report", "write a run directory's report.html again from its files")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a run directory (the --out of simulate, cluster, coordinator or "
                             "compare)")
    parser.set_defaults(func=run_report)
    return parser
