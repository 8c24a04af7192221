"""`harness.executor` with real Dask processes on this machine (loopback only): evaluate, reference
build and a training step give the local numbers; a killed worker's task is rescheduled; an
interrupted client resumes from its cache; tampered files are refused; an unreachable scheduler
is one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.executor import (
    DaskExecutor,
    Executor,
    ExecutorError,
    FileBundle,
    Outcome,
    PayloadError,
    PoolExecutor,
    RecordRef,
    Task,
    clear_worker_cache,
    make_executor,
    worker_cached,
)
from harness.reference.pins import BUNDLED_REFERENCE_DIR
from harness.reference.store import ReferenceSet

REPO = Path(__file__).resolve().parents[1]
PBE = REPO / "submissions" / "pbe"
HARNESS = [sys.executable, "-m", "harness.cli"]
#: per-molecule columns that must agree between backends (energies in Eh or mEh)
NUMBERS = ("energy_model_Eh", "energy_error_mEh", "e_rho_mEh", "dipole_error_debye", "density_l2")


def _rows(csv_path: Path) -> dict[str, dict]:
    with open(csv_path) as f:
        return {r["key"]: r for r in csv.DictReader(f)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> dict[str, dict]:
    """PBE on the tiny split in this process (the local reference of every comparison)."""
    from harness.evaluate import evaluate

    out = tmp_path_factory.mktemp("local")
    res = evaluate(PBE, split="tiny", out=out, workers=1, progress=False)
    assert all(r["status"] == "ok" for r in res.rows)
    return _rows(res.paths.csv)


def _assert_same_numbers(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert b[key]["status"] == "ok", (key, b[key]["error"])
        for col in NUMBERS:
            if a[key].get(col, "") == "":
                continue
            tol = 1e-9 if col == "energy_model_Eh" else 1e-6  # 1e-9 Eh in every energy column
            assert abs(float(a[key][col]) - float(b[key][col])) <= tol, (key, col, a[key][col], b[key][col])


# ---------------------------------------------------------------------------------------------
# the executor itself
# ---------------------------------------------------------------------------------------------


def _square(x):
    return x * x


def _boom(x):
    raise ValueError(f"bad {x}")


def _suicide(x):
    os.kill(os.getpid(), signal.SIGKILL)


def _slow_square(x):
    time.sleep(1.0)
    return x * x


@pytest.mark.parametrize("make", [lambda: Executor(), lambda: PoolExecutor(2)], ids=["inline", "pool"])
def test_outcomes_of_every_task_reach_the_caller(make):
    got = {}
    with make() as ex:
        ex.map([Task(str(i), _square, (i,)) for i in range(4)] + [Task("bad", _boom, (7,))],
               lambda o: got.__setitem__(o.task.key, o))
    assert {k: o.value for k, o in got.items() if o.ok} == {"0": 0, "1": 1, "2": 4, "3": 9}
    assert isinstance(got["bad"].error, ValueError) and got["bad"].describe() == "bad: ValueError: bad 7"


@pytest.mark.parametrize("workers", [1, 2])
def test_pool_never_charges_a_death_to_a_task_that_shared_the_pool(workers):
    """the slow task is in flight whenever the killer runs beside it; only the killer is lost,
    reported as a worker that died twice on it (the second time alone), and the pool lives on"""
    got = {}
    tasks = [Task("slow", _slow_square, (5,)), Task("kill", _suicide, (0,)), Task("b", _square, (4,)),
             Task("slow2", _slow_square, (6,))]
    with PoolExecutor(workers) as ex:
        ex.map(tasks, lambda o: got.__setitem__(o.task.key, o))
        assert set(got) == {"slow", "kill", "b", "slow2"}
        assert {k: o.value for k, o in got.items() if k != "kill"} == {"slow": 25, "b": 16, "slow2": 36}
        assert got["kill"].lost_worker and "died twice on this task, the second time running alone" \
            in got["kill"].describe()
        got.clear()
        ex.map([Task("after", _square, (2,))], lambda o: got.__setitem__(o.task.key, o))  # the pool still works
        assert got["after"].value == 4


def test_a_task_without_a_row_is_a_harness_error_row_naming_the_molecule():
    from harness.evaluate import failed_row
    from harness.status import Status

    task = Task("0:HF", _square, (1,))
    lost = failed_row("HF", Outcome(task, lost_worker="the worker process died twice on this task"))
    err = failed_row("HF", Outcome(task, error=PayloadError("pbe/functional.py: altered")))
    for row in (lost, err):
        assert row["key"] == "HF" and row["status"] == Status.HARNESS_ERROR.value
        assert not Status(row["status"]).cacheable
    assert lost["error"] == "HF: the worker process died twice on this task"
    assert err["error"] == "HF: harness worker failed: PayloadError: pbe/functional.py: altered"


def test_worker_cache_keeps_the_newest_and_closes_the_rest():
    closed = []
    clear_worker_cache("t")
    a = worker_cached("t", 1, lambda: ["one"], close=closed.append)
    assert worker_cached("t", 1, lambda: ["other"]) is a  # built once
    worker_cached("t", 2, lambda: ["two"], close=closed.append)
    assert closed == [["one"]]
    clear_worker_cache("t")
    assert closed == [["one"], ["two"]]


def test_bundle_on_this_machine_refuses_a_file_changed_during_the_run(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    bundle = FileBundle.of(tmp_path, ["a.py"], ship=False)
    assert bundle.materialize() == tmp_path.resolve()
    (tmp_path / "a.py").write_text("x = 2\n")
    with pytest.raises(PayloadError, match="a.py"):
        bundle.materialize()


def test_shipped_bundle_is_unpacked_verified():
    bundle = FileBundle.of(PBE, ["submission.yaml", "functional.py"], ship=True)
    folder = bundle.materialize()
    assert folder != PBE.resolve() and (folder / "functional.py").read_bytes() == (PBE / "functional.py").read_bytes()


def test_restore_malloc_defaults_drops_the_nannys_setting():
    code = ("import os; os.environ['MALLOC_TRIM_THRESHOLD_'] = '65536'; "
            "from harness.executor import restore_malloc_defaults; restore_malloc_defaults(); "
            "assert 'MALLOC_TRIM_THRESHOLD_' not in os.environ")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_make_executor_options():
    assert make_executor(1).kind == "inline" and make_executor(3).kind == "pool"
    with pytest.raises(ExecutorError, match="--workers"):
        make_executor(0)
    with pytest.raises(ExecutorError, match="local:N"):
        make_executor(1, "local:zero")
    with pytest.raises(ExecutorError, match="no such scheduler file"):
        make_executor(1, "/nonexistent/scheduler.json")


def test_unreachable_scheduler_is_one_line_naming_the_address():
    address = f"tcp://127.0.0.1:{_free_port()}"
    p = subprocess.run([*HARNESS, "evaluate", str(PBE), "--split", "tiny", "--quiet", "--scheduler", address],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "cannot reach the Dask scheduler" in lines[0], p.stderr


# ---------------------------------------------------------------------------------------------
# a local Dask cluster
# ---------------------------------------------------------------------------------------------


def test_evaluate_on_local_dask_cluster_equals_local_run(local_run, tmp_path):
    out = tmp_path / "dask"
    p = subprocess.run([*HARNESS, "evaluate", str(PBE), "--split", "tiny", "--quiet", "--out", str(out),
                        "--scheduler", "local:2"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same_numbers(local_run, _rows(out / "pbe" / "tiny" / "per_molecule.csv"))
    summary = json.loads((out / "pbe" / "tiny" / "summary.json").read_text())
    assert summary["provenance"]["executor"] == "dask" and summary["provenance"]["workers"] == 2
    from harness.results import ResultPaths, check_results

    check_results(ResultPaths.of(out, "pbe", "tiny"))


def test_tampered_files_on_the_way_to_a_worker_are_refused():
    """The bytes that reach the worker differ from the sha256 they were sent with: refused there,
    naming the file (the task's error), and nothing of the submission is imported."""
    import dataclasses

    from harness.evaluate import EvaluationJob, evaluate_task
    from harness.remote import Limits

    refset = ReferenceSet(BUNDLED_REFERENCE_DIR)
    bundle = FileBundle.of(PBE, ["submission.yaml", "functional.py"], ship=True)
    files = tuple((rel, sha, data + b"\nimport os; os.system('echo owned')\n" if rel == "functional.py" else data)
                  for rel, sha, data in bundle.files)
    tampered = dataclasses.replace(bundle, files=files)
    job = EvaluationJob(submission=tampered, combined_sha256="0" * 64, name="pbe", limits=Limits(), sandbox="none",
                        hide=(), settings=refset.settings, device="cpu", dtype="float64", excitations=None)
    good = RecordRef.of(refset, "H2O", ship=True)
    mid = len(good.data) // 2
    bad_record = dataclasses.replace(good, data=good.data[:mid] + bytes([good.data[mid] ^ 0xFF]) + good.data[mid + 1:])
    got = {}
    with DaskExecutor("local:1") as ex:
        ex.map([Task("sub", evaluate_task, (job, good)), Task("ref", RecordRef.load, (bad_record,)),
                Task("env", os.getenv, ("MALLOC_TRIM_THRESHOLD_",))], lambda o: got.__setitem__(o.task.key, o))
    assert got["env"].ok and got["env"].value is None  # the nanny's malloc setting is undone (restore_malloc_defaults)
    assert isinstance(got["sub"].error, PayloadError)
    assert "pbe/functional.py" in str(got["sub"].error) and "altered on the way" in str(got["sub"].error)
    assert isinstance(got["ref"].error, PayloadError) and "H2O" in str(got["ref"].error)


def test_reference_build_on_dask_equals_the_bundled_reference(tmp_path):
    from harness.molecules import g2_closed_shell
    from harness.reference.build import PlannedGeometry, build_reference

    mols = {m.name: m for m in g2_closed_shell()}
    planned = [PlannedGeometry(mols[n], "test", ("tiny",)) for n in ("H2O", "HF")]
    report = build_reference(tmp_path / "ref", planned, scheduler="local:2", progress=False)
    assert report.ok and sorted(report.computed) == ["H2O", "HF"]
    built, bundled = ReferenceSet(tmp_path / "ref", check_pin=False), ReferenceSet(BUNDLED_REFERENCE_DIR)
    for key in ("H2O", "HF"):
        a, b = built.load(key), bundled.load(key)
        assert abs(a.energy_Eh - b.energy_Eh) < 1e-8
        assert max(abs(x - y) for x, y in zip(a.excitation_energies_eV, b.excitation_energies_eV)) < 1e-5


TRAIN_BASE = dict(arch="xcdiff", loss="di", steps=2, reference=BUNDLED_REFERENCE_DIR, split_train="tiny",
                  split_val="tiny", max_train=2, max_val=1, grid_level=0, progress=False, plot=False,
                  overrides={"di_samples": 1, "di_probes": 1, "eval_every": 1, "batch": 2})


@pytest.fixture(scope="module")
def local_step(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Two DI training steps (two molecules) in this process: the parameters after them (the
    second step's SCF and CG start from the first's solutions)."""
    from safetensors.torch import load_file

    from harness.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("train-local")
    train(TrainConfig(out=tmp / "local", cache=tmp / "cache", **TRAIN_BASE))
    return load_file(str(tmp / "local" / "checkpoints" / "last.safetensors"))


@pytest.mark.parametrize("backend", [{"workers": 2}, {"scheduler": "local:2"}], ids=["pool", "dask"])
def test_distributed_training_step_equals_the_local_step(local_step, tmp_path, backend):
    """Quick-preset settings (tiny split, two DI steps of two molecules, level-0 grid): each
    molecule's loss and gradient on another process, summed here, its warm start carried in the
    task and back; the parameters after the steps agree with the local run to rel 1e-10."""
    from safetensors.torch import load_file

    from harness.train import PRESETS, TrainConfig, build_model, train

    res = train(TrainConfig(out=tmp_path / "remote", cache=tmp_path / "cache", **TRAIN_BASE, **backend))
    assert res.steps_done == 2
    b = load_file(str(tmp_path / "remote" / "checkpoints" / "last.safetensors"))
    for k in local_step:
        torch.testing.assert_close(b[k], local_step[k], rtol=1e-10, atol=1e-14)
    init = build_model("xcdiff", PRESETS["quick"].architecture, 0).state_dict()
    assert any(not torch.equal(local_step[k], init[k]) for k in local_step)  # the step moved the parameters


# ---------------------------------------------------------------------------------------------
# separate scheduler and worker processes: interrupt the client, kill a worker
# ---------------------------------------------------------------------------------------------


def _wait_for(pred, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_separate_processes_survive_a_killed_worker_and_an_interrupted_client(local_run, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    dask = str(Path(sys.executable).parent / "dask")  # the `dask` command of this environment
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)]
    workers = []
    try:
        for _ in range(2):
            w = subprocess.Popen([dask, "worker", address, "--nthreads", "1",
                                  "--no-nanny", "--memory-limit", "0", "--no-dashboard", "--host", "127.0.0.1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path,
                                 start_new_session=True)
            workers.append(w)
        procs += workers
        import distributed

        with distributed.Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)

        out = tmp_path / "out"
        cmd = [*HARNESS, "evaluate", str(PBE), "--split", "tiny", "--quiet", "--no-excitations", "--out", str(out),
               "--scheduler", address]
        mol_dir = out / "pbe" / "tiny" / "molecules"
        n_done = lambda: len(list(mol_dir.glob("*.json"))) if mol_dir.is_dir() else 0  # noqa: E731

        # 1. interrupt the client after its first molecule: rows so far are kept
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        _wait_for(lambda: n_done() >= 1, 600, "a first finished molecule")
        client.send_signal(signal.SIGINT)
        client.communicate(timeout=120)
        kept = n_done()
        assert 1 <= kept < 6

        # 2. rerun: continues from the cache; kill one worker (SIGKILL) while tasks are in flight
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        _wait_for(lambda: n_done() >= kept + 1, 600, "a molecule of the rerun")
        with distributed.Client(address, timeout=60) as c:  # the worker that is running a task right now
            _wait_for(lambda: any(c.processing().values()), 300, "a task in flight")
            busy = next(a for a, tasks in c.processing().items() if tasks)
            victim = c.run(os.getpid, workers=[busy])[busy]
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = client.communicate(timeout=900)
        assert client.returncode == 0, stderr[-3000:]
        assert f"{kept} from cache" in stdout
        _assert_same_numbers(local_run, _rows(out / "pbe" / "tiny" / "per_molecule.csv"))
        from harness.results import ResultPaths, check_results

        check_results(ResultPaths.of(out, "pbe", "tiny"))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def test_time_and_memory_limits_apply_on_dask_workers(tmp_path):
    """The evaluation's per-molecule limits hold on a worker: a functional that sleeps on H2O
    times out, one that allocates 3 GB on HF goes past a 1 GB limit; both are the submission's
    failures (cached), the run completes."""
    from test_sandbox import wrapper, write_submission

    from harness.evaluate import evaluate
    from harness.remote import Limits

    body = ("import torch, time\n        n = features['atomic_numbers'].numel()\n"
            "        if n == 3:\n            time.sleep(600)\n"
            "        if n == 2:\n            big = torch.ones(3 * 2**30 // 8, dtype=torch.float64); time.sleep(3); del big")
    sub = write_submission(tmp_path / "limits", wrapper(body))
    t0 = time.monotonic()
    res = evaluate(sub, split="tiny", out=tmp_path / "out", keys=["H2O", "HF"], progress=False,
                   limits=Limits(timeout_s=20, memory_gb=1.0), scheduler="local:2")
    assert time.monotonic() - t0 < 240
    rows = {r["key"]: r for r in res.rows}
    assert rows["H2O"]["status"] == "timeout" and "20 s" in rows["H2O"]["error"], rows["H2O"]["error"]
    assert rows["HF"]["status"] == "memory" and "--memory-gb 1" in rows["HF"]["error"], rows["HF"]["error"]
    assert res.harness_errors == []
