"""Small inline SVG charts (lines, grouped bars, a heatmap) for the self-contained HTML report.

Hand-written rather than matplotlib: an SVG string costs microseconds where a matplotlib figure
costs a good part of a second on a busy 2-core machine, and every run writes a report. Each
function returns one `<svg>` element with explicit width and height (so it also works as an
`<img>` data URI) and every label escaped, since labels come from the run (node ids, model names).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# matplotlib's tab10, so the report's colours match the PNG plots of the run directory
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
FONT = "font-family='sans-serif' font-size='11'"


@dataclass(frozen=True)
class Series:
    """One line: its label, its (x, y) points (None or NaN y: a gap) and how it is drawn."""

    label: str
    points: Sequence[tuple[float, float | None]]
    color: str = ""
    width: float = 1.5
    dashed: bool = False


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of 10)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def integer_ticks(lo: float, hi: float, count: int = 8) -> list[int]:
    """Whole-number ticks (rounds are whole numbers) between lo and hi, at most about `count`."""
    lo_i, hi_i = math.floor(lo), math.ceil(hi)
    step = max(1, math.ceil((hi_i - lo_i) / max(1, count)))
    return list(range(lo_i, hi_i + 1, step))


def human_bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>",
            f"<title>{escape(title)}</title>",
            f"<rect width='{width}' height='{height}' fill='white'/>",
            f"<text x='{width / 2:.0f}' y='16' text-anchor='middle' {FONT} font-weight='bold'>"
            f"{escape(title)}</text>"]


def _legend(x: float, y: float, entries: Sequence[tuple[str, str, bool]]) -> list[str]:
    out = []
    for i, (label, color, dashed) in enumerate(entries):
        yy = y + 16 * i
        dash = " stroke-dasharray='5,3'" if dashed else ""
        out.append(f"<line x1='{_fmt(x)}' y1='{_fmt(yy)}' x2='{_fmt(x + 18)}' y2='{_fmt(yy)}' "
                   f"stroke='{color}' stroke-width='2.5'{dash}/>")
        out.append(f"<text x='{_fmt(x + 23)}' y='{_fmt(yy + 4)}' {FONT}>{escape(label)}</text>")
    return out


def _axes(left: float, top: float, right: float, bottom: float, x_ticks: Sequence[tuple[float, str]],
          y_ticks: Sequence[tuple[float, str]], x_label: str, y_label: str) -> list[str]:
    out = [f"<rect x='{_fmt(left)}' y='{_fmt(top)}' width='{_fmt(right - left)}' "
           f"height='{_fmt(bottom - top)}' fill='none' stroke='#444'/>"]
    for px, text in x_ticks:
        out.append(f"<line x1='{_fmt(px)}' y1='{_fmt(bottom)}' x2='{_fmt(px)}' y2='{_fmt(bottom + 4)}' "
                   "stroke='#444'/>")
        out.append(f"<text x='{_fmt(px)}' y='{_fmt(bottom + 16)}' text-anchor='middle' {FONT}>"
                   f"{escape(text)}</text>")
    for py, text in y_ticks:
        out.append(f"<line x1='{_fmt(left)}' y1='{_fmt(py)}' x2='{_fmt(right)}' y2='{_fmt(py)}' "
                   "stroke='#ddd'/>")
        out.append(f"<text x='{_fmt(left - 6)}' y='{_fmt(py + 4)}' text-anchor='end' {FONT}>"
                   f"{escape(text)}</text>")
    out.append(f"<text x='{_fmt((left + right) / 2)}' y='{_fmt(bottom + 34)}' text-anchor='middle' "
               f"{FONT}>{escape(x_label)}</text>")
    out.append(f"<text transform='translate(14 {_fmt((top + bottom) / 2)}) rotate(-90)' "
               f"text-anchor='middle' {FONT}>{escape(y_label)}</text>")
    return out


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str, *,
               y_range: tuple[float, float] | None = None, width: int = 680, height: int = 340) -> str:
    """Lines over whole-number x (rounds), a legend on the right; each point has a tooltip."""
    left, top, legend_width = 62.0, 28.0, 190.0
    height = max(height, int(top + 16 * len(series) + 24))  # room for every legend entry
    right, bottom = width - legend_width, height - 46.0
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    if y_range is None:
        y_range = (min(ys), max(ys)) if ys else (0.0, 1.0)
    y_ticks = nice_ticks(*y_range)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    out = _svg_open(width, height, title)
    out += _axes(left, top, right, bottom,
                 [(px(t), str(t)) for t in integer_ticks(x_lo, x_hi) if x_lo <= t <= x_hi],
                 [(py(t), f"{t:g}") for t in y_ticks], x_label, y_label)
    entries = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        entries.append((s.label, color, s.dashed))
        dash = " stroke-dasharray='6,4'" if s.dashed else ""
        runs: list[list[tuple[float, float]]] = [[]]
        for x, y in s.points:
            if y is None or not math.isfinite(y):
                runs.append([])
            else:
                runs[-1].append((x, y))
        for run in (r for r in runs if r):
            path = " ".join(f"{_fmt(px(x))},{_fmt(py(y))}" for x, y in run)
            out.append(f"<polyline points='{path}' fill='none' stroke='{color}' "
                       f"stroke-width='{s.width}'{dash}/>")
            for x, y in run:
                out.append(f"<circle cx='{_fmt(px(x))}' cy='{_fmt(py(y))}' r='2.5' fill='{color}'>"
                           f"<title>{escape(s.label)}, {x:g}: {y:.4g}</title></circle>")
    out += _legend(right + 14, top + 8, entries)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(categories: Sequence[str], groups: Sequence[tuple[str, Sequence[float]]], title: str,
              x_label: str, y_label: str, *, value_format=human_bytes, width: int = 680,
              height: int = 300) -> str:
    """Grouped bars: one group of bars per category (e.g. per round), one bar per named series."""
    left, top, legend_width = 70.0, 28.0, 190.0
    right, bottom = width - legend_width, height - 46.0
    values = [v for _, vs in groups for v in vs]
    y_ticks = nice_ticks(0.0, max(values) if values and max(values) > 0 else 1.0)
    y_hi = y_ticks[-1]
    slot = (right - left) / max(1, len(categories))
    bar = slot * 0.8 / max(1, len(groups))

    def py(y: float) -> float:
        return bottom - y / y_hi * (bottom - top)

    out = _svg_open(width, height, title)
    out += _axes(left, top, right, bottom,
                 [(left + slot * (i + 0.5), c) for i, c in enumerate(categories)],
                 [(py(t), value_format(t)) for t in y_ticks], x_label, y_label)
    entries = []
    for g, (label, vs) in enumerate(groups):
        color = PALETTE[g % len(PALETTE)]
        entries.append((label, color, False))
        for i, v in enumerate(vs):
            x = left + slot * i + slot * 0.1 + bar * g
            out.append(f"<rect x='{_fmt(x)}' y='{_fmt(py(v))}' width='{_fmt(bar)}' "
                       f"height='{_fmt(bottom - py(v))}' fill='{color}'>"
                       f"<title>{escape(label)}, {escape(categories[i])}: {escape(value_format(v))}"
                       "</title></rect>")
    out += _legend(right + 14, top + 8, entries)
    out.append("</svg>")
    return "\n".join(out)


def heatmap(row_labels: Sequence[str], column_labels: Sequence[str], values: Sequence[Sequence[float]],
            title: str, x_label: str, cell: int = 34) -> str:
    """A table of counts shaded by size (e.g. samples per client and class), numbers in the cells."""
    left, top = 150.0, 30.0
    width = int(left + cell * len(column_labels) + 20)
    height = int(top + cell * len(row_labels) + 44)
    peak = max((v for row in values for v in row), default=0) or 1
    out = _svg_open(width, height, title)
    for j, label in enumerate(column_labels):
        out.append(f"<text x='{_fmt(left + cell * (j + 0.5))}' y='{_fmt(top + cell * len(row_labels) + 16)}' "
                   f"text-anchor='middle' {FONT}>{escape(label)}</text>")
    out.append(f"<text x='{_fmt(left + cell * len(column_labels) / 2)}' "
               f"y='{_fmt(top + cell * len(row_labels) + 34)}' text-anchor='middle' {FONT}>"
               f"{escape(x_label)}</text>")
    for i, label in enumerate(row_labels):
        y = top + cell * i
        out.append(f"<text x='{_fmt(left - 6)}' y='{_fmt(y + cell / 2 + 4)}' text-anchor='end' {FONT}>"
                   f"{escape(label)}</text>")
        for j, v in enumerate(values[i]):
            share = v / peak
            shade = int(255 - 200 * share)
            ink = "white" if share > 0.6 else "black"
            out.append(f"<rect x='{_fmt(left + cell * j)}' y='{_fmt(y)}' width='{cell}' height='{cell}' "
                       f"fill='rgb({shade},{shade},255)' stroke='white'>"
                       f"<title>{escape(label)}, {escape(column_labels[j])}: {v:g}</title></rect>")
            out.append(f"<text x='{_fmt(left + cell * (j + 0.5))}' y='{_fmt(y + cell / 2 + 4)}' "
                       f"text-anchor='middle' fill='{ink}' font-family='sans-serif' font-size='10'>"
                       f"{v:g}</text>")
    out.append("</svg>")
    return "\n".join(out)
