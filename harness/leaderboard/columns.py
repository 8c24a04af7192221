"""The leaderboard's columns, cell texts, footnotes and legend, shared by Markdown and HTML.

The metric columns are built from `harness.metric_registry.LEADERBOARD_METRICS` each time
(`table_columns`), so a metric registered there appears in every table, the CSV and the
charts with its title, unit, format and direction. Cell rules:

* ``rank``: the rank of a complete result, `UNRANKED` for a partial one;
* ``coverage``: ``"k/n molecules"`` (metrics 1–5 present / molecules in the split);
* excitation-stage metrics: `NOT_RUN` when excitations were not run
  (``excitations_complete`` null), the value with `PARTIAL_MARK` when they were run but not
  complete (a footnote says over how many molecules), else the value;
* a missing value is `MISSING`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from harness import metric_registry as registry
from harness.leaderboard.collect import Entry, ReferenceInfo
from harness.metric_registry import Metric

#: Shown for a missing value (None / absent key) in README.md and index.html.
MISSING = "\u2014"  # em dash
#: Marks a submission whose training data declared ``saw_test_molecules: true``.
DAGGER = "\u2020"
#: Marks a submission that declared ``saw_test_molecules: unknown``.
DOUBLE_DAGGER = "\u2021"
#: Marks an excitation value over part of the molecules (``excitations_complete`` false).
PARTIAL_MARK = "*"
#: The excitation cell of a result that did not run excitations.
NOT_RUN = "not run"
#: The rank cell of a partial result.
UNRANKED = "unranked"


@dataclass(frozen=True)
class Column:
    """A leaderboard column: ``key`` (a metric key or an `Entry` field), title, unit, number
    format; ``metric`` the registry entry of a metric column."""

    key: str
    title: str
    unit: str
    spec: str  # format spec for numbers; "" for text
    numeric: bool
    better: str = ""  # "lower" | "higher" | "" (not a score)
    metric: Metric | None = None

    @property
    def header(self) -> str:
        return f"{self.title} ({self.unit})" if self.unit else self.title

    @property
    def csv_name(self) -> str:
        return {"wall_s": "eval_wall_s"}.get(self.key, self.key)


def metric_columns() -> tuple[Column, ...]:
    """Score columns, each with a bar chart: `harness.metric_registry.LEADERBOARD_METRICS`."""
    return tuple(Column(m.key, m.title, m.unit, m.fmt, True, m.better, m) for m in registry.LEADERBOARD_METRICS)


def table_columns() -> tuple[Column, ...]:
    """Every column of the tables, in order."""
    return (
        Column("rank", "rank", "", "d", True),
        Column("submission", "submission", "", "", False),
        Column("framework", "framework", "", "", False),
        *metric_columns(),
        Column("n_failed", "failed", "", "d", True, "lower"),
        Column("coverage", "coverage", "", "", True, "higher"),
        Column("sandbox", "sandbox", "", "", False),
        Column("wall_s", "eval wall time", "s", ".1f", True, "lower"),
    )


def format_value(value: Any, spec: str) -> str:
    """A cell's text: `MISSING` for None, else ``format(value, spec)``."""
    if value is None:
        return MISSING
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    return str(value)


def display_name(e: Entry) -> str:
    """The submission name with its contamination mark (`DAGGER`, `DOUBLE_DAGGER`)."""
    if e.saw_test_molecules is None:
        return f"{e.submission} {DOUBLE_DAGGER}"
    return f"{e.submission} {DAGGER}" if e.saw_test_molecules else e.submission


def coverage_text(e: Entry) -> str:
    return f"{e.n_covered}/{e.n_split} molecules"


def _is_excitation(col: Column) -> bool:
    return col.metric is not None and col.metric.stage == "excitations"


def cell(e: Entry, col: Column) -> str:
    """The text of one table cell (rules in the module docstring)."""
    if col.key == "rank":
        return str(e.rank) if e.ranked else UNRANKED
    if col.key == "submission":
        return display_name(e)
    if col.key == "coverage":
        return coverage_text(e)
    if _is_excitation(col):
        if e.excitations_complete is None:
            return NOT_RUN
        text = format_value(e.value(col.key), col.spec)
        return text if e.excitations_complete else text + PARTIAL_MARK
    return format_value(e.value(col.key), col.spec)


def sort_value(e: Entry, col: Column) -> str:
    """The machine value of a cell for sorting in index.html; "" = no value (sorts last)."""
    if col.key == "coverage":
        return repr(e.coverage)
    if _is_excitation(col) and e.excitations_complete is None:
        return ""
    v = e.value(col.key)
    if v is None:
        return ""
    if col.numeric:
        return repr(float(v)) if isinstance(v, float) else str(v)
    return str(v)


def chart_value(e: Entry, col: Column) -> float | None:
    """A metric column's value for its bar chart; None when missing or not run."""
    if _is_excitation(col) and e.excitations_complete is None:
        return None
    return e.value(col.key)


def chart_label(e: Entry) -> str:
    """A chart's label: the display name, with ``(k/n)`` for a partial result."""
    name = display_name(e)
    return name if e.ranked else f"{name} ({e.n_covered}/{e.n_split})"


def split_notes(rows: Sequence[Entry]) -> list[str]:
    """Footnotes under a split's table: contamination marks, partial excitations, unranked rows."""
    notes = []
    if any(e.saw_test_molecules is True for e in rows):
        notes.append(f"{DAGGER} training data saw test-split molecules (declared in submission.yaml).")
    if any(e.saw_test_molecules is None for e in rows):
        notes.append(f"{DOUBLE_DAGGER} whether the training data contains test-split molecules is unknown "
                     "(declared in submission.yaml).")
    titles = " and ".join(c.title for c in metric_columns() if _is_excitation(c))
    for e in rows:
        if e.excitations_complete is False:
            notes.append(f"{PARTIAL_MARK} {e.submission}: {titles} over {e.n_excitations} of {e.n_split} "
                         "molecules (TDDFT failed or gave no value for the others).")
    partial = [e for e in rows if not e.ranked]
    if partial:
        notes.append(f"{UNRANKED}: partial result{'s' if len(partial) > 1 else ''} "
                     f"({', '.join(f'{e.submission} {e.n_covered}/{e.n_split}' for e in partial)} molecules "
                     "with metrics): listed below the ranked results and never ranked, whatever the numbers.")
    return notes


def legend_lines(reference: ReferenceInfo) -> list[str]:
    primary = registry.PRIMARY
    order = "lowest" if primary.better == "lower" else "highest"
    metrics = "; ".join(f"{m.header}: metric {m.protocol}, {m.better} is better"
                        for m in registry.LEADERBOARD_METRICS)
    return [
        f"Ranked by {primary.header}, {order} first, the primary metric of protocol v{reference.protocol_version}; "
        "a complete result without one ranks last. Only complete results are ranked: the whole split scored "
        "and every molecule with metrics 1\u20135 (status ok or excitations_failed). A failed molecule counts "
        f"against its submission: a partial result is listed below the ranked ones, {UNRANKED}, with its coverage.",
        f"Metrics as defined in docs/protocol.md \u00a73, each a mean over the molecules that have it: {metrics}.",
        "failed: molecules whose status is not ok (left out of the means). coverage: molecules with metrics "
        "1\u20135 / molecules in the split. sandbox: bwrap = the functional ran inside a bubblewrap sandbox, "
        "none = without one. eval wall time: seconds summed over the molecules (summary.json "
        "wall_s.molecules_sum), independent of caching and --workers.",
        f"{MISSING}: no value. {NOT_RUN}: the evaluation did not run excitations. {PARTIAL_MARK}: the excitation "
        "value is over part of the molecules (the note under the table says how many). "
        f"{DAGGER}: the submission declares that its training data saw test-split molecules (submission.yaml "
        f"training_data.saw_test_molecules: true); {DOUBLE_DAGGER}: it declares that this is unknown.",
        "Stale or refused results never enter the tables. Stale: scored under another protocol or reference "
        "set, by other harness scoring code or evaluation settings, or its submission files changed since "
        "(re-run harness evaluate). Refused: the summary is malformed or inconsistent, or its "
        "per_molecule.csv is missing or not the one written with it.",
    ]


def intro(reference: ReferenceInfo) -> str:
    return (f"Reference set {reference.name} v{reference.version} (B3LYP/def2-SVP, manifest sha256 "
            f"{reference.manifest_sha256[:12]}), protocol version {reference.protocol_version}.")


__all__ = [
    "Column", "DAGGER", "DOUBLE_DAGGER", "MISSING", "NOT_RUN", "PARTIAL_MARK", "UNRANKED", "cell", "chart_label",
    "chart_value", "coverage_text", "display_name", "format_value", "intro", "legend_lines", "metric_columns",
    "sort_value", "split_notes", "table_columns",
]
