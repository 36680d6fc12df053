"""report.html: one self-contained page per run directory, built from that directory's files alone.

A pure function of what a run wrote (`metrics.json`, `config.toml`, `dreams*.png`, and for a
comparison `comparison.json` and each strategy's sub-run), so `simulate`, a cluster and
`codream compare` get the same page and an old run directory can be reported again. The page
needs nothing else: charts are inline SVG, the dream grids base64 PNG data URIs, the style
inline, no script and no network. Every string taken from the run (node ids, model names,
file names, the config) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from codream.atomic_files import atomic_write_text
from codream.comparison_table import COMPARISON_JSON, COMPARISON_PNG, table_cells
from codream.svg_charts import Series, bar_chart, heatmap, human_bytes, line_chart

REPORT = "report.html"
METRICS = "metrics.json"
CONFIG = "config.toml"

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-size: 0.9em; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #555; }
figure img { image-rendering: pixelated; max-width: 100%; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-style: italic; }
"""


def write_report(run_dir: Path) -> Path:
    """Writes `run_dir/report.html` (a run's page, or a comparison's when it holds
    comparison.json and no metrics.json) and returns its path."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS).is_file():
        page = run_page(run_dir)
    elif (run_dir / COMPARISON_JSON).is_file():
        page = comparison_page(run_dir)
    else:
        raise FileNotFoundError(f"{run_dir}: neither {METRICS} nor {COMPARISON_JSON}: not a run directory")
    path = run_dir / REPORT
    atomic_write_text(path, page)
    return path


# ---- one run ------------------------------------------------------------------------------
def run_page(run_dir: Path) -> str:
    metrics = _read_json(run_dir / METRICS)
    rounds: list[dict[str, Any]] = metrics.get("rounds", [])
    summary: dict[str, Any] = metrics.get("summary", {})
    config: dict[str, Any] = metrics.get("config", {})
    title = (f"{summary.get('strategy', config.get('strategy', 'run'))} on "
             f"{summary.get('dataset', config.get('dataset', '?'))}")
    body = [f"<h1>CoDream run: {escape(title)}</h1>",
            _section("Summary", _summary_table(summary, config, rounds)),
            _section("Accuracy per round", _accuracy_figure(rounds, title)
                     + _rounds_table(rounds)),
            _section("Clients", _clients_table(summary, rounds)),
            _section("Dreams", _dream_figures(run_dir, "")),
            _section("Class histogram per client", _histogram_figure(summary)),
            _section("Bytes per round", _bytes_figure(rounds)),
            _section("Configuration", _config_block(run_dir, config)),
            _section("Files", _file_list(run_dir))]
    return _page(f"CoDream run: {title}", body)


def accuracy_series(rounds: Sequence[Mapping[str, Any]]) -> list[Series]:
    """Each client thin, their mean bold, and every other per-round accuracy (the server model,
    any baseline a strategy reports as `<name>_accuracy`) dashed."""
    def line(label: str, value: Any, **style: Any) -> Series:
        return Series(label, [(float(m.get("round", i)), _accuracy(value(m)))
                              for i, m in enumerate(rounds)], **style)

    clients = list(dict.fromkeys(c for m in rounds for c in m.get("clients", {})))
    series = [line(client, lambda m, c=client: m.get("clients", {}).get(c, {}).get("accuracy"), width=1.0)
              for client in clients]
    series.append(line("client mean", lambda m: m.get("mean_client_accuracy"), color="#000", width=2.5))
    extra = sorted({k for m in rounds for k, v in m.items()
                    if k.endswith("_accuracy") and k != "mean_client_accuracy"
                    and isinstance(v, (int, float))})
    for i, key in enumerate(extra):
        label = "server model (dreams only)" if key == "server_accuracy" else key[:-len("_accuracy")]
        series.append(line(label, lambda m, k=key: m.get(k), color=("#d62728", "#9467bd", "#8c564b")[i % 3],
                           width=2.0, dashed=True))
    return series


def _accuracy_figure(rounds: Sequence[Mapping[str, Any]], title: str) -> str:
    if not rounds:
        return _note("no rounds were recorded")
    chart = line_chart(accuracy_series(rounds), f"test accuracy: {title}", "round", "test accuracy",
                       y_range=(0.0, 1.0))
    return _figure("fig-accuracy", chart, "Test accuracy of every client, their mean and, when "
                   "present, the server model trained on dreams only.")


def _rounds_table(rounds: Sequence[Mapping[str, Any]]) -> str:
    if not rounds:
        return ""
    server = any("server_accuracy" in m for m in rounds)
    headings = ["round", "mean client accuracy"] + (["server model"] if server else []) + [
        "bytes up", "bytes down", "seconds"]
    rows = []
    for m in rounds:
        traffic = m.get("bytes", {})
        row = [str(m.get("round", "")), _acc(m.get("mean_client_accuracy"))]
        if server:
            row.append(_acc(m.get("server_accuracy")))
        row += [human_bytes(sum(b.get("sent", 0) for b in traffic.values())),
                human_bytes(sum(b.get("received", 0) for b in traffic.values())),
                f"{m.get('seconds', math.nan):.2f}"]
        rows.append(row)
    return _table(headings, rows)


def _summary_table(summary: Mapping[str, Any], config: Mapping[str, Any],
                   rounds: Sequence[Mapping[str, Any]]) -> str:
    rows = [("strategy", summary.get("strategy", config.get("strategy"))),
            ("data set", summary.get("dataset", config.get("dataset"))),
            ("clients", config.get("clients")),
            ("partition", config.get("partition")),
            ("rounds", f"{rounds[0].get('round')} to {rounds[-1].get('round')}" if rounds else None),
            ("final mean client accuracy", _acc(summary.get("final_mean_client_accuracy"))),
            ("final std of client accuracy", _acc(summary.get("final_std_client_accuracy"))),
            ("final server model accuracy", _acc(summary.get("final_server_accuracy"))
             if "final_server_accuracy" in summary else None),
            ("bytes sent per client per round", _bytes(summary.get("bytes_sent_per_client_per_round"))),
            ("bytes received per client per round",
             _bytes(summary.get("bytes_received_per_client_per_round"))),
            ("secure aggregation", summary.get("secure_aggregation")),
            ("label skew", _number(summary.get("label_skew"))),
            ("device", summary.get("device", config.get("device"))),
            ("wall seconds", _number(summary.get("wall_seconds"), ".1f"))]
    return _table(["", "value"], [[name, str(value)] for name, value in rows if value is not None])


def _clients_table(summary: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]]) -> str:
    final = rounds[-1].get("clients", {}) if rounds else {}
    models: Mapping[str, str] = summary.get("models", {})
    histogram = summary.get("class_histogram", [])
    # the partition's order (client index), which metrics.json keeps; node-10 sorts before node-2
    names = list(models) + sorted(set(final) - set(models))
    if not names:
        return _note("no clients were recorded")
    rows = []
    for i, name in enumerate(names):
        samples = sum(histogram[i]) if name in models and i < len(histogram) else None
        rows.append([name, models.get(name, "—"), "—" if samples is None else str(samples),
                     _acc(final.get(name, {}).get("accuracy")), _number(final.get(name, {}).get("loss"))])
    return _table(["client", "model", "training samples", "final accuracy", "final loss"], rows)


def _dream_figures(run_dir: Path, link_prefix: str) -> str:
    grids = sorted(run_dir.glob("dreams*.png"))
    if not grids:
        return _note("no dream grid in this run (only CoDream dreams)")
    return "".join(_figure(f"fig-{_slug(link_prefix + path.stem)}", _png_img(path, f"dreams: {path.name}"),
                           f"{link_prefix}{path.name}: the final dreams in pixel space, titled with "
                           "the server model's label when there is one.") for path in grids)


def _histogram_figure(summary: Mapping[str, Any]) -> str:
    histogram = summary.get("class_histogram")
    if not histogram:
        return _note("no partition: the strategy trains on pooled data")
    models: Mapping[str, str] = summary.get("models", {})
    names = list(models) if len(models) == len(histogram) else [f"client {i}" for i in range(len(histogram))]
    labels = [f"{name} ({models[name]})" if name in models else name for name in names]
    chart = heatmap(labels, [str(c) for c in range(len(histogram[0]))], histogram,
                    "training samples per client and class", "class")
    return _figure("fig-histogram", chart, "How the partition spread the classes over the clients.")


def round_bytes(metrics: Mapping[str, Any]) -> int:
    """Payload bytes of one round, up and down, over all clients (0 for a warm-up round)."""
    return sum(b.get("sent", 0) + b.get("received", 0) for b in metrics.get("bytes", {}).values())


def _bytes_figure(rounds: Sequence[Mapping[str, Any]]) -> str:
    with_traffic = [m for m in rounds if round_bytes(m) > 0]  # not a warm-up's 0 bytes
    if not with_traffic:
        return _note("no traffic: this strategy exchanges nothing")
    categories = [str(m.get("round")) for m in with_traffic]
    up = [float(sum(b.get("sent", 0) for b in m["bytes"].values())) for m in with_traffic]
    down = [float(sum(b.get("received", 0) for b in m["bytes"].values())) for m in with_traffic]
    chart = bar_chart(categories, [("up (sent by the clients)", up), ("down (received)", down)],
                      "bytes per round, all clients", "round", "bytes")
    return _figure("fig-bytes", chart, "Traffic between the coordinator and all clients each round.")


def _config_block(run_dir: Path, config: Mapping[str, Any]) -> str:
    path = run_dir / CONFIG
    text = path.read_text() if path.is_file() else json.dumps(config, indent=2, default=str)
    return f"<pre id='config'>{escape(text)}</pre>"


def _file_list(run_dir: Path) -> str:
    items = []
    for path in sorted(run_dir.iterdir()):
        if path.name.startswith("."):
            continue  # atomic writes' temporaries
        name = path.name + ("/" if path.is_dir() else "")
        size = "" if path.is_dir() else f" ({human_bytes(path.stat().st_size)})"
        items.append(f"<li><a href='{escape(quote(name))}'>{escape(name)}</a>{escape(size)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


# ---- a comparison -------------------------------------------------------------------------
def comparison_page(out_dir: Path) -> str:
    comparison = _read_json(out_dir / COMPARISON_JSON)
    rows: list[dict[str, Any]] = comparison.get("rows", [])
    headings, cells = table_cells(rows)
    for row, line in zip(rows, cells, strict=True):
        report = Path(str(row.get("run_dir", row.get("strategy", "")))) / REPORT
        if (out_dir / report).is_file():
            line[0] = f"<a href='{escape(quote(report.as_posix()))}'>{escape(line[0])}</a>"
        else:
            line[0] = escape(line[0])
    table = _table(headings, cells, escaped_first=True)
    series = [Series(str(row.get("strategy")),
                     [(float(x), _accuracy(y)) for x, y in zip(row.get("rounds", []),
                                                               row.get("mean_client_accuracy", []),
                                                               strict=False)],
                     width=2.0) for row in rows]
    chart = line_chart(series, "mean client accuracy per strategy", "round", "mean client accuracy",
                       y_range=(0.0, 1.0))
    figures = _figure("fig-comparison", chart, "Mean client test accuracy per round, one line per strategy.")
    if (out_dir / COMPARISON_PNG).is_file():
        figures += _figure("fig-comparison-png", _png_img(out_dir / COMPARISON_PNG, "comparison plot"),
                           f"{COMPARISON_PNG}, the same curves as written for papers and slides.")
    dreams = "".join(_dream_figures(out_dir / str(row.get("run_dir")), f"{row.get('run_dir')}/")
                     for row in rows if list((out_dir / str(row.get("run_dir"))).glob("dreams*.png")))
    first = next((out_dir / str(row.get("run_dir")) for row in rows
                  if (out_dir / str(row.get("run_dir")) / CONFIG).is_file()), None)
    config = (_config_block(first, {}) if first is not None
              else f"<pre id='config'>{escape(json.dumps(comparison.get('config', {}), indent=2))}</pre>")
    names = ", ".join(str(row.get("strategy")) for row in rows)
    body = [f"<h1>CoDream comparison: {escape(names)}</h1>",
            _section("Results", table + _note("Each strategy's name links to its own run report.")),
            _section("Mean client accuracy per round", figures),
            _section("Dreams", dreams or _note("no strategy here dreams")),
            _section("Class histogram per client", _histogram_figure(_partition_summary(out_dir, rows))),
            _section("Configuration", _note("the same for every strategy but strategy and out; shown: "
                                            f"{first.name if first else 'no'} sub-run's config.toml")
                     + config),
            _section("Files", _file_list(out_dir))]
    return _page(f"CoDream comparison: {names}", body)


def _partition_summary(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The first federated sub-run's summary: every strategy draws the same partition from one
    config, so its class histogram is the comparison's."""
    for row in rows:
        path = out_dir / str(row.get("run_dir")) / METRICS
        if path.is_file():
            summary = _read_json(path).get("summary", {})
            if summary.get("class_histogram"):
                return summary
    return {}


# ---- HTML pieces --------------------------------------------------------------------------
def _page(title: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _section(title: str, content: str) -> str:
    return f"<section id='{_slug(title)}'>\n<h2>{escape(title)}</h2>\n{content}\n</section>"


def _figure(figure_id: str, content: str, caption: str) -> str:
    return (f"<figure id='{escape(figure_id)}'>\n{content}\n"
            f"<figcaption>{escape(caption)}</figcaption>\n</figure>")


def _png_img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{escape(alt)}'>"


def _table(headings: Sequence[str], rows: Sequence[Sequence[str]], escaped_first: bool = False) -> str:
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headings) + "</tr>"
    body = "".join("<tr>" + "".join(
        f"<td>{cell if (escaped_first and j == 0) else escape(cell)}</td>" for j, cell in enumerate(row))
        + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _note(text: str) -> str:
    return f"<p class='note'>{escape(text)}</p>"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _accuracy(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _acc(value: Any) -> str:
    return _number(value, ".4f")


def _bytes(value: Any) -> str:
    return human_bytes(float(value)) if isinstance(value, (int, float)) else "—"


def _number(value: Any, spec: str = ".4g") -> str:
    return format(float(value), spec) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else "—"
