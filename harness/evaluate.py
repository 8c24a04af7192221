"""``harness evaluate``: score submissions on every molecule of a split (PROTOCOL §3).

The per-molecule scoring is `harness.pipeline` (the scoring code). This module runs it over a
split, for one submission or several in one batch: it reads each submission's YAML and hashes
(never its code: the functional runs in its own process, `harness.remote.RemoteFunctional`,
sandboxed by bwrap where it works), checks the reference files, serves finished molecules from
the cache, and hands the rest to `harness.executor` as (submission, molecule) tasks
(`evaluate_task`): in this process, a local pool, or Dask workers. A task carries what it needs
(`EvaluationJob`: the submission's files and settings; `harness.executor.RecordRef`: the
molecule's reference file), verified where it runs. This process alone writes the files: each
molecule's cache file as its row arrives, then the CSV and the summary as one unit.

Failures are rows with a status (`harness.status`); a ``harness_error`` row (including a task
whose worker died, or whose files arrived altered) is never cached and makes the command exit
non-zero. Every molecule counts; none is dropped. SIGINT and SIGTERM stop the run and its
workers (the functional processes die with them), keeping finished molecules.

Results are cached per molecule (`harness.results`), so an interrupted evaluation continues
where it stopped and a rerun recomputes nothing. The cache key holds the submission's files,
the reference manifest, the harness's scoring code and the evaluation settings
(`harness.provenance`), the sandbox, device and dtype; a timeout or memory row is reused only
under the same limits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

import harness
from harness.errors import HarnessError
from harness.executor import (
    FileBundle,
    Outcome,
    PayloadError,
    RecordRef,
    Task,
    clear_worker_cache,
    current_threads,
    make_executor,
    seed_worker_cache,
    worker_cached,
    worker_scratch,
)
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

from harness.summary_schema import SUMMARY_FORMAT, check as check_summary
from harness.submission import Submission, SubmissionError, load_submission, submission_sha256  # noqa: F401

_DTYPES = {"float64": torch.float64, "float32": torch.float32}

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
# the task a worker runs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationJob:
    """Everything a worker needs to score molecules of one submission (`evaluate_task`):
    the submission's files (`harness.executor.FileBundle`, verified where they land) and their
    combined sha256, the functional's limits and sandbox, the reference settings, and how to run."""

    submission: FileBundle
    combined_sha256: str
    name: str
    limits: Limits
    sandbox: str
    hide: tuple[str, ...]
    settings: Any  # harness.reference.settings.ReferenceSettings
    device: str
    dtype: str
    excitations: ExcitationsHook | None

    @property
    def functional_key(self) -> tuple:
        return (self.combined_sha256, tuple(self.limits.to_dict().items()), self.sandbox, self.hide)


def _start_functional(job: EvaluationJob) -> RemoteFunctional:
    folder = job.submission.materialize()
    if job.submission.folder is None:  # shipped: the unpacked files must be the submission scored
        got = submission_sha256(folder)["combined"]
        if got != job.combined_sha256:
            raise PayloadError(f"{job.name}: the submission unpacked on this worker hashes to {got[:12]}…, "
                               f"not {job.combined_sha256[:12]}…; refused")
    records = worker_scratch() / "records"
    records.mkdir(exist_ok=True)
    functional = RemoteFunctional(folder, limits=job.limits, sandbox=job.sandbox, name=job.name,
                                  hide=[*job.hide, str(records)], threads=current_threads())
    return functional.start()


def evaluate_task(job: EvaluationJob, record: RecordRef) -> dict:
    """Score one molecule of ``job``'s submission: the row of `harness.pipeline.evaluate_molecule`.
    The functional's process is started once per worker and submission and kept for the next."""
    functional = worker_cached("functional", job.functional_key, lambda: _start_functional(job), keep=1,
                               close=RemoteFunctional.close)
    rec = record.load()  # a corrupt file is the reference's problem: ReferenceDataError stops the run
    return evaluate_molecule(functional, rec, job.settings, device=job.device, dtype=_DTYPES[job.dtype],
                             excitations=job.excitations)


def _submission_files(folder: Path) -> list[str]:
    """Every file of a submission folder that travels to a worker (not checkpoints, caches, dot files)."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or any(part.startswith(".") or part in ("__pycache__", "checkpoints") for part in rel.parts):
            continue
        out.append(rel.as_posix())
    return out


def failed_row(key: str, outcome: Outcome) -> dict:
    """The ``harness_error`` row of a task that did not return one (never cached)."""
    row = empty_row(key)
    where = "" if outcome.lost_worker is not None else "harness worker failed: "
    message = f"{key}: {where}{outcome.reason}"
    row.update(status=Status.HARNESS_ERROR.value, error=message)
    return row


# ------------------------------------------------------------------------------------------
# the whole split, for one submission or several
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


@dataclass
class _Run:
    """One submission's part of an evaluation: its files, cache key, rows and what is left."""

    sub: Submission
    hashes: dict
    job: EvaluationJob
    paths: ResultPaths
    ckey: str
    sandbox: str
    rows: dict[str, dict] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)


def evaluate(submission_dir: str | Path, split: str = "test", reference: str | Path | None = None,
             **kwargs: Any) -> EvaluationResult:
    """Evaluate one submission (`evaluate_many` with one folder; same options)."""
    return evaluate_many([submission_dir], split, reference, **kwargs)[0]


def _reference_set(reference: str | Path | None) -> ReferenceSet:
    """The reference folder ``reference``, or the bundled set when None."""
    from harness.reference.pins import BUNDLED_REFERENCE_DIR

    return ReferenceSet(Path(reference) if reference is not None else BUNDLED_REFERENCE_DIR)


def _evaluation_limits(limits: Limits | None) -> Limits:
    """``limits``, checked, or the default (`Limits`' wall time, `default_memory_gb` GB)."""
    limits = limits or Limits(memory_gb=default_memory_gb())
    if not limits.timeout_s > 0:
        raise EvaluationError(f"--timeout-s must be positive, got {limits.timeout_s}")
    if limits.memory_gb is not None and not limits.memory_gb > 0:
        raise EvaluationError(f"--memory-gb must be positive, got {limits.memory_gb}")
    return limits


def _cache_key(hashes: dict, refset: ReferenceSet, device: str, dtype: str,
               excitations: ExcitationsHook | None, sandbox: str) -> dict:
    """The per-molecule cache key of one submission's evaluation (`harness.results.cache_key`)."""
    return cache_key(hashes["combined"], refset.manifest_sha256, device, dtype, hook_name(excitations),
                     scoring=scoring_sha256(), settings=evaluation_settings(excitations).sha256(), sandbox=sandbox)


def molecules_to_compute(submission_dir: str | Path, split: str = "test", reference: str | Path | None = None, *,
                         out: str | Path = "results", device: str = "cpu", dtype: str = "float64",
                         excitations: ExcitationsHook | None = None, sandbox: str = "auto",
                         limits: Limits | None = None) -> list[str]:
    """The molecules of ``split`` that `evaluate_many` would compute for ``submission_dir`` instead
    of taking them from the cache in ``out``: missing, unreadable, or cached under another key
    (submission files, reference, scoring code, settings, sandbox, device, dtype), in split order.
    Computes nothing and starts no process."""
    from harness.sandbox import resolve_sandbox

    sub = load_submission(submission_dir)
    refset = _reference_set(reference)
    ckey = _cache_key(submission_sha256(sub.folder), refset, _check_device(device), dtype, excitations,
                      resolve_sandbox(sandbox))
    paths = ResultPaths.of(Path(out), sub.name, split)
    limits = _evaluation_limits(limits)
    return [e.key for e in refset.select(split)
            if read_molecule(paths, e.key, ckey, limits=limits.to_dict()) is None]


def evaluate_many(
    submission_dirs: Sequence[str | Path],
    split: str = "test",
    reference: str | Path | None = None,
    *,
    out: str | Path = "results",
    device: str = "cpu",
    dtype: str = "float64",
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    excitations: ExcitationsHook | None = None,
    keys: Sequence[str] | None = None,
    recompute: bool = False,
    limits: Limits | None = None,
    sandbox: str = "auto",
) -> list[EvaluationResult]:
    """Evaluate every folder of ``submission_dirs`` on ``split`` of ``reference`` (default: the
    bundled set) as one batch of (submission, molecule) tasks, and write
    ``out/<name>/<split>/{molecules/*.json, per_molecule.csv, summary.json}`` for each.

    ``workers``: molecules in parallel on this machine; ``scheduler``: run the tasks on Dask
    instead (``local:N``, an address or a scheduler file; `harness.executor`). ``keys``
    restricts the evaluation to these molecules of the split; ``recompute`` ignores the cache;
    ``limits`` are the per-molecule wall-time and memory limits of the functional's process
    (default: 1800 s, `default_memory_gb`), on whichever machine it runs; ``sandbox``:
    ``auto``, ``bwrap`` or ``none`` (`harness.sandbox`). Raises `SubmissionError`,
    `ReferenceDataError`, `EvaluationError` or `ExecutorError` when the evaluation cannot
    start; molecule failures become rows.
    """
    from tqdm.auto import tqdm

    t_total = time.perf_counter()
    if not submission_dirs:
        raise EvaluationError("no submission folder given")
    if workers < 1:
        raise EvaluationError(f"--workers must be at least 1, got {workers}")
    if dtype not in _DTYPES:
        raise EvaluationError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    device = _check_device(device)
    limits = _evaluation_limits(limits)
    out = Path(out)
    _check_out(out)

    # the submissions: YAML and hashes here; their code only in their own processes
    subs: list[Submission] = [load_submission(d) for d in submission_dirs]
    names = [s.name for s in subs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EvaluationError(f"submission name(s) {twice} given more than once; their results would share a folder")

    # the reference: manifest (pinned when bundled) and the split's files
    refset = _reference_set(reference)
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
    eval_settings = evaluation_settings(excitations)
    hide = (str(refset.root.resolve()), str(out.resolve()))

    executor = make_executor(workers, scheduler)
    runs: list[_Run] = []
    try:
        for sub in subs:
            hashes = submission_sha256(sub.folder)
            bundle = FileBundle.of(sub.folder, _submission_files(sub.folder), ship=executor.ships_files)
            # load the submission in its own process here first: a broken one stops the run, one line
            functional = RemoteFunctional(sub.folder, limits=limits, sandbox=sandbox, hide=list(hide), name=sub.name)
            functional.start()
            resolved_sandbox = functional.sandbox
            # workers use the sandbox resolved here ("auto" decided once): a worker that cannot give
            # it fails its tasks (harness_error) rather than score with less isolation than recorded
            job = EvaluationJob(submission=bundle, combined_sha256=hashes["combined"], name=sub.name, limits=limits,
                                sandbox=resolved_sandbox, hide=hide, settings=settings, device=device, dtype=dtype,
                                excitations=excitations)
            if executor.kind == "inline":  # this process is the worker: keep the started process
                seed_worker_cache("functional", job.functional_key, functional, close=RemoteFunctional.close)
            else:
                functional.close()
            paths = ResultPaths.of(out, sub.name, split)
            paths.prepare()
            ckey = _cache_key(hashes, refset, device, dtype, excitations, resolved_sandbox)
            run = _Run(sub, hashes, job, paths, ckey, resolved_sandbox)
            for e in entries:
                row = None if recompute else read_molecule(paths, e.key, ckey, limits=limits.to_dict())
                if row is not None:
                    run.rows[e.key] = row
                    run.cached.append(e.key)
                else:
                    run.todo.append(e.key)
            runs.append(run)

        tasks = [Task(f"{sub_i}:{key}", evaluate_task, (run.job, RecordRef.of(refset, key, executor.ships_files)))
                 for sub_i, run in enumerate(runs) for key in run.todo]
        n_cached = sum(len(r.cached) for r in runs)
        label = subs[0].name if len(subs) == 1 else f"{len(subs)} submissions"
        bar = tqdm(total=len(entries) * len(runs), initial=n_cached, desc=f"evaluate {label}", unit="mol",
                   disable=not progress, smoothing=0.1)

        def done(outcome: Outcome) -> None:
            sub_i, key = outcome.task.key.split(":", 1)
            run = runs[int(sub_i)]
            if outcome.ok:
                row = outcome.value
            elif isinstance(outcome.error, ReferenceDataError):
                raise outcome.error
            else:
                row = failed_row(key, outcome)
            if Status(row["status"]).cacheable:
                write_molecule(run.paths, key, run.ckey, row, limits=limits.to_dict())
            run.rows[key] = row
            bar.set_postfix_str(f"{key} {row['status']}" + ("" if len(runs) == 1 else f" ({run.sub.name})"))
            bar.update()

        previous = _install_sigterm()
        try:
            executor.map(tasks, done)
        finally:
            _restore_sigterm(previous)
            bar.close()
    finally:
        clear_worker_cache("functional")
        executor.close()

    results = []
    for run in runs:
        ordered = [run.rows[e.key] for e in entries]
        summary = _summary(run, ordered, entries, n_split, bool(keys), split, refset, settings, eval_settings,
                           excitations, limits, device, dtype, executor, time.perf_counter() - t_total)
        check_summary({**summary, "csv_sha256": ""})  # the writer's own check, before anything is written
        summary = write_results(run.paths, ordered, summary)
        if not keys and len(ordered) != n_split:  # pragma: no cover - defensive
            raise HarnessError(f"{run.paths.csv}: {len(ordered)} rows for {n_split} molecules")
        results.append(EvaluationResult(summary=summary, rows=ordered, paths=run.paths, computed=run.todo,
                                        cached=run.cached))
    return results


def _summary(run: _Run, ordered: list[dict], entries, n_split: int, subset: bool, split: str, refset, settings,
             eval_settings, excitations, limits: Limits, device: str, dtype: str, executor, wall_total: float) -> dict:
    sub, hashes = run.sub, run.hashes
    stage_sums = {c: sum(float(r.get(c) or 0.0) for r in ordered) for c in STAGE_COLUMNS}
    summary: dict[str, Any] = {
        "summary_format": SUMMARY_FORMAT,
        "submission": sub.name,
        "split": split,
        "protocol_version": harness.PROTOCOL_VERSION,
        # the molecules scored when --molecule restricted the split; null = the whole split
        "subset": [e.key for e in entries] if subset else None,
        **summarize(ordered, n_split=n_split, excitations_run=excitations is not None),
        "provenance": {
            "harness_version": harness.__version__,
            "git": git_info(),
            "scoring_sha256": scoring_sha256(),
            "evaluation_settings": eval_settings.to_dict(),
            "settings_sha256": eval_settings.sha256(),
            "sandbox": run.sandbox,
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
            "workers": executor.workers,
            "executor": executor.kind,
            "model_scf": {"max_cycle": MAX_CYCLE, "conv_tol_energy_Eh": CONV_TOL_ENERGY,
                          "conv_tol_grad": CONV_TOL_GRAD},
            "excitations": None if excitations is None else {"stage": hook_name(excitations),
                                                             **eval_settings.excitations},
        },
        "wall_s": {
            "total": wall_total,
            "molecules_sum": stage_sums["wall_s"],
            "setup_sum": stage_sums["setup_wall_s"],
            "model_scf_sum": stage_sums["model_scf_wall_s"],
            "excitations_sum": stage_sums["excitations_wall_s"],
            "metrics_sum": stage_sums["metrics_wall_s"],
        },
        "n_computed_this_run": len(run.todo),
        "n_cached": len(run.cached),
    }
    return summary


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
    "MAX_CYCLE", "SUMMARY_FORMAT", "EvaluationJob", "evaluate", "evaluate_many", "evaluate_molecule", "evaluate_task", "evaluation_settings",
    "molecules_to_compute", "summarize",
    "SubmissionError",
]
