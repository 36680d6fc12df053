"""`codream compare`: several strategies on one configuration, side by side.

Each strategy runs in process as `codream simulate` would, into its own sub-run directory
`<out>/<strategy>/` (its own metrics, plots and report.html). Then one table
(`comparison.json`, `comparison.md`), one overlaid accuracy plot (`comparison.png`) and the
comparison's `report.html` are built from the sub-runs' files alone, so `write_comparison` can
rebuild them from the directory without running anything again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from codream.atomic_files import atomic_write_text
from codream.comparison_table import (
    COMPARISON_JSON,
    COMPARISON_MD,
    COMPARISON_PNG,
    markdown_table,
    row_from_metrics,
)
from codream.config import RunConfig
from codream.html_report import REPORT, write_report
from codream.simulation import simulate

# Every file `write_comparison` writes into the comparison's own directory (the sub-runs
# hold a run's files each).
COMPARISON_FILES = (COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG, REPORT)


def compare(configs: Mapping[str, RunConfig], out_dir: Path,
            on_round: Callable[[str, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Runs every strategy's config (keyed by strategy name, each with its own `out`), one after
    the other, then writes the comparison; returns its rows in the order given."""
    for strategy, config in configs.items():
        def report(metrics: dict[str, Any], strategy: str = strategy) -> None:
            if on_round is not None:
                on_round(strategy, metrics)

        simulate(config, Path(config.out), on_round=report)
    return write_comparison(out_dir, {s: Path(c.out) for s, c in configs.items()})


def write_comparison(out_dir: Path, run_dirs: Mapping[str, Path]) -> list[dict[str, Any]]:
    """The table, plot and report of `out_dir` from each strategy's finished sub-run."""
    out_dir = Path(out_dir)
    rows = []
    for strategy, run_dir in run_dirs.items():
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        rows.append(row_from_metrics(strategy, _relative(Path(run_dir), out_dir), metrics))
    payload = {"strategies": list(run_dirs), "rows": rows}
    atomic_write_text(out_dir / COMPARISON_JSON, json.dumps(payload, indent=2, default=float))
    atomic_write_text(out_dir / COMPARISON_MD, markdown_table(rows))
    write_comparison_plot(out_dir / COMPARISON_PNG, rows)
    write_report(out_dir)
    return rows


def write_comparison_plot(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers or CI
    import matplotlib.pyplot as plt

    figure = comparison_figure(rows)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def comparison_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Mean client test accuracy per round, one line per strategy, whole-number round ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        accuracies = [math.nan if a is None else a for a in row.get("mean_client_accuracy", [])]
        ax.plot(row.get("rounds", []), accuracies, marker="o", markersize=3, linewidth=2,
                label=str(row.get("strategy")))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_ylim(0, 1)
    ax.set_xlabel("round")
    ax.set_ylabel("mean client test accuracy")
    ax.set_title("strategies compared")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _relative(run_dir: Path, out_dir: Path) -> str:
    """The sub-run's path as the report links it: relative to the comparison when inside it."""
    try:
        return run_dir.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return str(run_dir)
