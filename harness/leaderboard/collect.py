"""Collect, validate and rank ``results/<name>/<split>/summary.json`` (``summary_format`` 2).

`validate_summary` checks one summary against the *current* repository and returns an `Entry`
or a `Refusal` (one-line reason naming the file). In order:

1. **stale** (re-run ``harness evaluate``) when the protocol version differs from
   `harness.PROTOCOL_VERSION`, the reference manifest sha256 from the pinned bundled one, or
   the summary predates ``summary_format`` 2 (it does not record the scoring code);
2. **refused** when a key is missing or has the wrong type, or the counts disagree with each
   other (``n_split`` = the split's size in the bundled set; ``status_counts`` sum to
   ``n_molecules`` and give ``n_failed``, ``coverage`` and ``complete``);
3. **refused** when ``per_molecule.csv`` beside it is missing, or its sha256 is not the
   summary's ``csv_sha256`` (the CSV and the summary are one unit: a run killed between the
   two writes leaves a pair that does not match), or its ``key`` column is not the molecules
   scored;
4. **stale** when the files of ``submissions/<name>`` changed (`harness.submission.
   submission_sha256`), the harness's scoring code changed (`harness.provenance.
   scoring_sha256`), or the evaluation settings changed (`harness.provenance.
   EvaluationSettings`, with metric 6's `harness.tddft.EXCITATION_METRIC_SETTINGS` when the
   result ran excitations).

A valid summary may still be *partial* (``complete`` false: a ``--molecule`` subset, or
molecules without metrics 1–5). `rank` gives ranks only to complete results, ordered by the
registry's primary metric (`harness.metric_registry.PRIMARY`, `Metric.sort_key`), ties by
name; partial results follow, unranked (failures count, as a missing prediction counts in
Matbench Discovery). Metric keys come from `harness.metric_registry.LEADERBOARD_METRICS`,
read at call time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import harness
from harness import metric_registry as registry
from harness import provenance
from harness import summary_schema as schema
from harness.errors import HarnessError
from harness.status import STATUSES, Status

SUMMARY_NAME = "summary.json"
PER_MOLECULE_NAME = "per_molecule.csv"
#: The ``summary_format`` this leaderboard reads (older summaries are stale) and the values of
#: ``provenance.sandbox``: both from the one summary schema.
SUMMARY_FORMAT = schema.SUMMARY_FORMAT
SANDBOXES = schema.SANDBOXES

#: Order of split sections; any other split follows alphabetically.
SPLIT_ORDER = ("test", "val", "train", "tiny")

STALE = "stale"
REFUSED = "refused"

#: Reason of a summary without ``summary_format`` 2.
NO_SCORING_CODE = "made before the harness recorded its scoring code"


class LeaderboardError(HarnessError, RuntimeError):
    """Publishing cannot run at all (no results folder, no reference set, unwritable output)."""


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One valid ``summary.json``: a submission scored on one split.

    ``metrics``: registry key -> value (units in the keys) or None; ``n_covered``: molecules
    with metrics 1–5; ``n_excitations``: molecules with an excitation value (status ok);
    ``wall_s``: summary ``wall_s.molecules_sum``, seconds; ``rank``: 1-based within the split
    for a complete result (set by `rank`), None for a partial one.
    """

    submission: str
    version: str
    framework: str
    split: str
    saw_test_molecules: bool | None  # None: declared unknown
    metrics: Mapping[str, float | None]
    n_failed: int
    n_molecules: int
    n_split: int
    n_covered: int
    complete: bool
    excitations_complete: bool | None  # None: excitations not run
    n_excitations: int
    sandbox: str  # "bwrap" | "none"
    wall_s: float | None
    submission_sha256: str
    summary_path: str  # display path, e.g. "results/pbe/test/summary.json"
    rank: int | None = None

    @property
    def coverage(self) -> float:
        """Molecules with metrics 1–5 / molecules in the split."""
        return self.n_covered / self.n_split if self.n_split else 0.0

    @property
    def ranked(self) -> bool:
        return self.rank is not None

    def value(self, key: str) -> Any:
        """A metric by registry key, else the attribute ``key``."""
        if key in self.metrics:
            return self.metrics[key]
        return getattr(self, key)


@dataclass(frozen=True)
class Refusal:
    """A summary kept out of the leaderboard: ``kind`` is ``"stale"`` or ``"refused"``."""

    summary_path: str
    kind: str
    reason: str

    @property
    def line(self) -> str:
        """One line: ``PATH: KIND: REASON``."""
        return f"{self.summary_path}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class ReferenceInfo:
    """What valid results must have been scored against (the bundled reference set)."""

    name: str
    version: int | str
    manifest_sha256: str
    protocol_version: int
    split_keys: Mapping[str, tuple[str, ...]]  # split -> molecule keys (equilibrium geometries)


@dataclass
class Collection:
    """Result of `collect`: valid entries (unranked) and refusals, both in path order."""

    entries: list[Entry] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def metric_keys() -> tuple[str, ...]:
    """Summary keys of the leaderboard metrics (`harness.metric_registry.LEADERBOARD_METRICS`)."""
    return tuple(m.key for m in registry.LEADERBOARD_METRICS)


def nullable_metrics() -> tuple[str, ...]:
    """Metric keys whose value is a number, or null when it could not be computed (all of them)."""
    return metric_keys()


def required_keys() -> tuple[str, ...]:
    """Top-level keys of a summary (`harness.summary_schema.FIELDS`)."""
    return tuple(f.key for f in schema.FIELDS if "." not in f.key)


#: Keys directly under ``provenance`` that format 2 added (the schema's, less the reference and
#: submission blocks every format had).
PROVENANCE_KEYS: tuple[str, ...] = tuple(
    f.key.split(".")[1] for f in schema.FIELDS
    if f.key.count(".") == 1 and f.key.startswith("provenance.") and f.key.split(".")[1] not in ("reference", "submission"))


# ------------------------------------------------------------------------------------------
# the reference and the harness the results must match
# ------------------------------------------------------------------------------------------


def bundled_reference() -> ReferenceInfo:
    """The bundled reference set (its manifest checked against the pin) and the protocol version.

    Raises `LeaderboardError` when the bundled set is missing or its manifest was modified.
    """
    from harness.reference.pins import BUNDLED_MANIFEST_SHA256, BUNDLED_REFERENCE_DIR
    from harness.reference.store import ReferenceDataError, ReferenceSet

    try:
        refset = ReferenceSet(BUNDLED_REFERENCE_DIR)
    except ReferenceDataError as exc:
        raise LeaderboardError(str(exc)) from exc
    splits: dict[str, tuple[str, ...]] = {}
    names = {e.split for e in refset.entries} | {s for e in refset.entries for s in e.subsets}
    for split in sorted(names):
        try:
            splits[split] = tuple(e.key for e in refset.select(split))
        except ReferenceDataError:  # only conformers: nothing to score
            continue
    return ReferenceInfo(
        name=str(refset.header.get("name")),
        version=refset.header.get("version"),
        manifest_sha256=BUNDLED_MANIFEST_SHA256,
        protocol_version=harness.PROTOCOL_VERSION,
        split_keys=splits,
    )


def current_settings(excitations: bool) -> provenance.EvaluationSettings:
    """The evaluation settings a result made now would record; ``excitations``: metric 6 ran.

    `harness.tddft` (torch) is imported only here."""
    exc = None
    if excitations:
        from harness.tddft import EXCITATION_METRIC_SETTINGS

        exc = dict(EXCITATION_METRIC_SETTINGS)
    return provenance.EvaluationSettings(excitations=exc)


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


class _Refuse(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _short(sha: Any) -> str:
    return f"{sha[:12]}\u2026" if isinstance(sha, str) and len(sha) > 12 else repr(sha)


_ABSENT = object()


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return _ABSENT
        d = d[p]
    return d


def _read_csv(path: Path) -> tuple[str, list[dict[str, str]]]:
    """(sha256 hex of the bytes, rows) of a per_molecule.csv; refused when absent or unreadable."""
    if not path.is_file():
        raise _Refuse(REFUSED, f"{path.name} beside it is missing (the summary and its CSV are one "
                               "result); re-run harness evaluate")
    try:
        raw = path.read_bytes()
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        if reader.fieldnames is None or "key" not in reader.fieldnames:
            raise _Refuse(REFUSED, f"{path.name} beside it has no 'key' column")
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _Refuse(REFUSED, f"{path.name} beside it cannot be read: {exc}") from exc
    return hashlib.sha256(raw).hexdigest(), rows


def _changed_files(recorded: Any, current: Mapping[str, Any]) -> list[str]:
    """Names of the submission files whose sha256 differs between two `submission_sha256` dicts."""
    if not isinstance(recorded, dict):
        return []
    changed = []
    if recorded.get("yaml") != current.get("yaml"):
        changed.append("submission.yaml")
    old, new = recorded.get("code") or {}, current.get("code") or {}
    if isinstance(old, dict):
        changed += sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if recorded.get("weights") != current.get("weights"):
        changed.append("weights")
    return changed


def _changed_settings(recorded: Any, current: Mapping[str, Any]) -> list[str]:
    if not isinstance(recorded, dict):
        return []
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k, _ABSENT) != current.get(k, _ABSENT))


def _n_excitations(rows: list[dict[str, str]]) -> int:
    """Molecules with status ok and a value for every excitations-stage registry metric."""
    cols = [m.column for m in registry.LEADERBOARD_METRICS if m.stage == "excitations"]
    if not cols:
        return 0
    n = 0
    for r in rows:
        if r.get("status") != Status.OK.value:
            continue
        try:
            if all(math.isfinite(float(r.get(c) or "nan")) for c in cols):
                n += 1
        except ValueError:
            continue
    return n


def _check_counts(data: dict, split: str, expected: tuple[str, ...]) -> tuple[list[str], int]:
    """Check counts, subset, coverage and complete; return (keys scored, molecules covered)."""
    n_split, n_mol, n_failed = data["n_split"], data["n_molecules"], data["n_failed"]
    for k in ("n_split", "n_molecules", "n_failed"):
        if not _is_count(data[k]):
            raise _Refuse(REFUSED, f"{k!r} is {data[k]!r}, expected a non-negative integer")
    if n_split != len(expected):
        raise _Refuse(REFUSED, f"'n_split' is {n_split} but split {split!r} of the bundled reference set has "
                               f"{len(expected)} molecules")
    subset = data["subset"]
    if subset is None:
        scored = list(expected)
    elif isinstance(subset, list) and all(isinstance(k, str) for k in subset) and set(subset) <= set(expected) \
            and len(set(subset)) == len(subset):
        scored = list(subset)
    else:
        raise _Refuse(REFUSED, f"'subset' names molecules outside split {split!r} (or repeats one)")
    if n_mol != len(scored):
        raise _Refuse(REFUSED, f"incomplete: {n_mol} molecule(s) scored, "
                               + (f"split {split!r} has {len(expected)}" if subset is None
                                  else f"the subset names {len(scored)}"))
    counts = data["status_counts"]
    if not isinstance(counts, dict) or not all(k in STATUSES and _is_count(v) for k, v in counts.items()):
        raise _Refuse(REFUSED, f"'status_counts' must map statuses ({', '.join(STATUSES)}) to counts")
    if sum(counts.values()) != n_mol:
        raise _Refuse(REFUSED, f"'status_counts' sum to {sum(counts.values())}, 'n_molecules' is {n_mol}")
    n_ok = counts.get(Status.OK.value, 0)
    if n_failed != n_mol - n_ok:
        raise _Refuse(REFUSED, f"'n_failed' is {n_failed} but 'status_counts' has {n_mol - n_ok} molecule(s) "
                               "whose status is not ok")
    n_covered = sum(n for s, n in counts.items() if Status(s).has_metrics)
    coverage = data["coverage"]
    if not _is_number(coverage) or abs(coverage - n_covered / n_split) > 1e-9:
        raise _Refuse(REFUSED, f"'coverage' is {coverage!r} but 'status_counts' give {n_covered}/{n_split}")
    complete = subset is None and n_covered == n_split
    if data["complete"] is not complete:
        raise _Refuse(REFUSED, f"inconsistent: 'complete' is {data['complete']!r} but subset "
                               f"{'null' if subset is None else 'set'} and coverage {n_covered}/{n_split} "
                               f"make it {str(complete).lower()}")
    failed = data["failed_molecules"]
    if not isinstance(failed, list) or not all(isinstance(k, str) for k in failed) or not set(failed) <= set(scored):
        raise _Refuse(REFUSED, "'failed_molecules' names molecules that were not scored")
    return scored, n_covered


def validate_summary(
    summary_file: Path,
    rel: Path,
    display: str,
    submissions_dir: Path,
    reference: ReferenceInfo,
) -> Entry | Refusal:
    """Check one summary file (``rel`` = its path below the results folder, ``<name>/<split>/
    summary.json``) against the current reference, protocol, harness and submission files.

    Returns an `Entry` (valid; ``rank`` still None) or a `Refusal` with a one-line reason.
    """
    from harness.submission import SubmissionError, load_submission, submission_sha256

    try:
        if len(rel.parts) != 3:
            raise _Refuse(REFUSED, "not at <results>/<submission>/<split>/summary.json")
        folder_name, folder_split = rel.parts[0], rel.parts[1]
        try:
            data = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise _Refuse(REFUSED, f"cannot read: {exc}") from exc
        except ValueError as exc:
            raise _Refuse(REFUSED, f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise _Refuse(REFUSED, f"expected a JSON object, got {type(data).__name__}")

        # --- protocol, reference and summary format: stale when older than the current ones
        if "protocol_version" not in data:
            raise _Refuse(REFUSED, "missing key 'protocol_version'")
        if data["protocol_version"] != reference.protocol_version:
            raise _Refuse(STALE, f"protocol version {data['protocol_version']!r} differs from the current "
                                 f"{reference.protocol_version}; re-run harness evaluate")
        manifest = _get(data, "provenance", "reference", "manifest_sha256")
        if manifest is _ABSENT:
            raise _Refuse(REFUSED, "missing key 'provenance.reference.manifest_sha256'")
        if manifest != reference.manifest_sha256:
            raise _Refuse(STALE, f"reference manifest sha256 {_short(manifest)} differs from the bundled "
                                 f"reference set's {_short(reference.manifest_sha256)}; re-run harness evaluate")
        fmt = data.get("summary_format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool):
            raise _Refuse(REFUSED, f"'summary_format' is {fmt!r}, expected an integer")
        if fmt < SUMMARY_FORMAT:
            raise _Refuse(STALE, f"{NO_SCORING_CODE} (summary_format {fmt}, now {SUMMARY_FORMAT}); "
                                 "re-run harness evaluate")
        if fmt > SUMMARY_FORMAT:
            raise _Refuse(REFUSED, f"summary_format {fmt} is newer than this harness reads ({SUMMARY_FORMAT})")

        # --- complete and well-formed (the typed schema evaluate writes)
        missing = schema.missing(data)
        if missing:
            raise _Refuse(REFUSED, f"incomplete: missing key(s) {', '.join(missing)}")
        bad = schema.problems(data)
        if bad:
            raise _Refuse(REFUSED, "; ".join(bad))
        prov = data["provenance"]
        if data["submission"] != folder_name:
            raise _Refuse(REFUSED, f"'submission' is {data['submission']!r} but the folder is {folder_name!r}")
        if data["split"] != folder_split:
            raise _Refuse(REFUSED, f"'split' is {data['split']!r} but the folder is {folder_split!r}")
        split = folder_split
        for k in nullable_metrics():
            if data[k] is not None and not _is_number(data[k]):
                raise _Refuse(REFUSED, f"{k!r} is {data[k]!r}, expected a number or null")
        wall = _get(data, "wall_s", "molecules_sum")
        if not _is_number(wall) or wall < 0:
            raise _Refuse(REFUSED, "'wall_s.molecules_sum' missing or not a non-negative number")
        if split not in reference.split_keys:
            raise _Refuse(REFUSED, f"split {split!r} is not in the bundled reference set "
                                   f"(available: {', '.join(sorted(reference.split_keys))})")
        scored, n_covered = _check_counts(data, split, reference.split_keys[split])
        exc_complete = data["excitations_complete"]
        if exc_complete is not None and not isinstance(exc_complete, bool):
            raise _Refuse(REFUSED, f"'excitations_complete' is {exc_complete!r}, expected true, false or null")
        if prov["sandbox"] not in SANDBOXES:
            raise _Refuse(REFUSED, f"'provenance.sandbox' is {prov['sandbox']!r}, expected one of "
                                   f"{', '.join(SANDBOXES)}")
        limits = prov["limits"]
        if not isinstance(limits, dict) or not _is_number(limits.get("timeout_s")) \
                or not (limits.get("memory_gb", _ABSENT) is None or _is_number(limits.get("memory_gb"))):
            raise _Refuse(REFUSED, "'provenance.limits' must be {\"timeout_s\": number, \"memory_gb\": number or null}")
        for k in ("scoring_sha256", "settings_sha256"):
            if not isinstance(prov[k], str):
                raise _Refuse(REFUSED, f"'provenance.{k}' is {prov[k]!r}, expected a sha256 hex string")
        if not isinstance(prov["evaluation_settings"], dict):
            raise _Refuse(REFUSED, "'provenance.evaluation_settings' is not an object")

        # --- per_molecule.csv and summary.json: one unit
        csv_path = summary_file.parent / PER_MOLECULE_NAME
        csv_sha, rows = _read_csv(csv_path)
        if csv_sha != data["csv_sha256"]:
            raise _Refuse(REFUSED, f"{PER_MOLECULE_NAME} beside it does not match the summary: sha256 "
                                   f"{_short(csv_sha)} on disk, {_short(data['csv_sha256'])} recorded in "
                                   "csv_sha256 (not written by the same run); re-run harness evaluate")
        csv_keys = [r["key"] for r in rows]
        if sorted(csv_keys) != sorted(scored):
            lacking = sorted(set(scored) - set(csv_keys))
            raise _Refuse(REFUSED, f"incomplete: {PER_MOLECULE_NAME} beside it lacks {', '.join(lacking) or 'nothing'}"
                                   f" and has {len(csv_keys)} row(s) for {len(scored)} molecules")

        # --- the submission: its files now must be the files that were scored
        recorded = _get(prov, "submission", "sha256")
        recorded_combined = _get(recorded, "combined")
        if recorded_combined is _ABSENT:
            raise _Refuse(REFUSED, "missing key 'provenance.submission.sha256.combined'")
        sub_folder = submissions_dir / folder_name
        if not sub_folder.is_dir():
            raise _Refuse(STALE, f"submission folder {submissions_dir.name}/{folder_name} no longer exists")
        try:
            sub = load_submission(sub_folder)
            current = submission_sha256(sub_folder)
        except SubmissionError as exc:
            raise _Refuse(STALE, f"submission {folder_name!r} no longer loads: "
                                 f"{' '.join(str(exc).split())}") from exc
        if current["combined"] != recorded_combined:
            changed = _changed_files(recorded, current)
            what = f" (changed: {', '.join(changed)})" if changed else ""
            raise _Refuse(STALE, f"submission files in {submissions_dir.name}/{folder_name} changed since "
                                 f"evaluation{what}: sha256 {_short(recorded_combined)} then, "
                                 f"{_short(current['combined'])} now; re-run harness evaluate")
        if sub.name != folder_name:
            raise _Refuse(STALE, f"{submissions_dir.name}/{folder_name}/submission.yaml names {sub.name!r}")

        # --- the harness: its scoring code and evaluation settings now must be those that scored
        scoring_now = provenance.scoring_sha256()
        if prov["scoring_sha256"] != scoring_now:
            raise _Refuse(STALE, f"the harness's scoring code changed since evaluation: scoring sha256 "
                                 f"{_short(prov['scoring_sha256'])} then, {_short(scoring_now)} now; "
                                 "re-run harness evaluate")
        recorded_settings = prov["evaluation_settings"]
        settings_now = current_settings(recorded_settings.get("excitations") is not None)
        if prov["settings_sha256"] != settings_now.sha256():
            changed = _changed_settings(recorded_settings, settings_now.to_dict())
            what = f" (changed: {', '.join(changed)})" if changed else ""
            raise _Refuse(STALE, f"the evaluation settings changed since evaluation{what}: settings sha256 "
                                 f"{_short(prov['settings_sha256'])} then, {_short(settings_now.sha256())} now; "
                                 "re-run harness evaluate")
    except _Refuse as r:
        return Refusal(display, r.kind, r.reason)

    return Entry(
        submission=sub.name,
        version=sub.version,
        framework=sub.framework,
        split=split,
        saw_test_molecules=sub.training_data.saw_test_molecules,
        metrics={k: data[k] for k in metric_keys()},
        n_failed=data["n_failed"],
        n_molecules=data["n_molecules"],
        n_split=data["n_split"],
        n_covered=n_covered,
        complete=data["complete"],
        excitations_complete=exc_complete,
        n_excitations=_n_excitations(rows),
        sandbox=prov["sandbox"],
        wall_s=float(wall),
        submission_sha256=current["combined"],
        summary_path=display,
    )


def collect(results_dir: str | Path, submissions_dir: str | Path,
            reference: ReferenceInfo | None = None) -> Collection:
    """Validate every ``summary.json`` below ``results_dir`` (sorted by path).

    Raises `LeaderboardError` when ``results_dir`` is not a folder.
    """
    results_dir, submissions_dir = Path(results_dir), Path(submissions_dir)
    if not results_dir.is_dir():
        raise LeaderboardError(f"results folder {results_dir} not found; run 'harness evaluate' first "
                               "or pass --results DIR")
    reference = reference or bundled_reference()
    label = results_dir.name or results_dir.resolve().name
    out = Collection()
    files = sorted(results_dir.rglob(SUMMARY_NAME), key=lambda p: p.relative_to(results_dir).parts)
    for f in files:
        if not f.is_file():
            continue
        rel = f.relative_to(results_dir)
        got = validate_summary(f, rel, f"{label}/{rel.as_posix()}", submissions_dir, reference)
        (out.entries if isinstance(got, Entry) else out.refusals).append(got)
    return out


# ------------------------------------------------------------------------------------------
# ranking
# ------------------------------------------------------------------------------------------


def _split_order(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def rank(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Entries grouped by split (test, val, train, tiny, then others). In each split the complete
    results come first, ranked 1, 2, … by the primary metric (`Metric.sort_key`: best first,
    None last; ties by submission name); then the partial ones, ``rank`` None, by coverage
    (highest first) and name."""
    primary = registry.PRIMARY
    by_split: dict[str, list[Entry]] = {}
    for e in entries:
        by_split.setdefault(e.split, []).append(e)
    board: dict[str, list[Entry]] = {}
    for split in sorted(by_split, key=_split_order):
        rows = by_split[split]
        complete = sorted((e for e in rows if e.complete),
                          key=lambda e: (primary.sort_key(e.metrics.get(primary.key)), e.submission))
        partial = sorted((e for e in rows if not e.complete), key=lambda e: (-e.coverage, e.submission))
        board[split] = [replace(e, rank=i) for i, e in enumerate(complete, 1)] + \
                       [replace(e, rank=None) for e in partial]
    return board


__all__ = [
    "Collection", "Entry", "LeaderboardError", "NO_SCORING_CODE", "PER_MOLECULE_NAME", "PROVENANCE_KEYS",
    "REFUSED", "ReferenceInfo", "Refusal", "SANDBOXES", "SPLIT_ORDER", "STALE", "SUMMARY_FORMAT",
    "SUMMARY_NAME", "bundled_reference", "collect", "current_settings", "metric_keys", "nullable_metrics",
    "rank", "required_keys", "validate_summary",
]
