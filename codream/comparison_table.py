"""The comparison's table: one row per strategy, read from its sub-run's metrics.json.

Its own module so that `codream compare` (which writes the table) and the HTML report (which
shows it) read the same columns, and the report need not import the code that runs strategies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"

# (key in a row, markdown heading, how a value is shown)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("strategy", "strategy", "text"),
    ("final_mean_client_accuracy", "mean client accuracy", "accuracy"),
    ("final_std_client_accuracy", "std", "accuracy"),
    ("final_server_accuracy", "server model accuracy", "accuracy"),
    ("bytes_per_client_per_round", "bytes per client per round (up + down)", "bytes"),
    ("wall_seconds", "wall seconds", "seconds"),
)


def row_from_metrics(strategy: str, run_dir: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy's row from its metrics.json payload; a value the run lacks is None."""
    summary = metrics.get("summary", {})
    sent = summary.get("bytes_sent_per_client_per_round")
    received = summary.get("bytes_received_per_client_per_round")
    rounds = metrics.get("rounds", [])
    return {
        "strategy": strategy,
        "run_dir": run_dir,
        "final_mean_client_accuracy": summary.get("final_mean_client_accuracy"),
        "final_std_client_accuracy": summary.get("final_std_client_accuracy"),
        "final_server_accuracy": summary.get("final_server_accuracy"),
        "bytes_sent_per_client_per_round": sent,
        "bytes_received_per_client_per_round": received,
        "bytes_per_client_per_round": None if sent is None or received is None else sent + received,
        "wall_seconds": summary.get("wall_seconds"),
        "rounds": [m.get("round") for m in rounds],
        "mean_client_accuracy": [m.get("mean_client_accuracy") for m in rounds],
    }


def format_value(value: Any, kind: str) -> str:
    """A cell as the table shows it; a missing or NaN value is an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "accuracy":
        return f"{float(value):.4f}"
    if kind == "bytes":
        return f"{float(value):,.0f}"
    if kind == "seconds":
        return f"{float(value):.1f}"
    return str(value)


def table_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headings, one list of cells per row), the same for markdown and HTML."""
    headings = [heading for _, heading, _ in COLUMNS]
    return headings, [[format_value(row.get(key), kind) for key, _, kind in COLUMNS] for row in rows]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headings, cells = table_cells(rows)
    lines = ["| " + " | ".join(headings) + " |", "|" + "|".join("---" for _ in headings) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"
