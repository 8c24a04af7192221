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
and harness versions, device and dtype. Anything else is recomputed and overwritten.
"""

from __future__ import annotations

import csv
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
CACHE_FORMAT_VERSION = 1

#: Model pipeline statuses of a row (the ``status`` column).
STATUS_OK = "ok"
STATUS_FAILED = "failed"  # the functional raised / returned NaN, inf, a bad shape; or any error
STATUS_NOT_CONVERGED = "not_converged"  # the model's own SCF did not converge: no metrics

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
              excitations: str | None = None) -> dict:
    """What a cached row depends on. A row is reused only when all of it matches.
    ``excitations``: the name of the excitation stage (None: not run)."""
    return {
        "excitations": excitations,
        "format": CACHE_FORMAT_VERSION,
        "protocol_version": harness.PROTOCOL_VERSION,
        "harness_version": harness.__version__,
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


def write_molecule(paths: ResultPaths, key: str, cache: Mapping[str, Any], row: Mapping[str, Any]) -> None:
    """Store one molecule's row atomically with its cache key."""
    atomic_write_json(paths.molecule(key), {"key": key, "cache": dict(cache), "row": _clean(dict(row))})


def read_molecule(paths: ResultPaths, key: str, cache: Mapping[str, Any]) -> dict | None:
    """The cached row of ``key`` if present, readable and computed under ``cache``; else None."""
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
    return row if isinstance(row, dict) and row.get("key") == key else None


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


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``per_molecule.csv``: `CSV_COLUMNS`, one line per row; empty cell = no value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([csv_value(r.get(c)) for c in CSV_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    atomic_write_json(path, _clean(dict(summary)))


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
    out.append(f"{s.get('submission')} on split {s.get('split')!r} "
               f"({s.get('n_molecules')} molecules, {s.get('n_failed')} failed or not converged)")
    lines = [
        ("total-energy MAE", s.get("energy_mae_mEh"), ".3f", "mEh"),
        ("E_rho mean", s.get("e_rho_mean_mEh"), ".4f", "mEh"),
        ("dipole MAE", s.get("dipole_mae_debye"), ".4f", "D"),
        ("L2 density error mean", s.get("density_l2_mean"), ".3e", "a.u."),
        ("SCF-iteration reduction mean", s.get("scf_iter_reduction_mean"), ".3f", ""),
        ("SCF-iteration ratio pooled", s.get("scf_iter_ratio_pooled"), ".3f", ""),
        ("excitation MAE", s.get("excitation_mae_eV"), ".3f", "eV"),
        ("converged fraction", s.get("converged_fraction"), ".3f", ""),
        ("model SCF iterations mean / max",
         None if s.get("model_scf_iterations_mean") is None
         else f"{s['model_scf_iterations_mean']:.1f} / {s['model_scf_iterations_max']}", "s", ""),
    ]
    w = max(len(t) for t, *_ in lines)
    for title, v, spec, unit in lines:
        out.append(f"  {title.ljust(w)}  {_fmt(v, spec)} {unit}".rstrip())
    return "\n".join(out)
