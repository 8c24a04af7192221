"""Result files of ``harness evaluate``: per-molecule cache, CSV table, summary and provenance.

Layout (``OUT`` defaults to ``results``)::

    OUT/<submission name>/<split>/
        molecules/<key>.json     one small JSON per molecule: the cache key and the row
        per_molecule.csv         one row per molecule of the split (failed ones included)
        summary.json             aggregate metrics + provenance

Every file is written atomically (temporary file beside it, then rename) with
:mod:`harness.io`, so a killed run never leaves a half-written result; temporaries left by a
SIGKILL are removed at the start of the next run.

A cached molecule file is reused only when its ``cache`` block equals the current one
(`cache_key`): the submission's combined sha256, the reference manifest sha256, the protocol
version, the harness's scoring code and evaluation settings (`harness.provenance`), the
sandbox, device and dtype. A ``timeout`` or ``memory`` row is reused only under the same limits
(a larger limit retries it). Anything else is recomputed and overwritten; a ``harness_error``
row is never stored.

The CSV and the summary are one unit: `write_results` writes the CSV, then the summary naming
the CSV's sha256 (``csv_sha256``); a reader (the leaderboard) that finds them disagreeing knows
the run was cut between the two writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import harness
from harness.io import atomic_write_json, atomic_write_text, remove_stale_temporaries

#: Version of the molecule-cache JSON layout.
CACHE_FORMAT_VERSION = 2
#: Statuses whose cached row depends on the limits it ran under.
LIMIT_STATUSES = ("timeout", "memory")

#: Excitation energies per state (PROTOCOL §3 metric 6: the lowest 5 singlets, in order).
EXCITATION_STATES = 5
EXCITATION_COLUMNS: tuple[str, ...] = tuple(
    f"excitation_{who}_eV_{k}" for who in ("model", "ref") for k in range(1, EXCITATION_STATES + 1))

#: Columns of ``per_molecule.csv``, in order. Units are in the names (mEh, Eh, debye, eV, s);
#: ``density_l2`` is in atomic units (electrons / bohr^(3/2)).
CSV_COLUMNS: tuple[str, ...] = (
    "key",
    "status",
    "error",
    "energy_model_Eh",
    "energy_ref_Eh",
    "energy_error_mEh",
    "e_rho_mEh",
    "dipole_error_debye",
    "density_l2",
    "excitation_mae_eV",
    *EXCITATION_COLUMNS,
    "scf_iterations_model",
    "scf_converged_model",
    "scf_cycles_model_start",
    "scf_cycles_minao",
    "scf_iter_reduction",
    "scf_converged",
    "nao",
    "ngrid",
    "setup_wall_s",
    "model_scf_wall_s",
    "excitations_wall_s",
    "metrics_wall_s",
    "wall_s",
)

#: Keys of the wall-time columns that are summed per stage in the summary.
STAGE_COLUMNS = ("setup_wall_s", "model_scf_wall_s", "excitations_wall_s", "metrics_wall_s", "wall_s")


@dataclass(frozen=True)
class ResultPaths:
    """Where the results of one submission on one split go."""

    root: Path  # OUT/<name>/<split>

    @classmethod
    def of(cls, out: str | Path, submission_name: str, split: str) -> "ResultPaths":
        return cls(Path(out) / submission_name / split)

    @property
    def molecules(self) -> Path:
        return self.root / "molecules"

    @property
    def csv(self) -> Path:
        return self.root / "per_molecule.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def molecule(self, key: str) -> Path:
        return self.molecules / f"{key}.json"

    def prepare(self) -> int:
        """Create the folders and delete temporaries a killed run left. Returns how many."""
        self.molecules.mkdir(parents=True, exist_ok=True)
        return remove_stale_temporaries(self.root)


# ------------------------------------------------------------------------------------------
# per-molecule cache
# ------------------------------------------------------------------------------------------


def cache_key(submission_combined_sha256: str, manifest_sha256: str, device: str, dtype: str,
              excitations: str | None = None, *, scoring: str, settings: str, sandbox: str) -> dict:
    """What a cached row depends on. A row is reused only when all of it matches.
    ``excitations``: the name of the excitation stage (None: not run); ``scoring`` and
    ``settings``: `harness.provenance` hashes; ``sandbox``: ``bwrap`` or ``none``."""
    return {
        "excitations": excitations,
        "format": CACHE_FORMAT_VERSION,
        "protocol_version": harness.PROTOCOL_VERSION,
        "scoring_sha256": scoring,
        "settings_sha256": settings,
        "sandbox": sandbox,
        "submission_sha256": submission_combined_sha256,
        "reference_manifest_sha256": manifest_sha256,
        "device": device,
        "dtype": dtype,
    }


def _clean(value: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, non-finite floats to None."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_molecule(paths: ResultPaths, key: str, cache: Mapping[str, Any], row: Mapping[str, Any],
                   limits: Mapping[str, Any] | None = None) -> None:
    """Store one molecule's row atomically with its cache key and the limits it ran under."""
    atomic_write_json(paths.molecule(key), {"key": key, "cache": dict(cache), "limits": _clean(dict(limits or {})),
                                            "row": _clean(dict(row))})


def read_molecule(paths: ResultPaths, key: str, cache: Mapping[str, Any],
                  limits: Mapping[str, Any] | None = None) -> dict | None:
    """The cached row of ``key`` if present, readable and computed under ``cache`` (and, for a
    timeout or memory row, under ``limits``); else None."""
    path = paths.molecule(key)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("cache") != dict(cache):
        return None
    row = data.get("row")
    if not (isinstance(row, dict) and row.get("key") == key):
        return None
    if row.get("status") in LIMIT_STATUSES and data.get("limits") != _clean(dict(limits or {})):
        return None
    if row.get("status") == "harness_error":
        return None
    return row


# ------------------------------------------------------------------------------------------
# CSV and summary
# ------------------------------------------------------------------------------------------


def csv_value(v: Any) -> str:
    """One CSV cell: empty for None, true/false, floats in shortest round-trip form."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest round-trip representation: no precision lost
    return str(v)


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``per_molecule.csv``'s text: `CSV_COLUMNS`, one line per row; empty cell = no value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([csv_value(r.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """Write ``per_molecule.csv`` atomically; returns its sha256."""
    text = csv_text(rows)
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode()).hexdigest()


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    atomic_write_json(path, _clean(dict(summary)))


def write_results(paths: ResultPaths, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict:
    """The CSV, then the summary with the CSV's sha256 (``csv_sha256``): one unit. Returns the
    summary as written."""
    out = dict(summary)
    out["csv_sha256"] = write_csv(paths.csv, rows)
    write_summary(paths.summary, out)
    return _clean(out)


def check_results(paths: ResultPaths) -> None:
    """Raise `harness.errors.HarnessError` naming the file when the summary and the CSV beside it
    do not belong together (a run cut between the two writes, or an edited file)."""
    from harness.errors import HarnessError

    try:
        summary = json.loads(paths.summary.read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{paths.summary}: cannot read: {exc}") from exc
    want = summary.get("csv_sha256")
    if not paths.csv.is_file():
        raise HarnessError(f"{paths.csv}: missing (the summary beside it names sha256 {want})")
    have = hashlib.sha256(paths.csv.read_bytes()).hexdigest()
    if want != have:
        raise HarnessError(f"{paths.csv}: sha256 {have[:12]}… does not match csv_sha256 {str(want)[:12]}… in "
                           f"{paths.summary} (the run was cut between the two writes, or a file was edited)")


# ------------------------------------------------------------------------------------------
# provenance
# ------------------------------------------------------------------------------------------


def _module_version(name: str) -> str | None:
    try:
        mod = __import__(name)
    except Exception:
        return None
    return str(getattr(mod, "__version__", None))


def git_info(repo: str | Path | None = None) -> dict:
    """``{"commit": sha | None, "dirty": bool | None}`` of the harness source tree.

    ``dirty`` is true when tracked files differ from HEAD or untracked, non-ignored files exist
    under ``harness/`` (the code that computes the numbers). Without git or a repository both
    are None.
    """
    repo = Path(repo) if repo is not None else Path(harness.__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout if p.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    tracked = git("status", "--porcelain", "--untracked-files=no")
    untracked = git("status", "--porcelain", "--untracked-files=all", "--", "harness")
    dirty = None if tracked is None or untracked is None else bool(tracked.strip() or untracked.strip())
    return {"commit": commit.strip(), "dirty": dirty}


def software_versions() -> dict:
    return {
        "python": platform.python_version(),
        "harness": harness.__version__,
        "pyscf": _module_version("pyscf"),
        "torch": _module_version("torch"),
        "jax": _module_version("jax") if _jax_installed() else None,
        "numpy": _module_version("numpy"),
    }


def _jax_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None


def machine_info() -> dict:
    """Host-name-free description of the machine."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": sys.platform,
        "machine": platform.machine(),
    }


# ------------------------------------------------------------------------------------------
# the printed table
# ------------------------------------------------------------------------------------------


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def render_report(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """A readable plain-text report: one line per molecule, then the aggregate numbers."""
    cols = [
        ("molecule", "key", "s"), ("status", "status", "s"), ("dE/mEh", "energy_error_mEh", "+.3f"),
        ("E_rho/mEh", "e_rho_mEh", ".4f"), ("dipole/D", "dipole_error_debye", ".4f"),
        ("L2", "density_l2", ".2e"), ("iters", "scf_iterations_model", "d"),
        ("B3LYP n/n0", None, ""), ("exc/eV", "excitation_mae_eV", ".3f"),
    ]
    table = []
    for r in rows:
        line = []
        for title, field, spec in cols:
            if field is None:
                n, n0 = r.get("scf_cycles_model_start"), r.get("scf_cycles_minao")
                line.append(f"{n}/{n0}" if n is not None and n0 is not None else "-")
            else:
                line.append(_fmt(r.get(field), spec))
        table.append(line)
    widths = [max(len(c[0]), *(len(t[i]) for t in table)) if table else len(c[0]) for i, c in enumerate(cols)]
    out = []
    out.append("  ".join(c[0].ljust(w) if i < 2 else c[0].rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    out.append("  ".join("-" * w for w in widths))
    for t in table:
        out.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(t, widths))))
    for r in rows:
        if r.get("error"):
            out.append(f"  {r['key']}: {r['status']}: {r['error']}")
    s = summary
    out.append("")
    counts = {k: v for k, v in (s.get("status_counts") or {}).items() if v and k != "ok"}
    failures = ", ".join(f"{v} {k}" for k, v in counts.items()) or "none failed"
    coverage = "" if s.get("n_split") is None else f"; covers {s.get('coverage', 0):.0%} of {s['n_split']}"
    out.append(f"{s.get('submission')} on split {s.get('split')!r} "
               f"({s.get('n_molecules')} molecules: {failures}{coverage})")
    from harness.metric_registry import METRICS

    lines = [(m.title, m.format(s.get(m.key)), m.unit) for m in METRICS]
    if s.get("model_scf_iterations_mean") is not None:
        lines.append(("model SCF iterations mean / max",
                      f"{s['model_scf_iterations_mean']:.1f} / {s['model_scf_iterations_max']}", ""))
    w = max(len(t) for t, *_ in lines)
    for title, v, unit in lines:
        out.append(f"  {title.ljust(w)}  {v} {unit}".rstrip())
    return "\n".join(out)
