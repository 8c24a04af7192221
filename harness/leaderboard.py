"""The leaderboard: collect ``results/<name>/<split>/summary.json``, validate, rank, render.

``harness leaderboard publish`` (see `harness.leaderboard_cli`) runs four steps:

1. `collect` finds every ``summary.json`` under the results folder and `validate_summary`
   checks each one against the *current* state of the repository:

   * protocol version = `harness.PROTOCOL_VERSION` and reference manifest sha256 = the pinned
     bundled manifest (`harness.reference.pins.BUNDLED_MANIFEST_SHA256`), else **stale**;
   * the combined sha256 of ``submissions/<name>`` (`harness.submission.submission_sha256`)
     equals the one recorded at evaluation time, else **stale**;
   * the summary is complete: every required key present with the right type, the whole split
     scored (``subset`` null, ``n_molecules`` = the split's size in the bundled reference set,
     ``per_molecule.csv`` beside it, when present, lists exactly the split's molecules), else
     **refused**.

   A stale or refused summary becomes a `Refusal` with a one-line reason naming the file; it
   never enters the ranked table.
2. `rank` orders the valid entries of each split by total-energy MAE (mEh, ascending; the
   primary metric of docs/protocol.md §3.1), missing values last, ties by name.
3. `render_markdown`, `render_csv` and `render_html` turn the ranking into text. They are pure
   functions of their inputs (no clock, no host name, no absolute paths), so the same results
   give byte-identical files.
4. `publish` writes ``README.md``, ``leaderboard.csv`` and ``index.html`` atomically.

Units: energies in mEh, dipoles in Debye, the L2 density error in atomic units
(electrons / bohr^(3/2)), excitation energies in eV, wall times in seconds.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import harness
from harness.io import atomic_path
from harness.results import csv_value

#: Outputs of `publish`, inside the ``--out`` folder.
README_NAME = "README.md"
CSV_NAME = "leaderboard.csv"
HTML_NAME = "index.html"
SUMMARY_NAME = "summary.json"

#: Shown for a missing value (None / absent key) in README.md and index.html.
MISSING = "\u2014"  # em dash
#: Marks a submission whose training data declared ``saw_test_molecules: true``.
DAGGER = "\u2020"
#: Marks a submission that declared ``saw_test_molecules: unknown``.
DOUBLE_DAGGER = "\u2021"

#: Order of split sections; any other split follows alphabetically.
SPLIT_ORDER = ("test", "val", "train", "tiny")

STALE = "stale"
REFUSED = "refused"


class LeaderboardError(RuntimeError):
    """Publishing cannot run at all (no results folder, no reference set, unwritable output)."""


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One valid ``summary.json``: a submission scored on one split. Units as in the keys."""

    submission: str
    version: str
    framework: str
    split: str
    saw_test_molecules: bool | None  # None: declared unknown
    energy_mae_mEh: float | None
    e_rho_mean_mEh: float | None
    dipole_mae_debye: float | None
    density_l2_mean: float | None  # atomic units
    scf_iter_reduction_mean: float | None  # 1 - n_model / n_minao, unitless
    excitation_mae_eV: float | None
    n_failed: int
    n_molecules: int
    wall_s: float | None  # summary wall_s.molecules_sum: seconds, summed over molecules
    submission_sha256: str
    summary_path: str  # display path, e.g. "results/pbe/test/summary.json"
    rank: int = 0  # 1-based within the split; set by `rank`


@dataclass(frozen=True)
class Refusal:
    """A summary kept out of the ranking: ``kind`` is ``"stale"`` or ``"refused"``."""

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


@dataclass(frozen=True)
class Column:
    """A leaderboard column: ``key`` of `Entry`, header title with unit, number format."""

    key: str
    title: str
    unit: str
    spec: str  # format spec for numbers; "" for text
    numeric: bool
    better: str = ""  # "lower" | "higher" | "" (not a score)

    @property
    def header(self) -> str:
        return f"{self.title} ({self.unit})" if self.unit else self.title

    @property
    def csv_name(self) -> str:
        return _CSV_NAMES.get(self.key, self.key)


#: Score columns, each with a bar chart. Keys are the `Entry` fields (= summary.json keys).
METRIC_COLUMNS: tuple[Column, ...] = (
    Column("energy_mae_mEh", "energy MAE", "mEh", ".3f", True, "lower"),
    Column("e_rho_mean_mEh", "E_\u03c1 mean", "mEh", ".4f", True, "lower"),
    Column("dipole_mae_debye", "dipole MAE", "D", ".4f", True, "lower"),
    Column("density_l2_mean", "L2 density error mean", "a.u.", ".3e", True, "lower"),
    Column("scf_iter_reduction_mean", "SCF-iteration reduction", "", ".3f", True, "higher"),
    Column("excitation_mae_eV", "excitation MAE", "eV", ".3f", True, "lower"),
)

#: Every column of the tables, in order.
TABLE_COLUMNS: tuple[Column, ...] = (
    Column("rank", "rank", "", "d", True),
    Column("submission", "submission", "", "", False),
    Column("framework", "framework", "", "", False),
    *METRIC_COLUMNS,
    Column("n_failed", "failed", "", "d", True, "lower"),
    Column("wall_s", "eval wall time", "s", ".1f", True, "lower"),
)

_CSV_NAMES = {"wall_s": "eval_wall_s"}

#: Columns of leaderboard.csv, in order (units in the names, as in per_molecule.csv).
CSV_COLUMNS: tuple[str, ...] = (
    "split", "rank", "submission", "version", "framework", "saw_test_molecules",
    "energy_mae_mEh", "e_rho_mean_mEh", "dipole_mae_debye", "density_l2_mean",
    "scf_iter_reduction_mean", "excitation_mae_eV", "n_failed", "n_molecules", "eval_wall_s",
    "submission_sha256", "summary",
)

#: Top-level summary.json keys a complete summary has (written by `harness.evaluate.evaluate`).
#: ``excitation_mae_eV`` is optional: older summaries lack it.
REQUIRED_KEYS: tuple[str, ...] = (
    "submission", "split", "protocol_version", "subset",
    "energy_mae_mEh", "e_rho_mean_mEh", "dipole_mae_debye", "density_l2_mean",
    "scf_iter_reduction_mean", "n_molecules", "n_failed", "failed_molecules",
    "provenance", "wall_s",
)
#: Metric keys whose value is a number, or null when no molecule could be scored.
NULLABLE_METRICS: tuple[str, ...] = (
    "energy_mae_mEh", "e_rho_mean_mEh", "dipole_mae_debye", "density_l2_mean",
    "scf_iter_reduction_mean",
)


# ------------------------------------------------------------------------------------------
# the reference the results must match
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


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


class _Refuse(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(sha: Any) -> str:
    return f"{sha[:12]}\u2026" if isinstance(sha, str) and len(sha) > 12 else repr(sha)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return _ABSENT
        d = d[p]
    return d


_ABSENT = object()


def _csv_keys(path: Path) -> list[str] | None:
    """The ``key`` column of a per_molecule.csv; None when the file is absent."""
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "key" not in reader.fieldnames:
                raise _Refuse(REFUSED, f"{path.name} beside it has no 'key' column")
            return [row["key"] for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _Refuse(REFUSED, f"{path.name} beside it cannot be read: {exc}") from exc


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


def validate_summary(
    summary_file: Path,
    rel: Path,
    display: str,
    submissions_dir: Path,
    reference: ReferenceInfo,
) -> Entry | Refusal:
    """Check one summary file (``rel`` = its path below the results folder, ``<name>/<split>/
    summary.json``) against the current reference, protocol and submission files.

    Returns an `Entry` (valid; ``rank`` still 0) or a `Refusal` with a one-line reason.
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

        # --- protocol and reference: stale when they differ from the current ones
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

        # --- complete and well-formed
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise _Refuse(REFUSED, f"incomplete: missing key(s) {', '.join(missing)}")
        if data["submission"] != folder_name:
            raise _Refuse(REFUSED, f"'submission' is {data['submission']!r} but the folder is {folder_name!r}")
        if data["split"] != folder_split:
            raise _Refuse(REFUSED, f"'split' is {data['split']!r} but the folder is {folder_split!r}")
        split = folder_split
        for k in NULLABLE_METRICS:
            if data[k] is not None and not _is_number(data[k]):
                raise _Refuse(REFUSED, f"{k!r} is {data[k]!r}, expected a number or null")
        exc_mae = data.get("excitation_mae_eV")
        if exc_mae is not None and not _is_number(exc_mae):
            raise _Refuse(REFUSED, f"'excitation_mae_eV' is {exc_mae!r}, expected a number or null")
        wall = _get(data, "wall_s", "molecules_sum")
        if not _is_number(wall) or wall < 0:
            raise _Refuse(REFUSED, "'wall_s.molecules_sum' missing or not a non-negative number")
        n_mol, n_failed = data["n_molecules"], data["n_failed"]
        if not isinstance(n_mol, int) or isinstance(n_mol, bool) or not isinstance(n_failed, int) \
                or isinstance(n_failed, bool) or not 0 <= n_failed <= n_mol:
            raise _Refuse(REFUSED, f"'n_molecules' {n_mol!r} / 'n_failed' {n_failed!r} are not valid counts")
        if split not in reference.split_keys:
            raise _Refuse(REFUSED, f"split {split!r} is not in the bundled reference set "
                                   f"(available: {', '.join(sorted(reference.split_keys))})")
        expected = reference.split_keys[split]
        if data["subset"] is not None:
            n_sub = len(data["subset"]) if isinstance(data["subset"], list) else "?"
            raise _Refuse(REFUSED, f"incomplete: only a subset of split {split!r} was scored "
                                   f"({n_sub} of {len(expected)} molecules, --molecule)")
        if n_mol != len(expected):
            raise _Refuse(REFUSED, f"incomplete: {n_mol} molecule(s) scored, split {split!r} has {len(expected)}")
        failed = data["failed_molecules"]
        if not isinstance(failed, list) or not all(isinstance(k, str) for k in failed) \
                or not set(failed) <= set(expected):
            raise _Refuse(REFUSED, "'failed_molecules' names molecules outside the split")
        csv_keys = _csv_keys(summary_file.parent / "per_molecule.csv")
        if csv_keys is not None and sorted(csv_keys) != sorted(expected):
            lacking = sorted(set(expected) - set(csv_keys))
            raise _Refuse(REFUSED, f"incomplete: per_molecule.csv beside it lacks {', '.join(lacking) or 'nothing'}"
                                   f" and has {len(csv_keys)} row(s) for {len(expected)} molecules")

        # --- the submission: its files now must be the files that were scored
        recorded = _get(data, "provenance", "submission", "sha256")
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
    except _Refuse as r:
        return Refusal(display, r.kind, r.reason)

    return Entry(
        submission=sub.name,
        version=sub.version,
        framework=sub.framework,
        split=split,
        saw_test_molecules=sub.training_data.saw_test_molecules,
        energy_mae_mEh=data["energy_mae_mEh"],
        e_rho_mean_mEh=data["e_rho_mean_mEh"],
        dipole_mae_debye=data["dipole_mae_debye"],
        density_l2_mean=data["density_l2_mean"],
        scf_iter_reduction_mean=data["scf_iter_reduction_mean"],
        excitation_mae_eV=exc_mae,
        n_failed=n_failed,
        n_molecules=n_mol,
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
    """Entries grouped by split (test, val, train, tiny, then others), each ranked by
    total-energy MAE in mEh ascending; a missing MAE ranks last; ties by submission name."""
    by_split: dict[str, list[Entry]] = {}
    for e in entries:
        by_split.setdefault(e.split, []).append(e)
    ranked: dict[str, list[Entry]] = {}
    for split in sorted(by_split, key=_split_order):
        rows = sorted(by_split[split], key=lambda e: (e.energy_mae_mEh is None, e.energy_mae_mEh or 0.0,
                                                      e.submission))
        ranked[split] = [replace(e, rank=i) for i, e in enumerate(rows, 1)]
    return ranked


# ------------------------------------------------------------------------------------------
# formatting helpers
# ------------------------------------------------------------------------------------------


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


def _display_name(e: Entry) -> str:
    if e.saw_test_molecules is None:
        return f"{e.submission} {DOUBLE_DAGGER}"
    return f"{e.submission} {DAGGER}" if e.saw_test_molecules else e.submission


def _contamination_notes(rows) -> list[str]:
    """Footnotes for the † (saw test molecules) and ‡ (unknown) marks present in ``rows``."""
    notes = []
    if any(e.saw_test_molecules is True for e in rows):
        notes.append(f"{DAGGER} training data saw test-split molecules (declared in submission.yaml).")
    if any(e.saw_test_molecules is None for e in rows):
        notes.append(f"{DOUBLE_DAGGER} whether the training data contains test-split molecules is unknown "
                     "(declared in submission.yaml).")
    return notes


def _cell(e: Entry, col: Column) -> str:
    if col.key == "submission":
        return _display_name(e)
    return format_value(getattr(e, col.key), col.spec)


def _legend_lines(reference: ReferenceInfo) -> list[str]:
    return [
        f"Ranked by total-energy MAE (mEh, ascending), the primary metric of protocol v{reference.protocol_version}; "
        "a submission without one ranks last.",
        "energy MAE: mean |E_model \u2212 E_B3LYP| (mEh). E_\u03c1 mean: mean E_B3LYP[P_model] \u2212 "
        "E_B3LYP[P_ref] (mEh). dipole MAE: mean |\u03bc_model \u2212 \u03bc_ref| (Debye). "
        "L2 density error mean: sqrt(\u03a3 w (\u03c1_model \u2212 \u03c1_ref)\u00b2), atomic units.",
        "SCF-iteration reduction: mean of 1 \u2212 n_model/n_minao for B3LYP started from the model "
        "density (higher is better). excitation MAE: lowest 5 singlet excitations (eV).",
        "failed: molecules that failed or did not converge (left out of the means). "
        "eval wall time: seconds summed over the molecules (summary.json wall_s.molecules_sum), "
        "independent of caching and --workers.",
        f"{MISSING}: no value (e.g. excitation MAE before the TDDFT stage). {DAGGER}: the submission "
        "declares that its training data saw test-split molecules (submission.yaml "
        f"training_data.saw_test_molecules: true); {DOUBLE_DAGGER}: it declares that this is unknown.",
        "Stale or refused results never enter the ranking: they were scored under another protocol "
        "or reference set, their submission files changed since, or the summary is incomplete.",
    ]


def _intro(reference: ReferenceInfo) -> str:
    return (f"Reference set {reference.name} v{reference.version} (B3LYP/def2-SVP, manifest sha256 "
            f"{reference.manifest_sha256[:12]}), protocol version {reference.protocol_version}.")


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(ranked: Mapping[str, Sequence[Entry]], refusals: Sequence[Refusal],
                    reference: ReferenceInfo) -> str:
    """README.md: one table per split, the stale/refused list and a legend (GitHub Markdown)."""
    out = ["# Leaderboard", "", _intro(reference) + " Generated by `harness leaderboard publish`; "
           "`index.html` has a sortable table and plots, `leaderboard.csv` the full-precision numbers.", ""]
    if not ranked:
        out += ["No valid results yet: run `harness evaluate submissions/NAME`, then "
                "`harness leaderboard publish`.", ""]
    for split, rows in ranked.items():
        n = len(reference.split_keys.get(split, ())) or (rows[0].n_molecules if rows else 0)
        out += [f"## Split `{split}` ({n} molecules)", ""]
        out.append("| " + " | ".join(_md_escape(c.header) for c in TABLE_COLUMNS) + " |")
        out.append("| " + " | ".join("---:" if c.numeric else ":---" for c in TABLE_COLUMNS) + " |")
        for e in rows:
            out.append("| " + " | ".join(_md_escape(_cell(e, c)) for c in TABLE_COLUMNS) + " |")
        for note in _contamination_notes(rows):
            out += ["", note]
        out.append("")
    out += ["## Stale or refused", ""]
    if refusals:
        for r in refusals:
            out.append(f"- `{r.summary_path}` \u2014 **{r.kind}**: {_md_escape(r.reason)}")
    else:
        out.append("None.")
    out += ["", "## Legend", ""]
    out += [f"- {_md_escape(line)}" for line in _legend_lines(reference)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def render_csv(ranked: Mapping[str, Sequence[Entry]]) -> str:
    """leaderboard.csv: `CSV_COLUMNS`, one line per ranked entry, full precision; empty = no value."""
    from harness.submission import saw_test_molecules_label

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for split, rows in ranked.items():
        for e in rows:
            values = {
                "split": split, "rank": e.rank, "submission": e.submission, "version": e.version,
                "framework": e.framework,
                "saw_test_molecules": saw_test_molecules_label(e.saw_test_molecules),
                "energy_mae_mEh": e.energy_mae_mEh, "e_rho_mean_mEh": e.e_rho_mean_mEh,
                "dipole_mae_debye": e.dipole_mae_debye, "density_l2_mean": e.density_l2_mean,
                "scf_iter_reduction_mean": e.scf_iter_reduction_mean,
                "excitation_mae_eV": e.excitation_mae_eV, "n_failed": e.n_failed,
                "n_molecules": e.n_molecules, "eval_wall_s": e.wall_s,
                "submission_sha256": e.submission_sha256, "summary": e.summary_path,
            }
            w.writerow([csv_value(values[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# SVG plots
# ------------------------------------------------------------------------------------------

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
            "#ff9da7", "#9c755f", "#bab0ac")


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


def _t(text: str) -> str:
    return html.escape(text, quote=True)


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

    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" aria-label="{_t(title)}">',
             f'<title>{_t(title)}</title>',
             f'<text x="{left}" y="18" class="ct">{_t(title)}</text>']
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
    parts.append(f'<line x1="{_num(x(0.0))}" y1="{top - 6}" x2="{_num(x(0.0))}" y2="{axis_y}" class="axis"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def scatter_svg(title: str, points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str,
                colors: Sequence[str]) -> str:
    """A labelled scatter plot ``(label, x, y)`` as an inline ``<svg>``."""
    width, height, left, right, top, bottom = 560, 380, 70, 70, 48, 50
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" aria-label="{_t(title)}">', f'<title>{_t(title)}</title>',
             f'<text x="{left}" y="18" class="ct">{_t(title)}</text>']
    if not points:
        parts.append(f'<text x="{left + pw / 2:.0f}" y="{top + ph / 2:.0f}" class="na" text-anchor="middle">'
                     f'no entry has both values</text></svg>')
        return "\n".join(parts)
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    xt = nice_ticks(min(0.0, *xs), max(xs) if max(xs) > min(0.0, *xs) else 1.0)
    yt = nice_ticks(min(0.0, *ys), max(ys) if max(ys) > min(0.0, *ys) else 1.0)

    def sx(v: float) -> float:
        return left + (v - xt[0]) / (xt[-1] - xt[0]) * pw

    def sy(v: float) -> float:
        return top + ph - (v - yt[0]) / (yt[-1] - yt[0]) * ph

    for tv in xt:
        parts.append(f'<line x1="{_num(sx(tv))}" y1="{top}" x2="{_num(sx(tv))}" y2="{top + ph}" class="grid"/>')
        parts.append(f'<text x="{_num(sx(tv))}" y="{top + ph + 16}" class="tick" text-anchor="middle">'
                     f'{_t(_tick_label(tv, xt))}</text>')
    for tv in yt:
        parts.append(f'<line x1="{left}" y1="{_num(sy(tv))}" x2="{left + pw}" y2="{_num(sy(tv))}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{_num(sy(tv) + 4)}" class="tick" text-anchor="end">'
                     f'{_t(_tick_label(tv, yt))}</text>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>')
    parts.append(f'<text x="{left + pw / 2:.0f}" y="{height - 8}" class="al" text-anchor="middle">{_t(xlabel)}</text>')
    parts.append(f'<text x="14" y="{top + ph / 2:.0f}" class="al" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2:.0f})">{_t(ylabel)}</text>')
    for i, (label, xv, yv) in enumerate(points):
        cx, cy = sx(xv), sy(yv)
        parts.append(f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="5" fill="{colors[i % len(colors)]}">'
                     f'<title>{_t(label)}: {xv:.1f} s, {yv:.3f} mEh</title></circle>')
        parts.append(f'<text x="{_num(cx + 8)}" y="{_num(cy - 6)}" class="lab">{_t(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light dark; --fg: #1f2328; --muted: #59636e; --bg: #ffffff; --line: #d1d9e0;
  --head: #f6f8fa; --hover: #eef3f8; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117;
  --line: #3d444d; --head: #151b23; --hover: #1c2430; } }
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; max-width: 1200px; padding: 1.5rem; }
h1 { margin-top: 0; } h2 { border-bottom: 1px solid var(--line); padding-bottom: .3rem; }
p.meta, .legend li, .foot { color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; white-space: nowrap; }
th { white-space: normal; min-width: 4rem; max-width: 9rem; vertical-align: bottom; }
th { background: var(--head); cursor: pointer; user-select: none; position: relative; padding-right: 1.4rem; }
th:hover, th:focus { background: var(--hover); }
th::after { content: "\\2195"; position: absolute; right: .35rem; opacity: .35; }
th[aria-sort="ascending"]::after { content: "\\25B2"; opacity: 1; }
th[aria-sort="descending"]::after { content: "\\25BC"; opacity: 1; }
td.num { text-align: right; } td.txt { text-align: left; }
tbody tr:hover { background: var(--hover); }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
svg.chart { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
svg .ct { font-weight: 600; font-size: 14px; fill: var(--fg); }
svg .lab, svg .val, svg .tick, svg .al, svg .na { font-size: 12px; fill: var(--fg); }
svg .tick, svg .na { fill: var(--muted); }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { stroke: var(--muted); stroke-width: 1.2; }
ul.refused li code { font-size: 13px; }
"""

_JS = """
(function () {
  "use strict";
  function missing(v) { return v === undefined || v === null || v === ""; }
  function sortTable(table, col, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var ths = table.tHead.rows[0].cells;
    for (var k = 0; k < ths.length; k++) { ths[k].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir);
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var va = a.cells[col].getAttribute("data-value"), vb = b.cells[col].getAttribute("data-value");
      var ma = missing(va), mb = missing(vb);
      var oa = +a.getAttribute("data-order"), ob = +b.getAttribute("data-order");
      if (ma || mb) { return ma && mb ? oa - ob : (ma ? 1 : -1); }
      var c = numeric ? parseFloat(va) - parseFloat(vb) : va.localeCompare(vb);
      if (c === 0) { return oa - ob; }
      return dir === "ascending" ? c : -c;
    });
    for (var i = 0; i < rows.length; i++) { body.appendChild(rows[i]); }
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
})();
"""


def _data_value(e: Entry, col: Column) -> str:
    v = getattr(e, col.key)
    if v is None:
        return ""
    if col.numeric:
        return repr(float(v)) if isinstance(v, float) else str(v)
    return str(v)


def _html_table(split: str, rows: Sequence[Entry]) -> str:
    head = "".join(
        f'<th scope="col" data-type="{"num" if c.numeric else "text"}" data-key="{c.key}" '
        f'aria-sort="{"ascending" if c.key == "rank" else "none"}">{_t(c.header)}</th>'
        for c in TABLE_COLUMNS
    )
    body = []
    for i, e in enumerate(rows):
        cells = "".join(
            f'<td class="{"num" if c.numeric else "txt"}" data-value="{_t(_data_value(e, c))}">'
            f'{_t(_cell(e, c))}</td>'
            for c in TABLE_COLUMNS
        )
        body.append(f'<tr data-order="{i}" data-submission="{_t(e.submission)}">{cells}</tr>')
    return (f'<div class="scroll"><table class="sortable" id="table-{_t(split)}">\n<thead><tr>{head}</tr></thead>\n'
            f'<tbody>\n' + "\n".join(body) + '\n</tbody>\n</table></div>')


def render_html(ranked: Mapping[str, Sequence[Entry]], refusals: Sequence[Refusal],
                reference: ReferenceInfo) -> str:
    """index.html: one self-contained page (inline CSS, JS and SVG; no network) with a table per
    split sortable by any column, a bar chart per metric and energy MAE vs wall time."""
    out = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>xc-harness leaderboard</title>', f'<style>{_CSS}</style>', '</head>', '<body>',
           '<h1>xc-harness leaderboard</h1>',
           f'<p class="meta">{_t(_intro(reference))} Click a column header to sort; click again to '
           f'reverse. Missing values ({MISSING}) sort last.</p>']
    if not ranked:
        out.append('<p>No valid results yet: run <code>harness evaluate submissions/NAME</code>, then '
                   '<code>harness leaderboard publish</code>.</p>')
    for split, rows in ranked.items():
        n = len(reference.split_keys.get(split, ())) or (rows[0].n_molecules if rows else 0)
        out.append(f'<section id="split-{_t(split)}">')
        out.append(f'<h2>Split <code>{_t(split)}</code> ({n} molecules)</h2>')
        out.append(_html_table(split, rows))
        for note in _contamination_notes(rows):
            out.append(f'<p class="foot">{_t(note)}</p>')
        labels = [_display_name(e) for e in rows]
        colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(rows))]
        out.append(f'<h3>Metrics, split {_t(split)}</h3>')
        out.append('<div class="charts">')
        for c in METRIC_COLUMNS:
            note = {"lower": " \u2014 lower is better", "higher": " \u2014 higher is better"}.get(c.better, "")
            out.append(bar_chart_svg(c.header + note, labels, [getattr(e, c.key) for e in rows], c.spec, colors))
        out.append('</div>')
        out.append(f'<h3>Accuracy vs cost, split {_t(split)}</h3>')
        pts = [(lab, e.wall_s, e.energy_mae_mEh) for lab, e in zip(labels, rows)
               if e.wall_s is not None and e.energy_mae_mEh is not None]
        pcolors = [col for col, e in zip(colors, rows) if e.wall_s is not None and e.energy_mae_mEh is not None]
        out.append(scatter_svg("energy MAE (mEh) vs eval wall time (s)", pts, "eval wall time (s)",
                               "energy MAE (mEh)", pcolors or colors))
        out.append('</section>')
    out.append('<section id="stale"><h2>Stale or refused</h2>')
    if refusals:
        out.append('<ul class="refused">')
        for r in refusals:
            out.append(f'<li><code>{_t(r.summary_path)}</code> \u2014 <strong>{_t(r.kind)}</strong>: '
                       f'{_t(r.reason)}</li>')
        out.append('</ul>')
    else:
        out.append('<p>None.</p>')
    out.append('</section>')
    out.append('<section id="legend"><h2>Legend</h2><ul class="legend">')
    out += [f'<li>{_t(line)}</li>' for line in _legend_lines(reference)]
    out.append('</ul></section>')
    out.append(f'<script>{_JS}</script>')
    out += ['</body>', '</html>']
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# publish
# ------------------------------------------------------------------------------------------


@dataclass
class PublishResult:
    """What `publish` did: the ranking, the refusals and the files written."""

    ranked: dict[str, list[Entry]]
    refusals: list[Refusal]
    files: list[Path]

    @property
    def n_ranked(self) -> int:
        return sum(len(v) for v in self.ranked.values())


def _write_bytes_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def publish(results_dir: str | Path = "results", submissions_dir: str | Path = "submissions",
            out_dir: str | Path = "leaderboard",
            writer: Callable[[Path, str], None] = _write_bytes_atomic) -> PublishResult:
    """Collect, validate and rank every summary; write README.md, leaderboard.csv and
    index.html to ``out_dir`` (each atomically: a temporary file, then ``os.replace``).

    Raises `LeaderboardError` when it cannot run (see `collect`, `bundled_reference`).
    """
    reference = bundled_reference()
    found = collect(results_dir, submissions_dir, reference)
    ranked = rank(found.entries)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LeaderboardError(f"--out {out_dir} exists and is not a folder")
    texts = {
        README_NAME: render_markdown(ranked, found.refusals, reference),
        CSV_NAME: render_csv(ranked),
        HTML_NAME: render_html(ranked, found.refusals, reference),
    }
    files = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            writer(out_dir / name, text)
            files.append(out_dir / name)
    except OSError as exc:
        raise LeaderboardError(f"cannot write to {out_dir}: {exc}") from exc
    return PublishResult(ranked=ranked, refusals=found.refusals, files=files)


__all__ = [
    "CSV_COLUMNS", "Collection", "Column", "Entry", "LeaderboardError", "METRIC_COLUMNS", "MISSING",
    "PublishResult", "ReferenceInfo", "Refusal", "TABLE_COLUMNS", "bar_chart_svg", "bundled_reference",
    "collect", "format_value", "nice_ticks", "publish", "rank", "render_csv", "render_html",
    "render_markdown", "scatter_svg", "validate_summary",
]
