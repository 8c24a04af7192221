"""The evaluation pipeline (PROTOCOL §3): score one submission on one split of a reference set.

For every molecule of the split:

1. build the integrals and grid (`harness.integrals.build_setup`, the reference's basis and
   grid level) and run the harness SCF with the submitted functional (`harness.scf.run_scf`:
   DF-J SCF from ``minao``, at most `MAX_CYCLE` iterations, |ΔE| < 1e-9 Eh and orbital
   gradient < 1e-5; the reported energy is re-evaluated with exact J at the converged density);
2. optionally the excitation energies (metric 6) through the ``excitations`` hook — a callable
   ``excitations(functional, setup, scf_result, record) -> sequence of eV`` that the TDDFT stage
   plugs in; without it the ``excitation_mae_eV`` column stays empty;
3. `harness.metrics.molecule_metrics` with the model's density matrix and exact-J energy
   (metrics 1–5; 7 comes from the SCF itself).

Failure policy: a molecule whose functional raises or returns NaN/inf/a bad shape
(`FunctionalError`), whose metrics cannot be computed (`MetricsError`), or that hits any other
exception gets ``status = failed`` and an ``error`` naming the molecule; a molecule whose model
SCF does not converge within `MAX_CYCLE` iterations gets ``status = not_converged`` and **no
metrics** (a non-converged density is not the functional's answer). Both count in
``n_failed`` and against ``converged_fraction``; no molecule is ever dropped.

Results are cached per molecule (`harness.results`), so an interrupted evaluation continues
where it stopped and a rerun recomputes nothing; a changed submission, reference set, protocol
or harness version, device or dtype invalidates the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import harness
from harness.contract import FunctionalError
from harness.integrals import build_setup
from harness.metrics import ROW_FIELDS, MetricsError, aggregate, molecule_metrics
from harness.reference.compute import ReferenceRecord
from harness.reference.settings import ReferenceSettings
from harness.reference.store import ReferenceDataError, ReferenceSet
from harness.results import (
    CSV_COLUMNS,
    EXCITATION_STATES,
    STAGE_COLUMNS,
    STATUS_FAILED,
    STATUS_NOT_CONVERGED,
    STATUS_OK,
    ResultPaths,
    cache_key,
    git_info,
    machine_info,
    read_molecule,
    software_versions,
    write_csv,
    write_molecule,
    write_summary,
)
from harness.scf import needs_of, run_scf
from harness.submission import Submission, SubmissionError, load_functional, load_submission, submission_sha256

#: Model SCF settings of the protocol (PROTOCOL §3.7).
MAX_CYCLE = 100
CONV_TOL_ENERGY = 1e-9
CONV_TOL_GRAD = 1e-5

#: ``excitations(functional, setup, scf_result, record)`` → model excitation energies (eV),
#: compared in order with the reference's. Must be picklable (a module-level function) for
#: ``workers > 1``.
ExcitationsHook = Callable[[Any, Any, Any, ReferenceRecord], Sequence[float]]

#: Metric columns copied from `molecule_metrics`' row.
_METRIC_FIELDS = tuple(f for f in ROW_FIELDS if f not in ("key", "status", "error", "wall_s"))

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EvaluationError(RuntimeError):
    """The evaluation cannot run at all (bad submission, reference or options); one clear line."""


@dataclass
class EvaluationResult:
    summary: dict
    rows: list[dict]
    paths: ResultPaths
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# one molecule
# ------------------------------------------------------------------------------------------


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


def evaluate_molecule(
    functional,
    record: ReferenceRecord,
    settings: ReferenceSettings,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    excitations: ExcitationsHook | None = None,
) -> dict:
    """One molecule through the pipeline; always returns a row (`CSV_COLUMNS`), never raises
    for a misbehaving functional or metric (``KeyboardInterrupt`` still propagates)."""
    key = record.key
    row = empty_row(key)
    row["energy_ref_Eh"] = float(record.energy_Eh)
    t_start = time.perf_counter()
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
                row["status"] = STATUS_NOT_CONVERGED
                row["error"] = (
                    f"{key}: model SCF did not converge within {MAX_CYCLE} iterations "
                    f"(last |dE| = {abs(last.get('delta_e_Eh', float('nan'))):.2e} Eh, "
                    f"|g| = {last.get('grad_norm', float('nan')):.2e}); "
                    "no metrics are computed from a non-converged density"
                )
                return row
            row["energy_model_Eh"] = float(res.energy_Eh)
            exc_eV = None
            if excitations is not None:
                t = time.perf_counter()
                exc_eV = excitations(functional, setup, res, record)
                row["excitations_wall_s"] = time.perf_counter() - t
                _excitation_columns(row, exc_eV, record.excitation_energies_eV)
            dm = res.dm.detach().to(device="cpu", dtype=torch.float64).numpy()
        m = molecule_metrics(record, dm, res.energy_Eh, settings, excitations_model_eV=exc_eV)
        for f in _METRIC_FIELDS:
            row[f] = m[f]
        row["metrics_wall_s"] = m["wall_s"]
        row["status"] = STATUS_OK
    except FunctionalError as exc:
        row["status"], row["error"] = STATUS_FAILED, _with_molecule(key, str(exc))
    except MetricsError as exc:
        row["status"], row["error"] = STATUS_FAILED, _with_molecule(key, f"metrics: {exc}")
    except Exception as exc:  # any other failure is this molecule's, never the whole run's
        row["status"], row["error"] = STATUS_FAILED, f"{key}: {type(exc).__name__}: {exc}"
    finally:
        row["wall_s"] = time.perf_counter() - t_start
    return row


# ------------------------------------------------------------------------------------------
# worker processes
# ------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(threads: int, submission_dir: str, reference_root: str, device: str, dtype_name: str,
                 excitations: ExcitationsHook | None) -> None:
    torch.set_num_threads(threads)
    try:
        from pyscf import lib

        lib.num_threads(threads)
    except Exception:  # pragma: no cover
        pass
    _WORKER.update(
        functional=load_functional(submission_dir),
        refset=ReferenceSet(reference_root),
        device=device,
        dtype=_DTYPES[dtype_name],
        excitations=excitations,
    )


def _worker_task(key: str) -> dict:
    w = _WORKER
    try:
        record = w["refset"].load(key)
    except Exception as exc:
        row = empty_row(key)
        row.update(status=STATUS_FAILED, error=f"{key}: {type(exc).__name__}: {exc}")
        return row
    return evaluate_molecule(w["functional"], record, w["refset"].settings, device=w["device"],
                             dtype=w["dtype"], excitations=w["excitations"])


# ------------------------------------------------------------------------------------------
# the whole split
# ------------------------------------------------------------------------------------------


def summarize(rows: Sequence[dict]) -> dict:
    """Aggregate metrics of the rows (model pipeline semantics, see module docstring)."""
    # `aggregate` counts failed rows as failed; for it, a model SCF that did not converge is a
    # failure too (it has no metrics), and a converged model is "ok" whatever the B3LYP
    # restart from P_model did (that is the scf_converged column, not robustness).
    agg = aggregate([{**r, "status": STATUS_OK if r.get("status") == STATUS_OK else STATUS_FAILED} for r in rows])
    iters = [int(r["scf_iterations_model"]) for r in rows if r.get("scf_iterations_model") is not None]
    return {
        "energy_mae_mEh": agg["energy_mae_mEh"],
        "e_rho_mean_mEh": agg["e_rho_mean_mEh"],
        "dipole_mae_debye": agg["dipole_mae_debye"],
        "density_l2_mean": agg["density_l2_mean"],
        "scf_iter_reduction_mean": agg["scf_iter_reduction_mean"],
        "scf_iter_ratio_pooled": agg["scf_iter_ratio_pooled"],
        "excitation_mae_eV": agg["excitation_mae_eV"],
        "converged_fraction": agg["converged_fraction"],
        "n_molecules": agg["n_molecules"],
        "n_failed": agg["n_failed"],
        "n_not_converged": sum(1 for r in rows if r.get("status") == STATUS_NOT_CONVERGED),
        "model_scf_iterations_mean": (sum(iters) / len(iters)) if iters else None,
        "model_scf_iterations_max": max(iters) if iters else None,
        "failed_molecules": [r["key"] for r in rows if r.get("status") != STATUS_OK],
    }


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EvaluationError(f"--device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {device}: CUDA is not available on this machine")
    return str(dev)


def evaluate(
    submission_dir: str | Path,
    split: str = "test",
    reference: str | Path | None = None,
    *,
    out: str | Path = "results",
    device: str = "cpu",
    dtype: str = "float64",
    workers: int = 1,
    progress: bool = True,
    excitations: ExcitationsHook | None = None,
    keys: Sequence[str] | None = None,
    recompute: bool = False,
) -> EvaluationResult:
    """Evaluate ``submission_dir`` on ``split`` of ``reference`` (default: the bundled set) and
    write ``out/<name>/<split>/{molecules/*.json, per_molecule.csv, summary.json}``.

    ``keys`` restricts the evaluation to these molecules of the split; ``recompute`` ignores
    the cache. Raises `SubmissionError`, `ReferenceDataError` or `EvaluationError` when the
    evaluation cannot start; molecule failures become rows.
    """
    from tqdm.auto import tqdm

    from harness.reference.pins import BUNDLED_REFERENCE_DIR

    t_total = time.perf_counter()
    if workers < 1:
        raise EvaluationError(f"--workers must be at least 1, got {workers}")
    if dtype not in _DTYPES:
        raise EvaluationError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    device = _check_device(device)

    # the submission: YAML, hashes, code and weights (a SubmissionError names file and field)
    sub: Submission = load_submission(submission_dir)
    hashes = submission_sha256(sub.folder)
    functional = load_functional(sub)

    # the reference: manifest (pinned when bundled) and the split's files
    ref_root = Path(reference) if reference is not None else BUNDLED_REFERENCE_DIR
    refset = ReferenceSet(ref_root)
    entries = refset.select(split)
    if keys:
        wanted = list(dict.fromkeys(keys))
        known = {e.key for e in entries}
        unknown = [k for k in wanted if k not in known]
        if unknown:
            raise EvaluationError(f"{refset.manifest_path}: molecule(s) {unknown} not in split {split!r}")
        entries = [e for e in entries if e.key in set(wanted)]
    for e in entries:
        refset.check_file(e)
    settings = refset.settings

    paths = ResultPaths.of(out, sub.name, split)
    paths.prepare()
    ckey = cache_key(hashes["combined"], refset.manifest_sha256, device, dtype, hook_name(excitations))

    rows: dict[str, dict] = {}
    cached: list[str] = []
    todo: list[str] = []
    for e in entries:
        row = None if recompute else read_molecule(paths, e.key, ckey)
        if row is not None:
            rows[e.key] = row
            cached.append(e.key)
        else:
            todo.append(e.key)

    def commit(key: str, row: dict) -> None:
        write_molecule(paths, key, ckey, row)
        rows[key] = row

    bar = tqdm(total=len(entries), initial=len(cached), desc=f"evaluate {sub.name}", unit="mol",
               disable=not progress, smoothing=0.1)
    try:
        if workers == 1 or len(todo) <= 1:
            for key in todo:
                bar.set_postfix_str(key)
                record = refset.load(key)  # a corrupt file stops the run (ReferenceDataError)
                commit(key, evaluate_molecule(functional, record, settings, device=device,
                                              dtype=_DTYPES[dtype], excitations=excitations))
                bar.update()
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = mp.get_context("spawn")
            init = (threads, str(sub.folder), str(refset.root), device, dtype, excitations)
            with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init) as ex:
                futures = {ex.submit(_worker_task, k): k for k in todo}
                try:
                    for fut in cf.as_completed(futures):
                        key = futures[fut]
                        try:
                            row = fut.result()
                        except Exception as exc:  # the worker itself died
                            row = empty_row(key)
                            row.update(status=STATUS_FAILED, error=f"{key}: worker failed: {type(exc).__name__}: {exc}")
                        commit(key, row)
                        bar.set_postfix_str(key)
                        bar.update()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()

    ordered = [rows[e.key] for e in entries]
    write_csv(paths.csv, ordered)

    stage_sums = {c: sum(float(r.get(c) or 0.0) for r in ordered) for c in STAGE_COLUMNS}
    summary: dict[str, Any] = {
        "submission": sub.name,
        "split": split,
        "protocol_version": harness.PROTOCOL_VERSION,
        # the molecules scored when --molecule restricted the split; null = the whole split
        "subset": [e.key for e in entries] if keys else None,
        **summarize(ordered),
        "provenance": {
            "harness_version": harness.__version__,
            "git": git_info(),
            "reference": {
                "name": refset.header.get("name"),
                "version": refset.header.get("version"),
                "manifest_sha256": refset.manifest_sha256,
                "path": str(refset.root),
                "settings": settings.to_dict(),
            },
            "submission": {
                "name": sub.name,
                "version": sub.version,
                "framework": sub.framework,
                "saw_test_molecules": sub.training_data.saw_test_molecules_label,
                "training_data": sub.training_data.text,
                "sha256": hashes,
            },
            "software": software_versions(),
            "device": device,
            "dtype": dtype,
            "machine": machine_info(),
            "workers": workers,
            "model_scf": {"max_cycle": MAX_CYCLE, "conv_tol_energy_Eh": CONV_TOL_ENERGY,
                          "conv_tol_grad": CONV_TOL_GRAD},
            "excitations": None if excitations is None else {
                "stage": hook_name(excitations),
                **getattr(excitations, "settings", {}),
            },
        },
        "wall_s": {
            "total": time.perf_counter() - t_total,
            "molecules_sum": stage_sums["wall_s"],
            "setup_sum": stage_sums["setup_wall_s"],
            "model_scf_sum": stage_sums["model_scf_wall_s"],
            "excitations_sum": stage_sums["excitations_wall_s"],
            "metrics_sum": stage_sums["metrics_wall_s"],
        },
        "n_computed_this_run": len(todo),
        "n_cached": len(cached),
    }
    write_summary(paths.summary, summary)
    return EvaluationResult(summary=summary, rows=ordered, paths=paths, computed=todo, cached=cached)


__all__ = [
    "CONV_TOL_ENERGY", "CONV_TOL_GRAD", "EvaluationError", "EvaluationResult", "ExcitationsHook",
    "MAX_CYCLE", "evaluate", "evaluate_molecule", "summarize", "SubmissionError",
]
