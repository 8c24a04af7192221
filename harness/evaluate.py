"""``harness evaluate``: score one submission on every molecule of a split (PROTOCOL §3).

The per-molecule scoring is `harness.pipeline` (the scoring code). This module runs it over a
split: it reads the submission's YAML and hashes (never its code: the functional runs in its
own process, `harness.remote.RemoteFunctional`, sandboxed by bwrap where it works), checks the
reference files, serves finished molecules from the cache, runs the rest in this process or in
a pool of worker processes (`_Pool`), and writes the CSV and the summary as one unit.

Failures are rows with a status (`harness.status`); a ``harness_error`` row is never cached and
makes the command exit non-zero. Every molecule counts; none is dropped. SIGINT and SIGTERM stop
the run and its workers (the functional processes die with them), keeping finished molecules.

Results are cached per molecule (`harness.results`), so an interrupted evaluation continues
where it stopped and a rerun recomputes nothing. The cache key holds the submission's files,
the reference manifest, the harness's scoring code and the evaluation settings
(`harness.provenance`), the sandbox, device and dtype; a timeout or memory row is reused only
under the same limits.
"""

from __future__ import annotations

import concurrent.futures as cf
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
from harness.errors import HarnessError
from harness.pipeline import (  # the scoring code; re-exported for callers of harness.evaluate
    CONV_TOL_ENERGY,
    CONV_TOL_GRAD,
    MAX_CYCLE,
    ExcitationsHook,
    empty_row,
    evaluate_molecule,
    evaluation_settings,
    hook_name,
    summarize,
)
from harness.provenance import scoring_sha256
from harness.reference.store import ReferenceDataError, ReferenceSet
from harness.remote import Limits, RemoteFunctional
from harness.results import (
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
from harness.status import Status

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
from harness.summary_schema import SUMMARY_FORMAT, check as check_summary
from harness.submission import Submission, SubmissionError, load_submission, submission_sha256  # noqa: F401

class EvaluationError(HarnessError, RuntimeError):
    """The evaluation cannot run at all (bad submission, reference or options); one clear line."""


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
    check_summary({**summary, "csv_sha256": ""})  # the writer's own check, before anything is written
    summary = write_results(paths, ordered, summary)
    if not keys and summary["subset"] is None and len(ordered) != n_split:  # pragma: no cover - defensive
        raise HarnessError(f"{paths.csv}: {len(ordered)} rows for {n_split} molecules")
    return EvaluationResult(summary=summary, rows=ordered, paths=paths, computed=todo, cached=cached)


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
