"""index.html and its SVG charts: one self-contained page (inline CSS, JS and SVG; no network).

The page, its style sheet, its sorting script and the chart frames are asset files in
``harness/leaderboard/assets/`` (``page.html``, ``style.css``, ``table.js``,
``bar_chart.svg``, ``scatter.svg``, ``empty_chart.svg``), `string.Template` texts read with
`importlib.resources` and filled here; the rows, bars, ticks and points are generated.

Each split's table has two ``<tbody>``: the ranked (complete) results, then the partial ones
(``class="partial"``). ``table.js`` sorts each body on its own, so no sort puts a partial
result above a ranked one. The bar charts list the entries in board order (partial ones last,
labelled ``k/n``); the accuracy-vs-cost scatter shows ranked entries only.
"""

from __future__ import annotations

import functools
import math
from html import escape
from importlib import resources
from string import Template
from typing import Mapping, Sequence

from harness import metric_registry as registry
from harness.leaderboard.collect import Entry, ReferenceInfo, Refusal
from harness.leaderboard.columns import (
    MISSING,
    chart_label,
    chart_value,
    cell,
    format_value,
    intro,
    legend_lines,
    metric_columns,
    sort_value,
    split_notes,
    table_columns,
)

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
            "#ff9da7", "#9c755f", "#bab0ac")

#: Asset files of the page, in ``harness/leaderboard/assets/``.
ASSETS = ("page.html", "style.css", "table.js", "bar_chart.svg", "scatter.svg", "empty_chart.svg")


@functools.lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of ``assets/<name>`` (UTF-8), without its final newline for the templates."""
    text = resources.files("harness.leaderboard").joinpath("assets", name).read_text(encoding="utf-8")
    return text[:-1] if name.endswith((".svg", ".html")) and text.endswith("\n") else text


def _template(name: str) -> Template:
    return Template(asset(name))


def _t(text: str) -> str:
    return escape(text, quote=True)


# ------------------------------------------------------------------------------------------
# SVG plots
# ------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """Coordinates with two decimals, no trailing zeros (short, deterministic SVG)."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t < hi - 1e-9 * step:
        ticks.append(t)
        t = start + len(ticks) * step
    ticks.append(t)
    return [0.0 if abs(v) < step * 1e-9 else float(f"{v:.12g}") for v in ticks]


def _tick_label(v: float, ticks: Sequence[float]) -> str:
    span = max(abs(t) for t in ticks) if ticks else 0
    if span and (span >= 1e5 or span < 1e-3):
        return f"{v:.1e}"
    return f"{v:.6g}"


def bar_chart_svg(title: str, labels: Sequence[str], values: Sequence[float | None], spec: str,
                  colors: Sequence[str]) -> str:
    """A horizontal bar chart as an inline ``<svg>``; a None value is drawn as `MISSING`."""
    row_h, top, left, right, width = 24, 34, 130, 80, 560
    height = top + row_h * max(1, len(labels)) + 28
    plot_w = width - left - right
    nums = [v for v in values if v is not None]
    lo, hi = (min(0.0, *nums), max(0.0, *nums)) if nums else (0.0, 1.0)
    ticks = nice_ticks(lo, hi if hi > lo else lo + 1.0)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    parts = []
    axis_y = top + row_h * max(1, len(labels))
    for tv in ticks:
        tx = _num(x(tv))
        parts.append(f'<line x1="{tx}" y1="{top - 6}" x2="{tx}" y2="{axis_y}" class="grid"/>')
        parts.append(f'<text x="{tx}" y="{axis_y + 16}" class="tick" text-anchor="middle">'
                     f'{_t(_tick_label(tv, ticks))}</text>')
    if not nums:
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{top + 14}" class="na" text-anchor="middle">'
                     f'no values ({MISSING})</text>')
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * row_h
        short = label if len(label) <= 18 else label[:17] + "\u2026"
        parts.append(f'<text x="{left - 8}" y="{_num(y + row_h * 0.65)}" class="lab" text-anchor="end">'
                     f'<title>{_t(label)}</title>{_t(short)}</text>')
        if v is None:
            if nums:
                parts.append(f'<text x="{_num(x(0.0) + 4)}" y="{_num(y + row_h * 0.65)}" class="val">{MISSING}</text>')
            continue
        x0, x1 = sorted((x(0.0), x(v)))
        parts.append(f'<rect x="{_num(x0)}" y="{_num(y + 4)}" width="{_num(max(x1 - x0, 0.5))}" '
                     f'height="{row_h - 8}" fill="{colors[i % len(colors)]}">'
                     f'<title>{_t(label)}: {_t(format_value(v, spec))}</title></rect>')
        parts.append(f'<text x="{_num(x1 + 4)}" y="{_num(y + row_h * 0.65)}" class="val">'
                     f'{_t(format_value(v, spec))}</text>')
    return _template("bar_chart.svg").substitute(
        width=width, height=height, left=left, title=_t(title), body="\n".join(parts),
        zero_x=_num(x(0.0)), axis_top=top - 6, axis_bottom=axis_y)


def scatter_svg(title: str, points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str,
                colors: Sequence[str], xspec: str = ".1f", yspec: str = ".3f") -> str:
    """A labelled scatter plot ``(label, x, y)`` as an inline ``<svg>``; the tooltips show
    ``x`` and ``y`` with ``xspec`` / ``yspec`` and the unit in brackets of the axis labels."""
    width, height, left, right, top, bottom = 560, 380, 70, 70, 48, 50
    pw, ph = width - left - right, height - top - bottom
    if not points:
        return _template("empty_chart.svg").substitute(
            width=width, height=height, left=left, title=_t(title), x=f"{left + pw / 2:.0f}",
            y=f"{top + ph / 2:.0f}", message="no entry has both values")
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    xt = nice_ticks(min(0.0, *xs), max(xs) if max(xs) > min(0.0, *xs) else 1.0)
    yt = nice_ticks(min(0.0, *ys), max(ys) if max(ys) > min(0.0, *ys) else 1.0)

    def sx(v: float) -> float:
        return left + (v - xt[0]) / (xt[-1] - xt[0]) * pw

    def sy(v: float) -> float:
        return top + ph - (v - yt[0]) / (yt[-1] - yt[0]) * ph

    def unit(label: str) -> str:
        return label[label.rfind("(") + 1:-1] if label.endswith(")") and "(" in label else ""

    grid = []
    for tv in xt:
        grid.append(f'<line x1="{_num(sx(tv))}" y1="{top}" x2="{_num(sx(tv))}" y2="{top + ph}" class="grid"/>')
        grid.append(f'<text x="{_num(sx(tv))}" y="{top + ph + 16}" class="tick" text-anchor="middle">'
                    f'{_t(_tick_label(tv, xt))}</text>')
    for tv in yt:
        grid.append(f'<line x1="{left}" y1="{_num(sy(tv))}" x2="{left + pw}" y2="{_num(sy(tv))}" class="grid"/>')
        grid.append(f'<text x="{left - 6}" y="{_num(sy(tv) + 4)}" class="tick" text-anchor="end">'
                    f'{_t(_tick_label(tv, yt))}</text>')
    pts = []
    xu, yu = unit(xlabel), unit(ylabel)
    for i, (label, xv, yv) in enumerate(points):
        cx, cy = sx(xv), sy(yv)
        tip = f"{label}: {format_value(xv, xspec)} {xu}, {format_value(yv, yspec)} {yu}".replace(" ,", ",").rstrip()
        pts.append(f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="5" fill="{colors[i % len(colors)]}">'
                   f'<title>{_t(tip)}</title></circle>')
        pts.append(f'<text x="{_num(cx + 8)}" y="{_num(cy - 6)}" class="lab">{_t(label)}</text>')
    return _template("scatter.svg").substitute(
        width=width, height=height, left=left, right=left + pw, top=top, bottom=top + ph, title=_t(title),
        grid="\n".join(grid), points="\n".join(pts), xlabel=_t(xlabel), ylabel=_t(ylabel),
        xlabel_x=f"{left + pw / 2:.0f}", xlabel_y=height - 8, ylabel_y=f"{top + ph / 2:.0f}")


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------


def _row(e: Entry, i: int, columns) -> str:
    cells = "".join(
        f'<td class="{"num" if c.numeric else "txt"}" data-value="{_t(sort_value(e, c))}">{_t(cell(e, c))}</td>'
        for c in columns
    )
    return f'<tr data-order="{i}" data-submission="{_t(e.submission)}">{cells}</tr>'


def _html_table(split: str, rows: Sequence[Entry]) -> str:
    columns = table_columns()
    head = "".join(
        f'<th scope="col" data-type="{"num" if c.numeric else "text"}" data-key="{c.key}" '
        f'aria-sort="{"ascending" if c.key == "rank" else "none"}">{_t(c.header)}</th>'
        for c in columns
    )
    ranked = [_row(e, i, columns) for i, e in enumerate(rows) if e.ranked]
    partial = [_row(e, i, columns) for i, e in enumerate(rows) if not e.ranked]
    bodies = '<tbody class="ranked">\n' + "\n".join(ranked) + '\n</tbody>'
    if partial:
        bodies += '\n<tbody class="partial">\n' + "\n".join(partial) + '\n</tbody>'
    return (f'<div class="scroll"><table class="sortable" id="table-{_t(split)}">\n<thead><tr>{head}</tr></thead>\n'
            f'{bodies}\n</table></div>')


def _split_section(split: str, rows: Sequence[Entry], reference: ReferenceInfo) -> str:
    primary = registry.PRIMARY
    n = len(reference.split_keys.get(split, ())) or (rows[0].n_split if rows else 0)
    out = [f'<section id="split-{_t(split)}">', f'<h2>Split <code>{_t(split)}</code> ({n} molecules)</h2>',
           _html_table(split, rows)]
    out += [f'<p class="foot">{_t(note)}</p>' for note in split_notes(rows)]
    labels = [chart_label(e) for e in rows]
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(rows))]
    out += [f'<h3>Metrics, split {_t(split)}</h3>', '<div class="charts">']
    for c in metric_columns():
        note = {"lower": " \u2014 lower is better", "higher": " \u2014 higher is better"}.get(c.better, "")
        out.append(bar_chart_svg(c.header + note, labels, [chart_value(e, c) for e in rows], c.spec, colors))
    out.append('</div>')
    out.append(f'<h3>Accuracy vs cost, split {_t(split)} (ranked results)</h3>')
    keep = [i for i, e in enumerate(rows)
            if e.ranked and e.wall_s is not None and e.metrics.get(primary.key) is not None]
    pts = [(labels[i], rows[i].wall_s, rows[i].metrics[primary.key]) for i in keep]
    out.append(scatter_svg(f"{primary.header} vs eval wall time (s)", pts, "eval wall time (s)", primary.header,
                           [colors[i] for i in keep] or colors, yspec=primary.fmt))
    out.append('</section>')
    return "\n".join(out)


def render_html(ranked: Mapping[str, Sequence[Entry]], refusals: Sequence[Refusal],
                reference: ReferenceInfo) -> str:
    """index.html: one self-contained page (inline CSS, JS and SVG; no network) with a table per
    split sortable by any column, a bar chart per metric and the primary metric vs wall time."""
    if ranked:
        splits = "\n".join(_split_section(split, rows, reference) for split, rows in ranked.items())
    else:
        splits = ('<p>No valid results yet: run <code>harness evaluate submissions/NAME</code>, then '
                  '<code>harness leaderboard publish</code>.</p>')
    if refusals:
        items = [f'<li><code>{_t(r.summary_path)}</code> \u2014 <strong>{_t(r.kind)}</strong>: {_t(r.reason)}</li>'
                 for r in refusals]
        refused = '<ul class="refused">\n' + "\n".join(items) + '\n</ul>'
    else:
        refused = '<p>None.</p>'
    return _template("page.html").substitute(
        css=asset("style.css"), js=asset("table.js"), intro=_t(intro(reference)), missing=MISSING,
        splits=splits, refusals=refused,
        legend="\n".join(f'<li>{_t(line)}</li>' for line in legend_lines(reference)),
    ) + "\n"


__all__ = ["ASSETS", "asset", "bar_chart_svg", "nice_ticks", "render_html", "scatter_svg"]
