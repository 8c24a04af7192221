"""The evaluation pipeline (PROTOCOL §3): score one submission on one split of a reference set.

The submission's functional runs in its own process (`harness.remote.RemoteFunctional`,
sandboxed by bwrap where it works); this process never imports its code. For every molecule of
the split:

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
own failure, never cached, and the run exits non-zero). Every molecule counts; none is dropped.
The wall-time limit (``Limits.timeout_s``) covers the whole molecule, SCF and TDDFT.

Results are cached per molecule (`harness.results`), so an interrupted evaluation continues
where it stopped and a rerun recomputes nothing. The cache key holds the submission's files,
the reference manifest, the harness's scoring code and the evaluation settings
(`harness.provenance`), the sandbox, device and dtype; a timeout or memory row is reused only
under the same limits.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import harness
from harness.errors import HarnessError, SubmissionFault
from harness.integrals import build_setup
from harness.metric_registry import aggregate as aggregate_metrics
from harness.metrics import ROW_FIELDS, excitation_mae_eV, molecule_metrics
from harness.provenance import EvaluationSettings, scoring_sha256
from harness.reference.compute import ReferenceRecord
from harness.reference.settings import ReferenceSettings
from harness.reference.store import ReferenceDataError, ReferenceSet
from harness.remote import Limits, RemoteFunctional
from harness.results import (
    CSV_COLUMNS,
    EXCITATION_STATES,
    STAGE_COLUMNS,
    ResultPaths,
    cache_key,
    git_info,
    machine_info,
    read_molecule,
    software_versions,
    write_results,
    write_molecule,
)
from harness.scf import needs_of, run_scf
from harness.status import STATUSES, Status
from harness.submission import Submission, SubmissionError, load_submission, submission_sha256

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

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EvaluationError(HarnessError, RuntimeError):
    """The evaluation cannot run at all (bad submission, reference or options); one clear line."""


def evaluation_settings(excitations: "ExcitationsHook | None") -> EvaluationSettings:
    """The `EvaluationSettings` of a run with (or without) the excitation stage."""
    return EvaluationSettings(
        max_cycle=MAX_CYCLE, conv_tol_energy_Eh=CONV_TOL_ENERGY, conv_tol_grad=CONV_TOL_GRAD,
        # the stage's own name is in the cache key; its settings are what change numbers
        excitations=None if excitations is None else dict(getattr(excitations, "settings", {})),
    )


@dataclass
class EvaluationResult:
    summary: dict
    rows: list[dict]
    paths: ResultPaths
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)

    @property
    def harness_errors(self) -> list[str]:
        """Molecules the harness itself failed on (not cached; rerun to retry)."""
        return [r["key"] for r in self.rows if r.get("status") == Status.HARNESS_ERROR]


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


# ------------------------------------------------------------------------------------------
# worker processes
# ------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a killed harness leaves no workers)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _init_worker(threads: int, functional_kwargs: dict, reference_root: str, device: str, dtype_name: str,
                 excitations: ExcitationsHook | None) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops the run
    torch.set_num_threads(threads)
    try:
        from pyscf import lib

        lib.num_threads(threads)
    except Exception:  # pragma: no cover
        pass
    _WORKER.update(
        functional=RemoteFunctional(**functional_kwargs, threads=threads),
        refset=ReferenceSet(reference_root),
        device=device,
        dtype=_DTYPES[dtype_name],
        excitations=excitations,
    )


def _worker_task(key: str) -> dict:
    w = _WORKER
    record = w["refset"].load(key)  # a corrupt file is the reference's problem: it propagates
    return evaluate_molecule(w["functional"], record, w["refset"].settings, device=w["device"],
                             dtype=w["dtype"], excitations=w["excitations"])


class _Pool:
    """A process pool of `workers` harness processes with at most `workers` molecules in flight.

    A worker killed from outside (``BrokenProcessPool``) fails only the molecules it was
    running; they are retried once in a fresh pool, then reported as ``harness_error`` (never
    cached). Stopping (`kill`) SIGKILLs every worker; their functional processes die with them.
    """

    def __init__(self, workers: int, initargs: tuple):
        self.workers = workers
        self.initargs = initargs
        self.ex: cf.ProcessPoolExecutor | None = None

    def _new(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                      initargs=self.initargs)

    def kill(self) -> None:
        ex, self.ex = self.ex, None
        if ex is None:
            return
        for p in list(getattr(ex, "_processes", {}).values()):
            try:
                p.kill()
            except Exception:  # pragma: no cover
                pass
        ex.shutdown(wait=False, cancel_futures=True)

    def run(self, keys: Sequence[str], done: Callable[[str, dict], None]) -> None:
        pending = list(keys)
        retried: set[str] = set()
        self.ex = self._new()
        running: dict[cf.Future, str] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    k = pending.pop(0)
                    running[self.ex.submit(_worker_task, k)] = k
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in finished:
                    key = running.pop(fut)
                    try:
                        row = fut.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        if key not in retried:
                            retried.add(key)
                            pending.insert(0, key)
                            continue
                        row = empty_row(key)
                        row.update(status=Status.HARNESS_ERROR.value,
                                   error=f"{key}: the harness worker process died twice on this molecule "
                                         "(killed from outside, or out of memory)")
                    except ReferenceDataError:
                        raise
                    except Exception as exc:
                        row = empty_row(key)
                        row.update(status=Status.HARNESS_ERROR.value,
                                   error=f"{key}: harness worker failed: {type(exc).__name__}: {exc}")
                    done(key, row)
                if broken:
                    for fut, key in list(running.items()):  # the pool is gone: their work is lost
                        pending.insert(0, key)
                    running.clear()
                    self.kill()
                    self.ex = self._new()
        finally:
            self.kill()


# ------------------------------------------------------------------------------------------
# the whole split
# ------------------------------------------------------------------------------------------


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


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EvaluationError(f"--device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {device}: CUDA is not available on this machine")
    return str(dev)


def _check_out(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise EvaluationError(f"--out {out}: {p} exists and is not a folder")
            break


def default_memory_gb() -> float:
    """The default ``--memory-gb``: 75 % of this machine's memory (GiB)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 16.0
    return round(0.75 * total / 2**30, 1)


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
    limits: Limits | None = None,
    sandbox: str = "auto",
) -> EvaluationResult:
    """Evaluate ``submission_dir`` on ``split`` of ``reference`` (default: the bundled set) and
    write ``out/<name>/<split>/{molecules/*.json, per_molecule.csv, summary.json}``.

    ``keys`` restricts the evaluation to these molecules of the split; ``recompute`` ignores
    the cache; ``limits`` are the per-molecule wall-time and memory limits of the functional's
    process (default: 1800 s, `default_memory_gb`); ``sandbox``: ``auto``, ``bwrap`` or
    ``none`` (`harness.sandbox`). Raises `SubmissionError`, `ReferenceDataError` or
    `EvaluationError` when the evaluation cannot start; molecule failures become rows.
    """
    from tqdm.auto import tqdm

    from harness.reference.pins import BUNDLED_REFERENCE_DIR

    t_total = time.perf_counter()
    if workers < 1:
        raise EvaluationError(f"--workers must be at least 1, got {workers}")
    if dtype not in _DTYPES:
        raise EvaluationError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    device = _check_device(device)
    limits = limits or Limits(memory_gb=default_memory_gb())
    if not limits.timeout_s > 0:
        raise EvaluationError(f"--timeout-s must be positive, got {limits.timeout_s}")
    if limits.memory_gb is not None and not limits.memory_gb > 0:
        raise EvaluationError(f"--memory-gb must be positive, got {limits.memory_gb}")
    out = Path(out)
    _check_out(out)

    # the submission: YAML and hashes here; its code only in its own process
    sub: Submission = load_submission(submission_dir)
    hashes = submission_sha256(sub.folder)

    # the reference: manifest (pinned when bundled) and the split's files
    ref_root = Path(reference) if reference is not None else BUNDLED_REFERENCE_DIR
    refset = ReferenceSet(ref_root)
    entries = refset.select(split)
    n_split = len(entries)
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

    functional_kwargs = dict(submission_dir=str(sub.folder), limits=limits, sandbox=sandbox,
                             hide=[str(refset.root), str(out.resolve())], name=sub.name)
    functional = RemoteFunctional(**functional_kwargs)
    functional.start()  # loads the submission in its process: a broken one stops here, one line

    eval_settings = evaluation_settings(excitations)
    paths = ResultPaths.of(out, sub.name, split)
    paths.prepare()
    ckey = cache_key(hashes["combined"], refset.manifest_sha256, device, dtype, hook_name(excitations),
                     scoring=scoring_sha256(), settings=eval_settings.sha256(), sandbox=functional.sandbox)

    rows: dict[str, dict] = {}
    cached: list[str] = []
    todo: list[str] = []
    for e in entries:
        row = None if recompute else read_molecule(paths, e.key, ckey, limits=limits.to_dict())
        if row is not None:
            rows[e.key] = row
            cached.append(e.key)
        else:
            todo.append(e.key)

    def commit(key: str, row: dict) -> None:
        if Status(row["status"]).cacheable:
            write_molecule(paths, key, ckey, row, limits=limits.to_dict())
        rows[key] = row

    bar = tqdm(total=len(entries), initial=len(cached), desc=f"evaluate {sub.name}", unit="mol",
               disable=not progress, smoothing=0.1)

    def done(key: str, row: dict) -> None:
        commit(key, row)
        bar.set_postfix_str(f"{key} {row['status']}")
        bar.update()

    previous = _install_sigterm()
    try:
        if workers == 1 or len(todo) <= 1:
            for key in todo:
                bar.set_postfix_str(key)
                record = refset.load(key)  # a corrupt file stops the run (ReferenceDataError)
                done(key, evaluate_molecule(functional, record, settings, device=device,
                                            dtype=_DTYPES[dtype], excitations=excitations))
        else:
            functional.close()  # each worker has its own functional process
            threads = max(1, (os.cpu_count() or 1) // workers)
            init = (threads, functional_kwargs, str(refset.root), device, dtype, excitations)
            _Pool(workers, init).run(todo, done)
    finally:
        _restore_sigterm(previous)
        bar.close()
        functional.close()

    ordered = [rows[e.key] for e in entries]
    stage_sums = {c: sum(float(r.get(c) or 0.0) for r in ordered) for c in STAGE_COLUMNS}
    summary: dict[str, Any] = {
        "summary_format": SUMMARY_FORMAT,
        "submission": sub.name,
        "split": split,
        "protocol_version": harness.PROTOCOL_VERSION,
        # the molecules scored when --molecule restricted the split; null = the whole split
        "subset": [e.key for e in entries] if keys else None,
        **summarize(ordered, n_split=n_split, excitations_run=excitations is not None),
        "provenance": {
            "harness_version": harness.__version__,
            "git": git_info(),
            "scoring_sha256": scoring_sha256(),
            "evaluation_settings": eval_settings.to_dict(),
            "settings_sha256": eval_settings.sha256(),
            "sandbox": functional.sandbox,
            "limits": limits.to_dict(),
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
            "excitations": None if excitations is None else {"stage": hook_name(excitations),
                                                             **eval_settings.excitations},
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
    summary = write_results(paths, ordered, summary)
    if not keys and summary["subset"] is None and len(ordered) != n_split:  # pragma: no cover - defensive
        raise HarnessError(f"{paths.csv}: {len(ordered)} rows for {n_split} molecules")
    return EvaluationResult(summary=summary, rows=ordered, paths=paths, computed=todo, cached=cached)


#: Version of the summary.json layout (2: statuses, coverage, scoring and settings hashes,
#: sandbox and limits, csv_sha256).
SUMMARY_FORMAT = 2


def _install_sigterm():
    """SIGTERM raises KeyboardInterrupt in the main thread, so the run stops like on Ctrl-C
    (workers killed, finished molecules kept). Returns the previous handler (None off the main
    thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


__all__ = [
    "CONV_TOL_ENERGY", "CONV_TOL_GRAD", "EvaluationError", "EvaluationResult", "ExcitationsHook",
    "MAX_CYCLE", "SUMMARY_FORMAT", "evaluate", "evaluate_molecule", "evaluation_settings", "summarize",
    "SubmissionError",
]
