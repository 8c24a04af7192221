"""The evaluation pipeline (``harness evaluate``): files, cache, resumption, failure rows.

Each metric's own truth is tested in test_metrics.py; here the pipeline around it. Everything
runs on a two-molecule reference folder (H2O, HF, tagged ``tiny``) built once per module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness
from harness import evaluate as ev
from harness import pipeline
from harness.cli import main as cli_main
from harness.evaluate import evaluate
from harness.metrics import MILLIHARTREE_PER_HARTREE
from harness.molecules import g2_molecule, split_of, to_pyscf
from harness.reference.build import PlannedGeometry, build_reference
from harness.reference.settings import ReferenceSettings
from harness.reference.store import ReferenceSet
from harness.results import CSV_COLUMNS, check_results
from harness.status import Status
from harness.submission import load_functional, submission_sha256

REPO = Path(__file__).resolve().parents[1]
PBE = REPO / "submissions" / "pbe"
PBE_JAX = REPO / "submissions" / "pbe-jax"
EXAMPLE = REPO / "submissions" / "example-mlp"
KEYS = ("H2O", "HF")
#: Two runs of the same molecule agree to round-off, not bit for bit: PySCF's OpenMP grid and
#: integral sums are reduced in a thread-schedule-dependent order (~1e-13 Eh observed).
SAME = dict(rel=1e-9, abs=1e-8)

METRICS = ("energy_error_mEh", "e_rho_mEh", "dipole_error_debye", "density_l2",
           "scf_iterations_model", "scf_cycles_model_start", "scf_iter_reduction")
SUMMARY_METRICS = ("energy_mae_mEh", "e_rho_mean_mEh", "dipole_mae_debye", "density_l2_mean",
                   "scf_iter_reduction_mean", "scf_iter_ratio_pooled", "converged_fraction",
                   "n_molecules", "n_failed", "excitation_mae_eV", "model_scf_iterations_mean",
                   "model_scf_iterations_max")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ref") / "g2-tiny"
    planned = [PlannedGeometry(g2_molecule(n), split_of(n), ("tiny",)) for n in KEYS]
    report = build_reference(root, planned, ReferenceSettings(conformers=0), progress=False)
    assert report.ok, report.failed
    return root


@pytest.fixture(scope="module")
def pbe_result(reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return evaluate(PBE, split="tiny", reference=reference, out=out, progress=False)


def _fail_if_called(*args, **kwargs):
    raise AssertionError("run_scf called: a cached molecule was recomputed")


def _metric_values(rows):
    return {r["key"]: {m: r[m] for m in METRICS} for r in rows}


# ----------------------------------------------------------------------------- files, values


def test_pbe_writes_csv_and_summary_with_every_key(pbe_result, reference):
    res = pbe_result
    paths = res.paths
    assert paths.root.parts[-2:] == ("pbe", "tiny")
    with open(paths.csv) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [r["key"] for r in rows] == list(KEYS)
    for r in rows:
        assert r["status"] == Status.OK.value and r["error"] == ""
        assert r["scf_converged_model"] == "true"
        assert r["excitation_mae_eV"] == ""  # metric 6 is not computed yet
        for c in ("energy_error_mEh", "e_rho_mEh", "dipole_error_debye", "density_l2",
                  "scf_iterations_model", "wall_s", "model_scf_wall_s", "metrics_wall_s"):
            assert r[c] != "", c
    s = json.loads(paths.summary.read_text())
    for k in SUMMARY_METRICS + ("protocol_version", "split", "provenance", "wall_s", "n_not_converged"):
        assert k in s, k
    assert s["protocol_version"] == harness.PROTOCOL_VERSION and s["split"] == "tiny"
    assert s["n_molecules"] == 2 and s["n_failed"] == 0 and s["converged_fraction"] == 1.0
    assert s["excitation_mae_eV"] is None
    assert s["summary_format"] == 2 and s["n_split"] == 2 and s["complete"] is True and s["coverage"] == 1.0
    assert s["excitations_complete"] is None and s["status_counts"]["ok"] == 2
    check_results(paths)  # the summary names the CSV's sha256
    from harness import summary_schema

    assert summary_schema.problems(s) == []  # the typed schema the leaderboard reads
    broken = json.loads(json.dumps(s))
    broken["coverage"], broken["provenance"]["sandbox"] = "all", "docker"
    del broken["provenance"]["limits"]
    found = " ".join(summary_schema.problems(broken))
    assert "'coverage' is str" in found and "docker" in found and "provenance.limits" in found
    prov = s["provenance"]
    assert prov["harness_version"] == harness.__version__
    from harness.provenance import scoring_sha256

    assert prov["scoring_sha256"] == scoring_sha256() and len(prov["settings_sha256"]) == 64
    assert prov["sandbox"] in ("bwrap", "none") and prov["limits"]["timeout_s"] == 1800.0
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["reference"]["manifest_sha256"] == ReferenceSet(reference).manifest_sha256
    assert prov["reference"]["name"] == "g2-b3lyp-svp" and prov["reference"]["version"] == 1
    assert prov["submission"]["sha256"] == submission_sha256(PBE)
    assert prov["submission"]["framework"] == "torch" and prov["submission"]["saw_test_molecules"] is False
    for lib in ("pyscf", "torch", "jax", "numpy"):
        assert lib in prov["software"]
    assert prov["device"] == "cpu" and prov["dtype"] == "float64"
    assert prov["machine"]["cpu_count"] == os.cpu_count()
    assert "hostname" not in json.dumps(prov).lower()
    for k in ("total", "setup_sum", "model_scf_sum", "metrics_sum", "excitations_sum"):
        assert s["wall_s"][k] >= 0
    # the summary is the aggregate of the rows
    assert s["energy_mae_mEh"] == pytest.approx(sum(abs(r["energy_error_mEh"]) for r in res.rows) / 2)
    assert s["model_scf_iterations_max"] == max(r["scf_iterations_model"] for r in res.rows)
    # no temporaries left
    assert not list(paths.root.rglob("*.tmp"))


def test_energy_error_equals_direct_pyscf_df_pbe_with_exact_j(pbe_result, reference):
    """Reported energy = exact-J PBE energy at the converged DF-J PBE density (PySCF)."""
    from pyscf import dft

    refset = ReferenceSet(reference)
    for row in pbe_result.rows:
        rec = refset.load(row["key"])
        pmol = to_pyscf(rec.molecule, "def2-svp")
        mf = dft.RKS(pmol, xc="pbe").density_fit(auxbasis="def2-universal-jfit")
        mf.grids.level = 3
        mf.conv_tol, mf.verbose = 1e-11, 0
        mf.kernel()
        assert mf.converged
        exact = dft.RKS(pmol, xc="pbe")
        exact.grids.level, exact.verbose = 3, 0
        e_exact_j = exact.energy_tot(dm=mf.make_rdm1())
        expected_mEh = (e_exact_j - rec.energy_Eh) * MILLIHARTREE_PER_HARTREE
        assert row["energy_error_mEh"] == pytest.approx(expected_mEh, abs=1e-3)  # 1e-6 Eh
        assert row["energy_model_Eh"] == pytest.approx(e_exact_j, abs=1e-6)
        assert row["e_rho_mEh"] >= 0.0


def test_jax_and_torch_pbe_give_the_same_metrics(pbe_result, reference, tmp_path):
    res = evaluate(PBE_JAX, split="tiny", reference=reference, out=tmp_path, progress=False, keys=["HF"])
    (jrow,) = res.rows
    trow = next(r for r in pbe_result.rows if r["key"] == "HF")
    assert jrow["status"] == Status.OK.value
    for m in ("energy_error_mEh", "e_rho_mEh", "dipole_error_debye", "density_l2"):
        assert jrow[m] == pytest.approx(trow[m], abs=1e-6), m
    for m in ("scf_iterations_model", "scf_cycles_model_start", "scf_iter_reduction"):
        assert jrow[m] == trow[m], m


# ----------------------------------------------------------------------------- cache, resume


def test_rerun_recomputes_nothing(pbe_result, reference, monkeypatch):
    monkeypatch.setattr(pipeline, "run_scf", _fail_if_called)
    out = pbe_result.paths.root.parents[1]
    res = evaluate(PBE, split="tiny", reference=reference, out=out, progress=False)
    assert res.computed == [] and res.cached == list(KEYS)
    for k in SUMMARY_METRICS:
        assert res.summary[k] == pbe_result.summary[k], k
    assert _metric_values(res.rows) == _metric_values(pbe_result.rows)


def test_killed_evaluation_resumes_with_identical_results(pbe_result, reference, tmp_path):
    out = tmp_path / "out"
    mol_dir = out / "pbe" / "tiny" / "molecules"
    cmd = [sys.executable, "-m", "harness.cli", "evaluate", str(PBE), "--split", "tiny",
           "--reference", str(reference), "--out", str(out), "--quiet", "--no-excitations"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not (mol_dir / "H2O.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no molecule finished in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "pbe" / "tiny" / "summary.json").exists()
    res = evaluate(PBE, split="tiny", reference=reference, out=out, progress=False)
    assert "H2O" in res.cached and "HF" in res.computed + res.cached, res.rows
    for a, b in zip(res.rows, pbe_result.rows):
        for m in METRICS:
            assert a[m] == pytest.approx(b[m], **SAME), (a["key"], m, a["status"], a["error"])
    for k in SUMMARY_METRICS:
        want = pbe_result.summary[k]
        assert res.summary[k] == (want if want is None else pytest.approx(want, **SAME)), k
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert sorted(p.name for p in mol_dir.iterdir()) == ["H2O.json", "HF.json"]


def test_changed_submission_invalidates_the_cache(reference, tmp_path, monkeypatch):
    sub = _write_submission(tmp_path / "nan-copy", NAN_SUBMISSION)
    calls = []
    real = pipeline.run_scf

    def counting_run_scf(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_scf", counting_run_scf)
    kw = dict(split="tiny", reference=reference, out=tmp_path / "out", progress=False, keys=["H2O"])
    first = evaluate(sub, **kw)
    assert len(calls) == 1 and first.rows[0]["status"] == Status.FUNCTIONAL_ERROR.value
    assert "H2O" in first.rows[0]["error"] and "NaN" in first.rows[0]["error"]
    evaluate(sub, **kw)
    assert len(calls) == 1  # cached (the functional's failure is a finished result)
    with open(sub / "functional.py", "a") as f:
        f.write("\n# an edit changes the code hash\n")
    again = evaluate(sub, **kw)
    assert len(calls) == 2 and again.computed == ["H2O"]


def test_molecules_to_compute_names_what_a_rerun_computes(pbe_result, reference, tmp_path):
    """A cache file made under another sandbox and a missing one are listed; a rerun computes
    exactly those, and afterwards nothing is listed."""
    out = tmp_path / "out"
    shutil.copytree(pbe_result.paths.root.parents[1], out)
    kw = dict(split="tiny", reference=reference, out=out)
    assert ev.molecules_to_compute(PBE, **kw) == []
    mol_dir = pbe_result.paths.molecule("H2O").relative_to(pbe_result.paths.root.parents[1]).parent
    h2o = out / mol_dir / "H2O.json"
    data = json.loads(h2o.read_text())
    data["cache"]["sandbox"] = "none" if data["cache"]["sandbox"] != "none" else "bwrap"
    h2o.write_text(json.dumps(data))
    (out / mol_dir / "HF.json").unlink()
    todo = ev.molecules_to_compute(PBE, **kw)
    assert todo == ["H2O", "HF"]
    assert sorted(evaluate(PBE, progress=False, **kw).computed) == todo
    assert ev.molecules_to_compute(PBE, **kw) == []


@pytest.mark.parametrize("limits, flag", [(dict(timeout_s=0), "--timeout-s"), (dict(memory_gb=-1.0), "--memory-gb")])
def test_non_positive_limits_are_refused_before_anything_runs(reference, tmp_path, limits, flag):
    """evaluate and molecules_to_compute share one check of the limits: a non-positive one is an
    error naming its flag, and nothing is written."""
    from harness.remote import Limits

    kw = dict(split="tiny", reference=reference, out=tmp_path / "out", limits=Limits(**limits))
    for call in (evaluate, ev.molecules_to_compute):
        with pytest.raises(ev.EvaluationError, match=flag):
            call(PBE, **kw)
    assert not (tmp_path / "out").exists()


def test_a_harness_error_is_reported_as_such_and_never_cached(reference, tmp_path, monkeypatch):
    calls = []

    def broken_run_scf(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("stub SCF bug")

    monkeypatch.setattr(pipeline, "run_scf", broken_run_scf)
    kw = dict(split="tiny", reference=reference, out=tmp_path / "out", progress=False, keys=["HF"])
    first = evaluate(PBE, **kw)
    (row,) = first.rows
    assert row["status"] == "harness_error" and "stub SCF bug" in row["error"] and "HF" in row["error"]
    assert first.harness_errors == ["HF"] and first.summary["status_counts"]["harness_error"] == 1
    evaluate(PBE, **kw)
    assert len(calls) == 2  # retried, not served from the cache


def test_an_edited_scoring_file_invalidates_cached_rows(pbe_result, reference, monkeypatch):
    import harness.provenance as prov

    monkeypatch.setattr(ev, "scoring_sha256", lambda: "0" * 64)
    out = pbe_result.paths.root.parents[1]
    res = evaluate(PBE, split="tiny", reference=reference, out=out / "elsewhere", progress=False, keys=["HF"])
    assert res.computed == ["HF"]
    # the real hash reads the files: an edit to a scoring module changes it
    root = Path(prov.__file__).parent
    before = prov.scoring_sha256.__wrapped__(root)
    assert before == prov.scoring_sha256()
    assert any(p.name == "torch_classic.py" for p in prov.scoring_files(root))
    assert not any(p.parent.name == "cli" for p in prov.scoring_files(root))
    assert any(p.name == "pipeline.py" for p in prov.scoring_files(root))
    assert not any(p.name == "evaluate.py" for p in prov.scoring_files(root))


def test_summary_and_csv_disagreeing_is_detected(pbe_result, tmp_path):
    from harness.errors import HarnessError
    from harness.results import ResultPaths

    root = tmp_path / "copy"
    shutil.copytree(pbe_result.paths.root, root)
    paths = ResultPaths(root)
    check_results(paths)
    with open(paths.csv, "a") as f:  # as if a rerun was killed after its CSV write
        f.write("extra,row\n")
    with pytest.raises(HarnessError, match="per_molecule.csv"):
        check_results(paths)


# ----------------------------------------------------------------------------- failures


NAN_SUBMISSION = '''
import torch
from harness.functionals import PBE


class NaNOnTriatomics(torch.nn.Module):
    """PBE, except that it returns NaN for every molecule with 3 atoms."""

    features = ["density", "grad", "grid_weights", "atomic_numbers"]

    def __init__(self):
        super().__init__()
        self.pbe = PBE()

    def get_exc(self, features):
        e = self.pbe.get_exc(features)
        if features["atomic_numbers"].numel() == 3:
            return e * float("nan")
        return e


def make_functional():
    return NaNOnTriatomics()
'''


def _write_submission(folder: Path, code: str, **yaml_extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "functional.py").write_text(code)
    lines = [
        f"name: {folder.name}", 'version: "1"', "framework: torch",
        "entry_point: functional.py:make_functional", "authors: [tester]", "license: MIT",
        "paper: unpublished", "training_data:", "  text: test", "  saw_test_molecules: false",
    ]
    lines += [f"{k}: {v}" for k, v in yaml_extra.items()]
    (folder / "submission.yaml").write_text("\n".join(lines) + "\n")
    return folder


def test_nan_for_one_molecule_is_a_failure_row_and_the_others_are_scored(reference, tmp_path, pbe_result):
    sub = _write_submission(tmp_path / "nan-sub", NAN_SUBMISSION)
    res = evaluate(sub, split="tiny", reference=reference, out=tmp_path / "out", progress=False)
    rows = {r["key"]: r for r in res.rows}
    assert rows["H2O"]["status"] == Status.FUNCTIONAL_ERROR.value
    assert "H2O" in rows["H2O"]["error"] and "NaN" in rows["H2O"]["error"]
    assert rows["H2O"]["energy_error_mEh"] is None
    assert rows["HF"]["status"] == Status.OK.value
    hf_pbe = next(r for r in pbe_result.rows if r["key"] == "HF")
    assert rows["HF"]["energy_error_mEh"] == pytest.approx(hf_pbe["energy_error_mEh"], abs=1e-6)
    s = res.summary
    assert s["n_molecules"] == 2 and s["n_failed"] == 1 and s["converged_fraction"] == 0.5
    assert s["failed_molecules"] == ["H2O"]
    assert s["energy_mae_mEh"] == pytest.approx(abs(rows["HF"]["energy_error_mEh"]))
    with open(res.paths.csv) as f:
        csv_rows = {r["key"]: r for r in csv.DictReader(f)}
    assert csv_rows["H2O"]["status"] == "functional_error" and "NaN" in csv_rows["H2O"]["error"]
    assert s["complete"] is False and s["coverage"] == 0.5


def test_non_converged_model_scf_gets_no_metrics(reference, tmp_path, monkeypatch):
    real = pipeline.run_scf

    def three_cycles(*args, **kwargs):
        kwargs["max_cycle"] = 3
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_scf", three_cycles)
    res = evaluate(PBE, split="tiny", reference=reference, out=tmp_path, progress=False, keys=["HF"])
    (row,) = res.rows
    assert row["status"] == "not_converged" and row["scf_converged_model"] is False
    assert "HF" in row["error"] and "did not converge" in row["error"]
    assert row["energy_error_mEh"] is None and row["e_rho_mEh"] is None
    assert res.summary["n_failed"] == 1 and res.summary["n_not_converged"] == 1
    assert res.summary["converged_fraction"] == 0.0 and res.summary["energy_mae_mEh"] is None


def test_bad_yaml_exits_1_naming_the_file(reference, tmp_path, capsys):
    sub = tmp_path / "bad"
    shutil.copytree(PBE, sub, ignore=shutil.ignore_patterns("__pycache__"))
    (sub / "submission.yaml").write_text("name: bad\nversion: [unclosed\n")
    rc = cli_main(["evaluate", str(sub), "--reference", str(reference), "--split", "tiny",
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert str(sub / "submission.yaml") in err and "YAML" in err
    assert err.count("\n") == 1


def test_wrong_weights_hash_exits_1_naming_the_file_and_field(reference, tmp_path, capsys):
    sub = tmp_path / "mlp"
    shutil.copytree(EXAMPLE, sub, ignore=shutil.ignore_patterns("__pycache__"))
    text = (sub / "submission.yaml").read_text()
    good = submission_sha256(EXAMPLE)["weights"]
    (sub / "submission.yaml").write_text(text.replace(good, "ab" * 32))
    rc = cli_main(["evaluate", str(sub), "--reference", str(reference), "--split", "tiny",
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert str(sub / "weights.safetensors") in err and "field 'sha256'" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))


# ----------------------------------------------------------------------------- example-mlp


def test_example_mlp_loads_verifies_and_evaluates(reference, tmp_path):
    fn = load_functional(EXAMPLE)  # verifies the pinned sha256
    assert fn.submission.sha256 == submission_sha256(EXAMPLE)["weights"]
    n_params = sum(p.numel() for p in fn.parameters())
    assert 1000 <= n_params <= 2000
    assert fn.submission.training_data.saw_test_molecules is False
    res = evaluate(EXAMPLE, split="tiny", reference=reference, out=tmp_path, progress=False, keys=["HF"])
    (row,) = res.rows
    assert row["key"] == "HF"
    if row["status"] == Status.OK.value:
        assert abs(row["energy_error_mEh"]) < 2000  # an LDA-like functional, not garbage
        assert row["e_rho_mEh"] > -1e-6
    else:
        assert "HF" in row["error"]


# ----------------------------------------------------------------------------- workers


@pytest.mark.slow
def test_two_workers_give_identical_numbers(pbe_result, reference, tmp_path):
    res = evaluate(PBE, split="tiny", reference=reference, out=tmp_path, progress=False, workers=2)
    assert res.computed == list(KEYS)
    for a, b in zip(res.rows, pbe_result.rows):
        for m in METRICS:
            assert a[m] == pytest.approx(b[m], **SAME), (a["key"], m)
