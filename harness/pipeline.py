"""The scoring pipeline of one molecule (PROTOCOL §3): what turns a functional and a reference
record into a per-molecule row, and rows into the summary's numbers. `harness.evaluate` runs it
over a split (processes, cache, files); this module and what it calls are the *scoring code*
whose sha256 every result records (`harness.provenance`).

For one molecule (`evaluate_molecule`):

1. build the integrals and grid (`harness.integrals.build_setup`, the reference's basis and
   grid level) and run the harness SCF with the functional (`harness.scf.run_scf`: DF-J SCF
   from ``minao``, at most `MAX_CYCLE` iterations, |ΔE| < 1e-9 Eh and orbital gradient
   < 1e-5; the reported energy is re-evaluated with exact J at the converged density);
2. `harness.metrics.molecule_metrics` with the model's density matrix and exact-J energy
   (metrics 1–5; 7 comes from the SCF itself);
3. optionally the excitation energies (metric 6) through the ``excitations`` hook — a callable
   ``excitations(functional, setup, scf_result, record) -> sequence of eV`` (`harness.tddft`).

Statuses (`harness.status`): a molecule's row says what happened — ``ok``,
``not_converged`` (no metrics from a non-converged density), ``functional_error``,
``timeout``, ``crashed``, ``memory`` (the submission's doing, from `harness.errors.SubmissionFault`),
``excitations_failed`` (metrics 1–5 kept) or ``harness_error`` (anything else: the harness's
own failure). The wall-time limit of a `harness.remote.RemoteFunctional` (its ``begin``) covers
the whole molecule, SCF and TDDFT.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch

from harness.errors import HarnessError, SubmissionFault
from harness.integrals import build_setup
from harness.metric_registry import aggregate as aggregate_metrics
from harness.metrics import ROW_FIELDS, excitation_mae_eV, molecule_metrics
from harness.provenance import EvaluationSettings
from harness.reference.compute import ReferenceRecord
from harness.reference.settings import ReferenceSettings
from harness.results import CSV_COLUMNS, EXCITATION_STATES
from harness.scf import needs_of, run_scf
from harness.status import STATUSES, Status
from harness.submission import SubmissionError

#: Model SCF settings of the protocol (PROTOCOL §3.7).
MAX_CYCLE = 100
CONV_TOL_ENERGY = 1e-9
CONV_TOL_GRAD = 1e-5

#: ``excitations(functional, setup, scf_result, record)`` → model excitation energies (eV),
#: compared in order with the reference's. Must be picklable (a module-level function) for
#: ``workers > 1``.
ExcitationsHook = Callable[[Any, Any, Any, ReferenceRecord], Sequence[float]]

#: Metric columns copied from `molecule_metrics`' row (metric 6 is computed here).
_METRIC_FIELDS = tuple(f for f in ROW_FIELDS if f not in ("key", "status", "error", "wall_s", "excitation_mae_eV"))
#: Columns every molecule with metrics 1–5 must have as finite numbers.
_REQUIRED_METRICS = ("energy_error_mEh", "e_rho_mEh", "dipole_error_debye", "density_l2",
                     "scf_cycles_model_start", "scf_cycles_minao", "scf_iter_reduction")


def evaluation_settings(excitations: "ExcitationsHook | None") -> EvaluationSettings:
    """The `EvaluationSettings` of a run with (or without) the excitation stage."""
    return EvaluationSettings(
        max_cycle=MAX_CYCLE, conv_tol_energy_Eh=CONV_TOL_ENERGY, conv_tol_grad=CONV_TOL_GRAD,
        # the stage's own name is in the cache key; its settings are what change numbers
        excitations=None if excitations is None else dict(getattr(excitations, "settings", {})),
    )


def _with_molecule(key: str, message: str) -> str:
    return message if repr(key) in message or f"{key}:" in message else f"{key}: {message}"


def empty_row(key: str) -> dict:
    row: dict[str, Any] = {c: None for c in CSV_COLUMNS}
    row["key"] = key
    return row


def _excitation_columns(row: dict, model_eV, ref_eV) -> None:
    """Per-state model and reference energies (eV) into the row's excitation columns."""
    for who, values in (("model", model_eV), ("ref", ref_eV)):
        if values is None:
            continue
        for k, v in enumerate(list(values)[:EXCITATION_STATES], start=1):
            row[f"excitation_{who}_eV_{k}"] = float(v)


def hook_name(hook) -> str | None:
    """Stable name of an excitation stage (module.qualname), for the cache key and provenance."""
    if hook is None:
        return None
    return f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', type(hook).__name__)}"


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _fault_status(exc: BaseException) -> Status:
    return Status(getattr(exc, "status", Status.FUNCTIONAL_ERROR.value))


def evaluate_molecule(
    functional,
    record: ReferenceRecord,
    settings: ReferenceSettings,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    excitations: ExcitationsHook | None = None,
) -> dict:
    """One molecule through the pipeline; always returns a row (`CSV_COLUMNS`) whose status
    says what happened (module docstring). ``KeyboardInterrupt`` still propagates."""
    key = record.key
    row = empty_row(key)
    row["energy_ref_Eh"] = float(record.energy_Eh)
    t_start = time.perf_counter()
    begin, end = getattr(functional, "begin", None), getattr(functional, "end", None)
    if begin is not None:
        begin(key)  # the molecule's wall-time limit starts now
    try:
        with functional.on(key):
            t = time.perf_counter()
            setup = build_setup(
                record.molecule, basis=settings.basis, grid_level=settings.grid_level,
                device=device, dtype=dtype, name=key, **needs_of(functional),
            )
            row["setup_wall_s"] = time.perf_counter() - t
            row["nao"], row["ngrid"] = int(setup.nao), int(setup.ngrid)
            t = time.perf_counter()
            res = run_scf(functional, setup, max_cycle=MAX_CYCLE, conv_tol_energy=CONV_TOL_ENERGY,
                          conv_tol_grad=CONV_TOL_GRAD)
            row["model_scf_wall_s"] = time.perf_counter() - t
            row["scf_iterations_model"] = int(res.iterations)
            row["scf_converged_model"] = bool(res.converged)
        if not res.converged:
            last = res.history[-1] if res.history else {}
            row["status"] = Status.NOT_CONVERGED.value
            row["error"] = (
                f"{key}: model SCF did not converge within {MAX_CYCLE} iterations "
                f"(last |dE| = {abs(last.get('delta_e_Eh', float('nan'))):.2e} Eh, "
                f"|g| = {last.get('grad_norm', float('nan')):.2e}); "
                "no metrics are computed from a non-converged density"
            )
            return row
        row["energy_model_Eh"] = float(res.energy_Eh)
        dm = res.dm.detach().to(device="cpu", dtype=torch.float64).numpy()
        m = molecule_metrics(record, dm, res.energy_Eh, settings)
        for f in _METRIC_FIELDS:
            row[f] = m[f]
        row["metrics_wall_s"] = m["wall_s"]
        bad = [f for f in _REQUIRED_METRICS if not _finite(row[f])]
        if bad:  # the SCF converged to a finite density: a non-finite metric is the harness's
            raise HarnessError(f"{key}: metric column(s) {bad} are not finite numbers")
        row["status"] = Status.OK.value
        if excitations is not None:
            t = time.perf_counter()
            try:
                with functional.on(key):
                    exc_eV = excitations(functional, setup, res, record)
            except (SubmissionFault, SubmissionError, HarnessError) as exc:
                cause = _fault_status(exc).value if isinstance(exc, SubmissionFault) else type(exc).__name__
                row["status"] = Status.EXCITATIONS_FAILED.value
                row["error"] = _with_molecule(key, f"excitations ({cause}): {exc}")
                exc_eV = None
            row["excitations_wall_s"] = time.perf_counter() - t
            if exc_eV is not None:
                _excitation_columns(row, exc_eV, record.excitation_energies_eV)
                row["excitation_mae_eV"] = excitation_mae_eV(exc_eV, record.excitation_energies_eV)
    except SubmissionFault as exc:
        row["status"], row["error"] = _fault_status(exc).value, _with_molecule(key, str(exc))
    except SubmissionError as exc:  # the child could not (re)load the submission
        row["status"], row["error"] = Status.FUNCTIONAL_ERROR.value, _with_molecule(key, str(exc))
    except Exception as exc:  # the harness's own failure: reported as such, never cached
        row["status"], row["error"] = Status.HARNESS_ERROR.value, f"{key}: {type(exc).__name__}: {exc}"
    finally:
        if end is not None:
            end()
        row["wall_s"] = time.perf_counter() - t_start
    return row


def summarize(rows: Sequence[dict], n_split: int | None = None, excitations_run: bool | None = None) -> dict:
    """Aggregate metrics (`harness.metric_registry`) and coverage of the rows.

    ``n_split``: molecules in the split (default: the rows); ``excitations_run``: whether the
    excitation stage ran (None: infer from the rows)."""
    rows = list(rows)
    statuses = [Status(r.get("status")) for r in rows]
    n_split = len(rows) if n_split is None else int(n_split)
    covered = sum(s.has_metrics for s in statuses)
    iters = [int(r["scf_iterations_model"]) for r in rows if r.get("scf_iterations_model") is not None]
    if excitations_run is None:
        excitations_run = any(r.get("excitation_mae_eV") is not None for r in rows)
    return {
        **aggregate_metrics(rows),
        "n_split": n_split,
        "n_molecules": len(rows),
        "n_failed": sum(s is not Status.OK for s in statuses),
        "n_not_converged": sum(s is Status.NOT_CONVERGED for s in statuses),
        "status_counts": {st: sum(s.value == st for s in statuses) for st in STATUSES},
        "coverage": covered / n_split if n_split else 0.0,
        "complete": bool(n_split) and covered == n_split and len(rows) == n_split,
        "excitations_complete": (all(s is Status.OK for s in statuses) and len(rows) == n_split)
        if excitations_run else None,
        "model_scf_iterations_mean": (sum(iters) / len(iters)) if iters else None,
        "model_scf_iterations_max": max(iters) if iters else None,
        "failed_molecules": [r["key"] for r, s in zip(rows, statuses) if s is not Status.OK],
    }


__all__ = ["CONV_TOL_ENERGY", "CONV_TOL_GRAD", "ExcitationsHook", "MAX_CYCLE", "empty_row", "evaluate_molecule",
           "evaluation_settings", "hook_name", "summarize"]
