"""One executor for every batch of independent work: evaluation, reference builds, training.

An evaluation is (submission, molecule) tasks, a reference build one task per geometry, a
training step one task per molecule. None depends on another, so they all go through the same
layer, which has three backends:

* ``inline``: the tasks run one after the other in this process (``--workers 1``);
* ``pool``: ``N`` spawned worker processes on this machine (``--workers N``), each with
  cores/N threads; a worker killed from outside (``BrokenProcessPool``) fails only the tasks
  it was running, and they are retried once in a fresh pool;
* ``dask``: a `Dask distributed <https://distributed.dask.org>`_ cluster (``--scheduler``):
  ``local:N`` starts a `LocalCluster` of N single-thread worker processes; an address
  (``tcp://host:8786``) or a scheduler file connects to a running scheduler, e.g. one whose
  workers `dask-jobqueue` started through Slurm or PBS. Dask reschedules the tasks of a worker
  that dies (``distributed.scheduler.allowed-failures`` times, then ``KilledWorker``).

The caller hands over `Task` objects (a key, a module-level function, its arguments) and a
callback; each task's `Outcome` reaches the callback in this process as soon as it is known,
so the caller writes its files as results arrive and an interrupted run resumes from them.
Only the caller (the client) writes result files; workers only compute.

Workers need no shared filesystem. Whatever a task reads travels with it and is verified
where it lands: a `FileBundle` (a submission's files) and a `RecordRef` (one reference
geometry) carry their bytes and sha256 when shipped to a cluster, or just a path and the
expected sha256 on this machine; `PayloadError` names the file that does not match.

State that is costly to build (a submission's functional process, a training geometry's grid)
is kept per worker thread by `worker_cached`, so a worker pays for it once, not once per task.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.allocator import WATCHED_TRIM_THRESHOLD_BYTES, tune_allocator
from harness.errors import HarnessError
from harness.io import sha256_bytes

#: seconds a client waits for a scheduler to answer before it gives up
CONNECT_TIMEOUT_S = 10.0
BACKENDS = ("inline", "pool", "dask")


class ExecutorError(HarnessError, RuntimeError):
    """The executor cannot run (unreachable scheduler, bad option); one line naming the cause."""


class PayloadError(HarnessError, RuntimeError):
    """A file that travelled with a task does not match its sha256 (names the file)."""


# --------------------------------------------------------------------------------------------
# tasks and outcomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)``; ``fn`` must be a module-level function (it is sent to
    other processes by reference). ``key`` identifies it to the caller."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()


@dataclass
class Outcome:
    """What became of a task: its ``value``, or the ``error`` it raised, or ``lost_worker``
    when the process running it died (after the backend's retries)."""

    task: Task
    value: Any = None
    error: BaseException | None = None
    lost_worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost_worker is None

    @property
    def reason(self) -> str:
        """Why the task failed, one line ("ok" when it did not)."""
        if self.lost_worker is not None:
            return self.lost_worker
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        return "ok"

    def describe(self) -> str:
        """The task's key and `reason`."""
        return f"{self.task.key}: {self.reason}"


Done = Callable[[Outcome], None]


# --------------------------------------------------------------------------------------------
# worker-side state
# --------------------------------------------------------------------------------------------

_LOCAL = threading.local()


def worker_cached(kind: str, key: Any, factory: Callable[[], Any], *, keep: int | None = 1,
                  close: Callable[[Any], None] | None = None) -> Any:
    """The object of ``kind`` for ``key`` in this worker thread, built by ``factory`` the first
    time. At most ``keep`` objects of a kind are kept (None: all); the least recently used one
    is dropped, and ``close`` is called on it."""
    caches = getattr(_LOCAL, "caches", None)
    if caches is None:
        caches = _LOCAL.caches = {}
    cache: OrderedDict = caches.setdefault(kind, OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key][0]
    value = factory()
    cache[key] = (value, close)
    while keep is not None and len(cache) > keep:
        _, (old, old_close) = cache.popitem(last=False)
        if old_close is not None:
            old_close(old)
    return value


def seed_worker_cache(kind: str, key: Any, value: Any, close: Callable[[Any], None] | None = None) -> None:
    """Put an object built elsewhere into this thread's cache (``inline`` reuse)."""
    worker_cached(kind, key, lambda: value, close=close)


def clear_worker_cache(kind: str | None = None) -> None:
    """Drop (and close) this thread's cached objects, of one kind or all."""
    caches = getattr(_LOCAL, "caches", None) or {}
    for k in [kind] if kind is not None else list(caches):
        for value, close in (caches.pop(k, None) or {}).values():
            if close is not None:
                close(value)


_SCRATCH: dict[int, Path] = {}


def worker_scratch() -> Path:
    """A private folder of this worker process, removed when it exits."""
    pid = os.getpid()
    if pid not in _SCRATCH:
        _SCRATCH[pid] = Path(tempfile.mkdtemp(prefix="xc-harness-worker-"))
        atexit.register(shutil.rmtree, _SCRATCH[pid], True)
    return _SCRATCH[pid]


def set_threads(threads: int | None) -> None:
    """torch and PySCF (OpenMP) threads of this process; None leaves them as they are."""
    if threads is None or getattr(_LOCAL, "threads", None) == threads:
        return
    import torch

    torch.set_num_threads(int(threads))
    try:
        from pyscf import lib

        lib.num_threads(int(threads))
    except Exception:  # pragma: no cover - PySCF without OpenMP
        pass
    _LOCAL.threads = threads


def current_threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------
# what travels with a task
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileBundle:
    """A folder that travels with its tasks: ``files`` is ``(relative path, sha256, bytes)``;
    bytes are None when the folder is on this machine (``folder``). `materialize` verifies every
    file against its sha256 and returns a local folder holding exactly these files."""

    name: str
    files: tuple[tuple[str, str, bytes | None], ...]
    folder: str | None = None

    @classmethod
    def of(cls, folder: str | Path, rel_paths: Iterable[str], ship: bool) -> "FileBundle":
        folder = Path(folder).resolve()
        files = []
        for rel in sorted(set(rel_paths)):
            data = (folder / rel).read_bytes()
            files.append((rel, sha256_bytes(data), data if ship else None))
        return cls(folder.name, tuple(files), None if ship else str(folder))

    @property
    def digest(self) -> str:
        """sha256 over the (path, sha256) pairs: the bundle's identity."""
        return sha256_bytes("\n".join(f"{rel}\0{sha}" for rel, sha, _ in self.files).encode())

    def materialize(self) -> Path:
        """The verified local folder (unpacked once per worker process for a shipped bundle)."""
        if self.folder is not None:
            root = Path(self.folder)
            for rel, sha, _ in self.files:
                path = root / rel
                try:
                    actual = sha256_bytes(path.read_bytes())
                except OSError as exc:
                    raise PayloadError(f"{path}: cannot read ({exc})") from exc
                if actual != sha:
                    raise PayloadError(f"{path}: sha256 {actual[:12]}… differs from {sha[:12]}…, recorded when the "
                                       "run started (the file changed during the run)")
            return root
        root = worker_scratch() / "bundles" / self.digest[:24] / self.name
        marker = root.parent / ".complete"
        if marker.is_file():
            return root
        for rel, sha, data in self.files:
            actual = sha256_bytes(data or b"")
            if actual != sha:
                raise PayloadError(f"{self.name}/{rel}: sha256 {actual[:12]}… on arrival differs from the "
                                   f"{sha[:12]}… it was sent with; the file was altered on the way, refused")
        for rel, _sha, data in self.files:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data or b"")
        marker.write_text("ok")
        return root


@dataclass(frozen=True)
class RecordRef:
    """One reference geometry for a task: its manifest ``key`` and ``sha256``, with the file's
    ``data`` (shipped) or its ``path`` (this machine). `load` verifies, then reads."""

    key: str
    sha256: str
    path: str | None = None
    data: bytes | None = None

    @classmethod
    def of(cls, refset, key: str, ship: bool) -> "RecordRef":
        entry = refset.entry(key)
        path = refset.path(entry)
        if ship:
            refset.check_file(entry)
            return cls(key, entry.sha256, data=path.read_bytes())
        return cls(key, entry.sha256, path=str(path))

    def load(self):
        """The `ReferenceRecord`, after its sha256 is checked against the manifest's."""
        from harness.reference.store import ReferenceDataError, read_record

        if self.data is None:
            path = Path(self.path or "")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ReferenceDataError(f"{path}: missing reference file for {self.key} ({exc})") from exc
            if sha256_bytes(data) != self.sha256:
                raise ReferenceDataError(f"{path}: checksum mismatch for {self.key} (manifest {self.sha256[:12]}…); "
                                         "the file is corrupt or was modified")
            record = read_record(path)
        else:
            if sha256_bytes(self.data) != self.sha256:
                raise PayloadError(f"reference file of {self.key}: sha256 on arrival differs from the manifest's "
                                   f"{self.sha256[:12]}…; altered on the way, refused")
            fd, tmp = tempfile.mkstemp(prefix=".record-", suffix=".h5", dir=worker_scratch())
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self.data)
                record = read_record(tmp)
            finally:
                os.unlink(tmp)
        if record.key != self.key:
            raise ReferenceDataError(f"reference file of {self.key} holds {record.key!r}")
        return record


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a killed client leaves no workers)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _init_pool_worker(threads: int) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client stops the run
    tune_allocator()
    set_threads(threads)


def restore_malloc_defaults() -> None:
    """Undo the ``MALLOC_TRIM_THRESHOLD_`` that Dask's nanny puts into its workers' environment.

    Setting it turns off glibc's dynamic mmap threshold, so every array above 128 KiB becomes a
    fresh ``mmap`` whose pages fault in again on each allocation; the SCF and TDDFT allocate such
    arrays all the time (measured: PBE on the tiny split 1.8× slower per molecule). This applies
    `harness.allocator.tune_allocator` with a 64 MiB trim threshold (so the nanny still sees
    memory come back) and drops the variable, so that the functional's process, started from
    here, does not inherit it."""
    if os.environ.pop("MALLOC_TRIM_THRESHOLD_", None) is None:
        return
    tune_allocator(trim_threshold_bytes=WATCHED_TRIM_THRESHOLD_BYTES)


def _run(fn: Callable[..., Any], threads: int | None, args: tuple) -> Any:
    """What every worker runs: set the threads, then the task."""
    restore_malloc_defaults()
    set_threads(threads)
    return fn(*args)


class Executor:
    """Runs `Task` objects and reports each `Outcome` to ``done`` as it arrives (`map`).

    ``kind`` is the backend (`BACKENDS`); ``workers`` how many tasks run at once; ``threads``
    the torch/PySCF threads of each task (None: this process's own, ``inline``);
    ``ships_files``: whether tasks must carry their files (no shared filesystem)."""

    kind = "inline"
    ships_files = False

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.workers = workers
        self.threads = threads

    def describe(self) -> str:
        return "this process"

    def map(self, tasks: Sequence[Task], done: Done) -> None:
        for task in tasks:
            try:
                value = _run(task.fn, self.threads, task.args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                done(Outcome(task, error=exc))
            else:
                done(Outcome(task, value=value))

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PoolExecutor(Executor):
    """``workers`` spawned processes on this machine, each with cores/workers threads."""

    kind = "pool"

    def __init__(self, workers: int):
        super().__init__(workers, max(1, (os.cpu_count() or 1) // workers))
        self._ex: cf.ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"a local pool of {self.workers} processes × {self.threads} threads"

    def _new(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                      initializer=_init_pool_worker, initargs=(self.threads,))

    def close(self) -> None:
        ex, self._ex = self._ex, None
        if ex is None:
            return
        for p in list(getattr(ex, "_processes", {}).values()):
            try:
                p.kill()
            except Exception:  # pragma: no cover
                pass
        ex.shutdown(wait=False, cancel_futures=True)

    def map(self, tasks: Sequence[Task], done: Done) -> None:
        """When a worker dies, the pool breaks and every task in flight fails with it, so the
        culprit is unknown. Those tasks become suspects and are rerun one at a time; a task is
        reported lost only when the pool died again while it ran alone, so a crash is never
        charged to a task that happened to share the pool."""
        pending = list(tasks)
        suspects: list[Task] = []
        suspected: set[int] = set()  # ids of tasks that were in flight when the pool died
        if self._ex is None:
            self._ex = self._new()
        running: dict[cf.Future, Task] = {}
        try:
            while pending or suspects or running:
                queue, room = (suspects, 1) if suspects else (pending, self.workers)  # a suspect runs alone
                while queue and len(running) < room:
                    t = queue.pop(0)
                    running[self._ex.submit(_run, t.fn, None, t.args)] = t
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                alone = len(running) == 1
                broken: list[Task] = []
                for fut in finished:
                    task = running.pop(fut)
                    try:
                        value = fut.result()
                    except cf.process.BrokenProcessPool:
                        broken.append(task)
                    except Exception as exc:
                        done(Outcome(task, error=exc))
                    else:
                        done(Outcome(task, value=value))
                if broken:  # the pool is gone with all the work in flight; start a fresh one
                    lost = list(running.values()) + broken
                    running.clear()
                    self.close()
                    self._ex = self._new()
                    if alone and id(lost[0]) in suspected:
                        done(Outcome(lost[0], lost_worker="the worker process died twice on this task, the "
                                                          "second time running alone (killed from outside, "
                                                          "or out of memory)"))
                        continue
                    for t in lost:
                        suspected.add(id(t))
                    suspects[:0] = lost
        except BaseException:
            self.close()
            raise


class DaskExecutor(Executor):
    """Tasks on a Dask distributed cluster (``scheduler``: ``local:N``, an address, or a
    scheduler file). Tasks carry their files; results come back to this process."""

    kind = "dask"
    ships_files = True

    def __init__(self, scheduler: str):
        try:
            import distributed
        except ImportError:  # pragma: no cover - a core dependency
            raise ExecutorError("--scheduler needs Dask distributed: pip install 'distributed'") from None
        self.scheduler = scheduler
        self.cluster = None
        if scheduler.startswith("local:"):
            try:
                n = int(scheduler.split(":", 1)[1])
            except ValueError:
                n = 0
            if n < 1:
                raise ExecutorError(f"--scheduler {scheduler}: expected local:N with N ≥ 1 worker processes")
            # memory_limit=0: the evaluation's own per-molecule limits apply (harness.remote);
            # Dask's would count only the worker, not the functional's process
            self.cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                    memory_limit=0, dashboard_address=":0",
                                                    silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster)
            threads = max(1, (os.cpu_count() or 1) // n)
        else:
            kw: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
            # an address has a protocol (tcp://…) or is host:port; a scheduler file is a path
            is_file = "://" not in scheduler and (scheduler.endswith(".json") or os.sep in scheduler
                                                  or Path(scheduler).is_file())
            if is_file:
                if not Path(scheduler).is_file():
                    raise ExecutorError(f"--scheduler {scheduler}: no such scheduler file")
                kw["scheduler_file"] = scheduler
            else:
                kw["address"] = scheduler
            try:
                self.client = distributed.Client(**kw)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ExecutorError(f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'})"
                                    ) from None
            threads = self._threads_per_task()
        n_workers = sum(w.get("nthreads", 1) for w in self.client.scheduler_info(n_workers=-1)["workers"].values())
        super().__init__(max(1, n_workers), threads)

    def _threads_per_task(self) -> int:
        """cores / worker threads on the most crowded host (every task gets the same)."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        if not info:
            return 1
        cpus = self.client.run(os.cpu_count)
        per_host: dict[str, list[int]] = {}
        for addr, w in info.items():
            per_host.setdefault(w.get("host", addr), [0, int(cpus.get(addr) or 1)])[0] += int(w.get("nthreads", 1))
        return max(1, min(c // max(1, n) for n, c in per_host.values()))

    def describe(self) -> str:
        where = f"a local Dask cluster ({self.scheduler})" if self.cluster is not None else \
            f"the Dask scheduler {self.scheduler}"
        return f"{where}: {self.workers} worker threads × {self.threads} threads per task"

    def close(self) -> None:
        for obj in (getattr(self, "client", None), self.cluster):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # pragma: no cover - best effort at shutdown
                    pass
        self.cluster = None

    def map(self, tasks: Sequence[Task], done: Done) -> None:
        import distributed

        if not tasks:
            return
        token = os.urandom(4).hex()
        futures = {}
        for i, t in enumerate(tasks):
            fut = self.client.submit(_run, t.fn, self.threads, t.args, key=f"xc-harness-{token}-{i}-{t.key}",
                                     pure=False, priority=-i)
            futures[fut] = t
        try:
            for fut in distributed.as_completed(futures):
                task = futures.pop(fut)
                if fut.status == "finished":
                    done(Outcome(task, value=fut.result()))
                    continue
                exc = fut.exception()
                if isinstance(exc, distributed.KilledWorker):
                    done(Outcome(task, lost_worker="every Dask worker that ran it died (killed from outside, or "
                                                   "out of memory) until distributed.scheduler.allowed-failures "
                                                   "was reached"))
                else:
                    done(Outcome(task, error=exc))
                fut.release()
        finally:
            if futures:
                self.client.cancel(list(futures))


def add_scheduler_argument(parser, what: str) -> None:
    """The ``--scheduler`` option, the same for every command that runs tasks (``what``: the tasks)."""
    parser.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help=f"run {what} on Dask distributed instead of this machine's processes: 'local:N' starts a local "
        "cluster of N worker processes; 'tcp://host:8786' or a scheduler file (JSON) connects to a running "
        "scheduler, e.g. one started by dask-jobqueue on Slurm/PBS. Workers need the same pip install and no "
        "shared filesystem (docs/distributed.md); overrides --workers")


def make_executor(workers: int = 1, scheduler: str | None = None) -> Executor:
    """The backend for ``--workers`` and ``--scheduler`` (which wins when given)."""
    if scheduler:
        return DaskExecutor(scheduler)
    if workers < 1:
        raise ExecutorError(f"--workers must be at least 1, got {workers}")
    return Executor() if workers == 1 else PoolExecutor(workers)


__all__ = [
    "BACKENDS", "CONNECT_TIMEOUT_S", "add_scheduler_argument", "DaskExecutor", "Executor", "ExecutorError", "FileBundle", "Outcome",
    "PayloadError", "PoolExecutor", "RecordRef", "Task", "clear_worker_cache", "current_threads", "die_with_parent",
    "make_executor", "seed_worker_cache", "set_threads", "worker_cached", "worker_scratch",
]
