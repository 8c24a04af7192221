"""The typed schema of ``summary.json`` (format `SUMMARY_FORMAT`): written by `harness.evaluate`,
checked there before it is written and again by the leaderboard when it is read.

Each `Field` names a key (``provenance.sandbox`` for a nested one), the JSON types it may hold
and whether it may be null. The metric keys come from the one metric registry
(`harness.metric_registry.METRICS`): a number, or null when it could not be computed.
`problems` lists what is wrong with a summary; an empty list means it has the shape below.
The meaning of the counts (``n_failed`` = rows not ``ok``, ``coverage``, ``complete``) is
checked against ``per_molecule.csv`` by the leaderboard (`harness.leaderboard.collect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import HarnessError
from harness.metric_registry import METRICS

#: Version of the summary.json layout (2: statuses, coverage, scoring-code and settings hashes,
#: sandbox and limits, csv_sha256). A reader refuses a newer one; an older one is stale.
SUMMARY_FORMAT = 2

_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class Field:
    key: str  # dotted path
    types: tuple[str, ...]  # names in _TYPES
    nullable: bool = False

    def check(self, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else f"{self.key!r} is null"
        for t in self.types:
            py = _TYPES[t]
            if isinstance(value, bool) and t != "bool":
                continue
            if isinstance(value, py):
                return None
        return f"{self.key!r} is {type(value).__name__} {value!r:.40}, expected {' or '.join(self.types)}" + \
            (" or null" if self.nullable else "")


FIELDS: tuple[Field, ...] = (
    Field("summary_format", ("int",)),
    Field("submission", ("str",)),
    Field("split", ("str",)),
    Field("protocol_version", ("int",)),
    Field("subset", ("list",), nullable=True),
    *(Field(m.key, ("float",), nullable=True) for m in METRICS),
    Field("n_split", ("int",)),
    Field("n_molecules", ("int",)),
    Field("n_failed", ("int",)),
    Field("n_not_converged", ("int",)),
    Field("status_counts", ("dict",)),
    Field("coverage", ("float",)),
    Field("complete", ("bool",)),
    Field("excitations_complete", ("bool",), nullable=True),
    Field("failed_molecules", ("list",)),
    Field("model_scf_iterations_mean", ("float",), nullable=True),
    Field("model_scf_iterations_max", ("int",), nullable=True),
    Field("csv_sha256", ("str",)),
    Field("provenance", ("dict",)),
    Field("provenance.scoring_sha256", ("str",)),
    Field("provenance.evaluation_settings", ("dict",)),
    Field("provenance.settings_sha256", ("str",)),
    Field("provenance.sandbox", ("str",)),
    Field("provenance.limits", ("dict",)),
    Field("provenance.limits.timeout_s", ("float",)),
    Field("provenance.limits.memory_gb", ("float",), nullable=True),
    Field("provenance.reference", ("dict",)),
    Field("provenance.reference.manifest_sha256", ("str",)),
    Field("provenance.submission", ("dict",)),
    Field("provenance.submission.sha256", ("dict",)),
    Field("wall_s", ("dict",)),
    Field("wall_s.molecules_sum", ("float",)),
)

#: Values ``provenance.sandbox`` may take.
SANDBOXES = ("bwrap", "none")

_ABSENT = object()


def get(summary: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted ``key``, or `_ABSENT`."""
    cur: Any = summary
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _ABSENT
        cur = cur[part]
    return cur


def missing(summary: Mapping[str, Any]) -> list[str]:
    """The schema keys absent from ``summary``."""
    return [f.key for f in FIELDS if get(summary, f.key) is _ABSENT]


def problems(summary: Mapping[str, Any]) -> list[str]:
    """Everything wrong with ``summary``'s shape: missing keys, wrong types, bad values."""
    gone = missing(summary)
    out = [f"missing key(s) {', '.join(gone)}"] if gone else []
    for f in FIELDS:
        v = get(summary, f.key)
        if v is not _ABSENT and (msg := f.check(v)):
            out.append(msg)
    sandbox = get(summary, "provenance.sandbox")
    if sandbox is not _ABSENT and sandbox not in SANDBOXES:
        out.append(f"'provenance.sandbox' is {sandbox!r}, expected one of {', '.join(SANDBOXES)}")
    return out


def check(summary: Mapping[str, Any]) -> None:
    """Raise `HarnessError` listing the problems (the writer's own check: a bug if it fires)."""
    found = problems(summary)
    if found:
        raise HarnessError("summary.json does not match its schema: " + "; ".join(found))


__all__ = ["FIELDS", "Field", "SANDBOXES", "SUMMARY_FORMAT", "check", "get", "missing", "problems"]
