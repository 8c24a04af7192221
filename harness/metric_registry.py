"""The metric registry: every aggregate metric of PROTOCOL §3, defined once.

Each `Metric` says which per-molecule column it aggregates, how (``aggregation``), its title,
unit, number format and which direction is better. `aggregate` turns per-molecule rows into
the summary's metric values; the summary schema, the printed report, ``leaderboard.csv``, the
leaderboard tables and charts and `harness.reproduction` all read their columns from
`METRICS` (registry pattern as in lm-evaluation-harness: a metric is registered with its
aggregation and its direction).

Aggregation rules (statuses: `harness.status`):

* metrics of the ``scf`` stage (1–5) average over the molecules that have them (status ``ok``
  or ``excitations_failed``); if such a molecule lacks the value, the aggregate is None
  (a missing number is never silently dropped from a mean);
* metrics of the ``excitations`` stage average over the molecules with status ``ok`` that
  have excitation energies (geometries without reference excitations have none);
* ``fraction`` metrics count over every molecule scored.

Whether the result covers the split is the summary's ``coverage`` / ``complete`` (see
`harness.pipeline.summarize`); a mean over part of a split does not rank (docs/protocol.md).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness.errors import HarnessError
from harness.status import Status, parse_status

AGGREGATIONS = ("mean", "mean_abs", "pooled_ratio", "fraction_ok")


@dataclass(frozen=True)
class Metric:
    """One aggregate metric.

    ``key``: the summary key (unit in the name); ``column``: the per-molecule column it
    aggregates (``pooled_ratio``: a "numerator/denominator" pair of columns); ``title`` and
    ``unit`` for people; ``fmt`` a format spec; ``better`` ``lower`` or ``higher``;
    ``stage`` ``scf`` (metrics 1–5, 7) or ``excitations`` (metric 6); ``leaderboard``: shown as
    a leaderboard column with a chart; ``primary``: the metric the leaderboard ranks by.
    """

    key: str
    column: str
    title: str
    unit: str
    fmt: str
    better: str
    aggregation: str
    stage: str = "scf"
    leaderboard: bool = True
    primary: bool = False
    protocol: str = ""  # the PROTOCOL §3 metric number

    @property
    def header(self) -> str:
        return f"{self.title} ({self.unit})" if self.unit else self.title

    def format(self, value: Any) -> str:
        if value is None:
            return "-"
        try:
            return format(value, self.fmt)
        except (TypeError, ValueError):
            return str(value)

    def sort_key(self, value: float | None) -> tuple[bool, float]:
        """Ascending sort key, best first; None last."""
        if value is None:
            return (True, 0.0)
        return (False, value if self.better == "lower" else -value)


METRICS: tuple[Metric, ...] = (
    Metric("energy_mae_mEh", "energy_error_mEh", "total-energy MAE", "mEh", ".3f", "lower", "mean_abs",
           primary=True, protocol="1"),
    Metric("e_rho_mean_mEh", "e_rho_mEh", "E_\u03c1 mean", "mEh", ".4f", "lower", "mean", protocol="2"),
    Metric("dipole_mae_debye", "dipole_error_debye", "dipole MAE", "D", ".4f", "lower", "mean", protocol="3"),
    Metric("density_l2_mean", "density_l2", "L2 density error mean", "a.u.", ".3e", "lower", "mean",
           protocol="4"),
    Metric("scf_iter_reduction_mean", "scf_iter_reduction", "SCF-iteration reduction", "", ".3f", "higher",
           "mean", protocol="5"),
    Metric("scf_iter_ratio_pooled", "scf_cycles_model_start/scf_cycles_minao", "SCF-iteration ratio pooled", "",
           ".3f", "lower", "pooled_ratio", leaderboard=False, protocol="5"),
    Metric("excitation_mae_eV", "excitation_mae_eV", "excitation MAE", "eV", ".3f", "lower", "mean",
           stage="excitations", protocol="6"),
    Metric("converged_fraction", "status", "converged fraction", "", ".3f", "higher", "fraction_ok",
           leaderboard=False, protocol="7"),
)

BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
PRIMARY: Metric = next(m for m in METRICS if m.primary)
LEADERBOARD_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.leaderboard)


def get_metric(key: str) -> Metric:
    """The metric registered as ``key``; an unknown key gets a "did you mean" error."""
    try:
        return BY_KEY[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(BY_KEY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise HarnessError(f"unknown metric {key!r}{hint} (known: {', '.join(BY_KEY)})") from None


def _number(row: Mapping[str, Any], column: str) -> float | None:
    v = row.get(column)
    if v is None or v == "":
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _aggregate_one(m: Metric, rows: list[Mapping[str, Any]], statuses: list[Status]) -> float | None:
    if m.aggregation == "fraction_ok":
        return (sum(s is Status.OK or s is Status.EXCITATIONS_FAILED for s in statuses) / len(rows)) if rows else None
    if m.stage == "excitations":
        vals = [_number(r, m.column) for r, s in zip(rows, statuses) if s is Status.OK]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None
    covered = [r for r, s in zip(rows, statuses) if s.has_metrics]
    if m.aggregation == "pooled_ratio":
        num, den = m.column.split("/")
        pairs = [(_number(r, num), _number(r, den)) for r in covered]
        if not pairs or any(a is None or b is None for a, b in pairs):
            return None
        total = sum(b for _, b in pairs)
        return sum(a for a, _ in pairs) / total if total > 0 else None
    vals = [_number(r, m.column) for r in covered]
    if not vals or any(v is None for v in vals):
        return None
    if m.aggregation == "mean_abs":
        vals = [abs(v) for v in vals]
    return sum(vals) / len(vals)


def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Every registered metric over per-molecule rows (rules in the module docstring)."""
    rows = list(rows)
    statuses = [parse_status(r.get("status"), f"row {r.get('key')!r}") for r in rows]
    return {m.key: _aggregate_one(m, rows, statuses) for m in METRICS}


__all__ = ["AGGREGATIONS", "BY_KEY", "LEADERBOARD_METRICS", "METRICS", "Metric", "PRIMARY", "aggregate",
           "get_metric"]
