"""`harness train`: smoke runs for every architecture and both losses on the bundled ``tiny``
split (one train and one val molecule, one step, level-0 grid, one DI sample point), the
written submission, resume after an interruption, and determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.reference.pins import BUNDLED_REFERENCE_DIR
from harness.train import ARCH_CHOICES, TrainConfig, train

#: cheap CI settings: HF to train, H2O to validate, coarse grid, 1 DI sample + the reference point
CI = dict(reference=BUNDLED_REFERENCE_DIR, split_train="tiny", split_val="tiny", max_train=1, max_val=1,
          grid_level=0, progress=False, plot=False, overrides={"di_samples": 1, "di_probes": 1, "eval_every": 1})


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """DI targets computed once for the module (HF, PySCF B3LYP)."""
    return tmp_path_factory.mktemp("train-cache")


def _cfg(out: Path, cache: Path, arch="xcdiff", loss="ed", steps=1, **kw) -> TrainConfig:
    args = dict(CI)
    args.update(kw)
    return TrainConfig(arch=arch, loss=loss, out=out, steps=steps, cache=cache, **args)


@pytest.mark.parametrize("loss", ["ed", "di"])
@pytest.mark.parametrize("arch", ARCH_CHOICES)
def test_smoke_every_architecture_and_loss(tmp_path, cache, arch, loss):
    from harness.submission import load_functional, load_submission

    out = tmp_path / f"{arch}-{loss}"
    res = train(_cfg(out, cache, arch, loss))
    assert res.steps_done == 1 and res.best_step in (0, 1)
    sub = load_submission(out)  # complete, validated submission.yaml
    assert sub.name == f"{arch}-{loss}" and sub.framework == "torch"
    assert sub.training_data.saw_test_molecules is False
    assert arch in sub.training_data.text and f"loss {loss}" in sub.training_data.text
    fn = load_functional(out)  # imports functional.py, loads the pinned weights strictly
    assert fn.submission.sha256
    rows = (out / "training_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,split,loss") and len(rows) >= 3  # header, val@0, train@1 (+ val@1)
    log = [r.split(",") for r in rows[1:]]
    assert {r[1] for r in log} == {"train", "val"}
    if loss == "di":
        assert any(r[5] not in ("", "0.0") for r in log if r[1] == "train")  # loss_gradient column


def test_plot_written(tmp_path, cache):
    out = tmp_path / "plot"
    train(_cfg(out, cache, plot=True))
    png = out / "training_curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_interruption_matches_uninterrupted(tmp_path, cache):
    full = tmp_path / "full"
    train(_cfg(full, cache, steps=2))
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(part, cache, steps=2, stop_after=1))
    assert not (part / "submission.yaml").exists()
    res = train(_cfg(part, cache, steps=2))
    assert res.resumed_from == 1
    import json

    info = json.loads((part / "training.json").read_text())  # both invocations' time, not the last one's
    assert info["wall_s_total"] > info["wall_s_this_run"] > 0
    a = load_file(str(full / "checkpoints" / "last.safetensors"))
    b = load_file(str(part / "checkpoints" / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12)
    rows_full = (full / "training_log.csv").read_text().splitlines()
    rows_part = (part / "training_log.csv").read_text().splitlines()
    assert len(rows_full) == len(rows_part)
    # the SCF/CG warm starts travel with the checkpoint: one per geometry, train and val
    from harness.train import load_warm_starts

    warm_full = load_warm_starts(full / "checkpoints" / "last-warm.safetensors")
    warm_part = load_warm_starts(part / "checkpoints" / "last-warm.safetensors")
    data = json.loads((full / "training.json").read_text())["data"]
    assert sorted(warm_full) == sorted(warm_part) == sorted(data["train_keys"] + data["val_keys"])
    for k, w in warm_full.items():
        torch.testing.assert_close(w.dm, warm_part[k].dm, rtol=1e-9, atol=1e-11)
        assert (w.lam_ao is None) == (k in data["val_keys"])  # validation solves no CG
    # running a finished run again changes nothing: same selection, no file rewritten
    files = {f: f.read_bytes() for f in part.iterdir() if f.is_file()}
    again = train(_cfg(part, cache, steps=2))
    assert (again.best_step, again.best_val_energy_mae_mEh) == (res.best_step, res.best_val_energy_mae_mEh)
    assert {f: f.read_bytes() for f in part.iterdir() if f.is_file()} == files
    (part / "training.json").write_text("{truncated")  # unreadable: the finished run writes it again
    rewritten = train(_cfg(part, cache, steps=2))
    assert rewritten.best_step == res.best_step
    assert json.loads((part / "training.json").read_text())["selection"]["step"] == res.best_step
    # a finished run without its checkpoints (a fresh clone of a study: they are not committed)
    # is recognised by its submission and not trained again
    import shutil

    shutil.copytree(part, tmp_path / "clone", ignore=shutil.ignore_patterns("checkpoints"))
    files = {f.name: f.read_bytes() for f in (tmp_path / "clone").iterdir() if f.is_file()}
    cloned = train(_cfg(tmp_path / "clone", cache, steps=2))
    assert (cloned.best_step, cloned.best_val_energy_mae_mEh) == (res.best_step, res.best_val_energy_mae_mEh)
    assert {f.name: f.read_bytes() for f in (tmp_path / "clone").iterdir() if f.is_file()} == files
    assert not (tmp_path / "clone" / "checkpoints" / "state.json").exists()
    longer = train(_cfg(part, cache, steps=3))  # more steps than recorded: it trains on
    assert longer.resumed_from == 2 and longer.steps_done == 3


def test_same_seed_same_result_other_seed_differs(tmp_path, cache):
    from harness.train import build_model

    w = {}
    for name in ("a", "b"):
        out = tmp_path / name
        train(_cfg(out, cache, arch="nagai", seed=3))
        w[name] = load_file(str(out / "weights.safetensors"))
    for k in w["a"]:
        torch.testing.assert_close(w["a"][k], w["b"][k], rtol=1e-9, atol=1e-12)
    s3, s4 = build_model("nagai", "quick", 3).state_dict(), build_model("nagai", "quick", 4).state_dict()
    assert any(not torch.equal(s3[k], s4[k]) for k in s3)


def test_rerun_of_other_configuration_is_refused(tmp_path, cache):
    from harness.train import TrainError

    out = tmp_path / "x"
    train(_cfg(out, cache))
    with pytest.raises(TrainError, match="different run"):
        train(_cfg(out, cache, seed=1))


def test_cli_registered():
    from harness.cli import build_parser

    args = build_parser().parse_args(["train", "--arch", "nlmp", "--loss", "di", "--out", "x", "--steps", "3"])
    assert args.arch == "nlmp" and args.loss == "di" and args.steps == 3 and args.preset == "quick"


def test_cli_rerun_of_a_finished_run_says_so_and_writes_nothing(tmp_path, cache, capsys):
    from harness.cli import main

    out = tmp_path / "run"
    argv = ["train", "--arch", "xcdiff", "--loss", "ed", "--out", str(out), "--reference", str(BUNDLED_REFERENCE_DIR),
            "--cache", str(cache), "--split-train", "tiny", "--split-val", "tiny", "--max-train", "1",
            "--max-val", "1", "--grid-level", "0", "--steps", "1", "--quiet"]
    assert main(argv) == 0
    assert f"wrote {out}/submission.yaml" in capsys.readouterr().out
    files = {f: f.read_bytes() for f in out.iterdir() if f.is_file()}
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "wrote" not in said and f"as recorded in {out}/training.json" in said
    assert {f: f.read_bytes() for f in out.iterdir() if f.is_file()} == files


@pytest.mark.slow
def test_trained_submission_evaluates(tmp_path, cache):
    from harness.evaluate import evaluate

    out = tmp_path / "xcdiff-ed"
    train(_cfg(out, cache))
    result = evaluate(out, split="tiny", out=tmp_path / "results", workers=1, progress=False, keys=["HF"])
    assert result.rows[0]["status"] == "ok"


def test_trained_submission_refuses_a_changed_architecture():
    """functional.py pins the architecture source; a mismatch is a clear error, not a silent
    strict-load failure or a silently different model."""
    from harness.train import FUNCTIONAL_PY

    src = FUNCTIONAL_PY.format(name="x", arch="nagai", preset="quick", seed=0, loss_long="E+D",
                               arch_sha256="0" * 64)
    ns: dict = {}
    exec(compile(src, "functional.py", "exec"), ns)
    with pytest.raises(RuntimeError, match="changed since this submission was trained"):
        ns["make_functional"]()
    from harness.architectures import architecture_sha256

    ok = FUNCTIONAL_PY.format(name="x", arch="nagai", preset="quick", seed=0, loss_long="E+D",
                              arch_sha256=architecture_sha256("nagai"))
    ns = {}
    exec(compile(ok, "functional.py", "exec"), ns)
    assert ns["make_functional"]().arch == "nagai"


def test_stored_di_targets_are_used_and_other_settings_recomputed(tmp_path, monkeypatch):
    """`_load_di` reads the targets stored in the reference record (field ``di``) when they were
    drawn with the preset's DI settings; it never recomputes them then."""
    import dataclasses

    import numpy as np

    import harness.reference.di_targets as dt
    from harness.reference.store import ReferenceSet
    from harness.train import PRESETS, _di_settings, _load_di

    spec = dataclasses.replace(PRESETS["quick"], di_samples=1, di_probes=1)
    record = ReferenceSet(BUNDLED_REFERENCE_DIR).load("HF")
    targets = dt.di_targets_for_record(record, _di_settings(spec))
    stored = dataclasses.replace(record, di=targets)
    calls = []
    real = dt.di_targets_for_record
    monkeypatch.setattr(dt, "di_targets_for_record", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = _load_di(stored, "sha", tmp_path, spec)
    assert calls == [] and np.array_equal(got["hvp"], targets.hvp)
    other = dataclasses.replace(spec, di_sigma=0.1)  # stored targets of other settings are not used
    _load_di(stored, "sha", tmp_path, other)
    assert calls == [1]


def test_cg_shortfalls_are_logged_and_counted(tmp_path, cache, monkeypatch):
    """A CG solve that stops on non-positive curvature or does not reach its tolerance is a
    per-step column and a count in training.json, never silent."""
    import json

    import harness.losses as L

    real = L.conjugate_gradient

    def one_iteration(matvec, b, precond=None, tol=1e-6, max_iter=50, x0=None):
        r = real(matvec, b, precond=precond, tol=tol, max_iter=1)
        return L.CGResult(r.x, r.iterations, max(r.residual, 0.5), True)

    monkeypatch.setattr(L, "conjugate_gradient", one_iteration)
    out = tmp_path / "cg"
    train(_cfg(out, cache, steps=2))
    header, *lines = (out / "training_log.csv").read_text().splitlines()
    cols = header.split(",")
    train_rows = [dict(zip(cols, x.split(","))) for x in lines if x.split(",")[1] == "train"]
    assert all(r["cg_not_converged"] == "1" and r["cg_nonpositive_curvature"] == "1" for r in train_rows)
    assert float(train_rows[0]["cg_residual_max"]) >= 0.5
    solver = json.loads((out / "training.json").read_text())["solver"]
    assert solver["steps_with_cg_not_converged"] == 2 and solver["cg_nonpositive_curvature_geometries"] == 2


def test_cg_reports_nonpositive_curvature():
    from harness.losses import conjugate_gradient

    A = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    res = conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 1.0], dtype=torch.float64), tol=1e-12)
    assert res.nonpositive_curvature is True
    ok = conjugate_gradient(lambda v: A.abs() @ v, torch.tensor([1.0, 1.0], dtype=torch.float64), tol=1e-12)
    assert ok.nonpositive_curvature is False and ok.residual < 1e-12


def test_no_converged_validation_is_a_train_error(tmp_path, cache, monkeypatch):
    import harness.train as T

    real = T.run_losses

    def never_converged(executor, model, job, geoms, backward, scale=1.0, **kw):
        outs = real(executor, model, job, geoms, backward, scale, **kw)
        if not backward:  # every validation pass fails to converge
            for o in outs:
                o.metrics["scf_converged"] = 0.0
        return outs

    monkeypatch.setattr(T, "run_losses", never_converged)
    with pytest.raises(T.TrainError, match="no validation pass converged"):
        train(_cfg(tmp_path / "nv", cache, steps=1))


def test_paper_preset_is_sized_to_answer_the_question():
    """≥ 40 train geometries (conformers included) from the train split, all 17 val molecules,
    one budget for both losses, DI settings that match the targets stored in its data folder."""
    from harness.molecules import split_of
    from harness.train import PRESETS, TrainConfig, _cache_dir, _di_settings, subset_molecules

    spec = PRESETS["paper"]
    train_mols = subset_molecules("train", spec.n_train, spec.train_names)
    assert len(train_mols) * (1 + spec.conformers) >= 40
    assert all(split_of(m.name) == "train" for m in train_mols)
    assert len(subset_molecules("val", spec.n_val)) == 17 == spec.n_val
    assert spec.architecture == "quick"  # the architectures' size, shared with the quick preset
    ed, di = (TrainConfig(arch="xcdiff", loss=loss, out=Path("x"), preset="paper") for loss in ("ed", "di"))
    assert ed.spec == di.spec  # the same steps, batch, lr, grid and selection rule for both losses
    assert _cache_dir(di).name == "paper-train-val-v1"
    assert _di_settings(spec).samples == spec.di_samples == 1


def test_committed_paper_data_is_pinned_and_carries_its_di_targets():
    from harness.reference.store import ReferenceSet
    from harness.train import DATA_MANIFEST_SHA256, PRESETS, REPO_ROOT, _di_settings

    refset = ReferenceSet(REPO_ROOT / "reference_data" / "paper-train-val-v1", check_pin=False)
    assert refset.manifest_sha256 == DATA_MANIFEST_SHA256["paper"]
    assert len(refset.select("train", conformers=True)) == 40 and len(refset.select("val")) == 17
    assert refset.check_all() == []
    rec = refset.load("H2O")
    assert rec.di is not None and rec.di.settings == _di_settings(PRESETS["paper"])


def test_divergence_reasons():
    from harness.losses import LossOutput
    from harness.train import PRESETS, divergence

    spec = PRESETS["quick"]
    ok = [LossOutput("HF", 0.5)]
    assert divergence(ok, 3.0, spec) is None
    assert "not finite on H2O" in divergence(ok + [LossOutput("H2O", float("nan"))], 3.0, spec)
    assert "gradient is not finite" in divergence(ok, float("inf"), spec)
    assert "exploding" in divergence(ok, 2 * spec.max_grad_norm, spec)


def test_a_diverging_run_stops_at_the_last_good_checkpoint_and_resumes_with_a_lower_lr(tmp_path, cache,
                                                                                         monkeypatch):
    """A NaN loss at step 2 stops the run with a message that names the step and a lower --lr;
    the checkpoint is step 1's; the same command with that --lr resumes and finishes."""
    import json

    import harness.train as T

    real = T.run_losses

    def nan_at_step_2(executor, model, job, geoms, backward, scale=1.0, **kw):
        outs = real(executor, model, job, geoms, backward, scale, **kw)
        if backward and len([r for r in json.loads((out / "checkpoints" / "state.json").read_text())["rows"]
                             if r["split"] == "train"]) == 1:
            outs[0].loss = float("nan")
        return outs

    out = tmp_path / "div"
    monkeypatch.setattr(T, "run_losses", nan_at_step_2)
    with pytest.raises(T.TrainDiverged, match=r"diverged at step 2: the loss is not finite.*step 1.*--lr 0\.00"):
        train(_cfg(out, cache, steps=3))
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["step"] == 1
    monkeypatch.setattr(T, "run_losses", real)
    res = train(_cfg(out, cache, steps=3, lr=1e-4))
    assert res.resumed_from == 1 and res.steps_done == 3
    changes = json.loads((out / "training.json").read_text())["lr_changes"]
    assert changes == [{"from_step": 1, "lr": 5e-3}, {"from_step": 2, "lr": 1e-4}]


def test_an_exploding_gradient_stops_the_run(tmp_path, cache):
    from harness.train import TrainDiverged

    with pytest.raises(TrainDiverged, match="exploding gradient"):
        train(_cfg(tmp_path / "boom", cache, overrides={**CI["overrides"], "max_grad_norm": 1e-12}))


def test_parameter_average_by_hand():
    from harness.train import ParameterAverage, TrainError

    model = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    avg = ParameterAverage(model, 0.75)
    for value in (3.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        avg.update(model)
    # 0.75·(0.75·1 + 0.25·3) + 0.25·5 = 0.75·1.5 + 1.25 = 2.375
    assert torch.allclose(avg.state["weight"], torch.full((1, 2), 2.375, dtype=torch.float64))
    with pytest.raises(TrainError, match="ema_decay"):
        ParameterAverage(model, 1.0)


def test_a_parameter_averaged_run_validates_selects_and_submits_the_average(tmp_path, cache):
    """With ema_decay d the validated, selected and submitted model is θ̄ (d = 0.5, two steps:
    θ̄₂ = ¼θ₀ + ¼θ₁ + ½θ₂); the average survives an interruption."""
    import json

    from harness.train import PRESETS, TrainError, build_model

    out = tmp_path / "ema"
    over = {"ema_decay": 0.5}
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(out, cache, steps=2, stop_after=1, overrides=dict(CI["overrides"], **over)))
    theta1 = load_file(str(out / "checkpoints" / "last.safetensors"))
    res = train(_cfg(out, cache, steps=2, overrides=dict(CI["overrides"], **over)))
    assert res.resumed_from == 1
    theta0 = build_model("xcdiff", PRESETS["quick"].architecture, 0).state_dict()
    theta2 = load_file(str(out / "checkpoints" / "last.safetensors"))
    ema = load_file(str(out / "checkpoints" / "last-ema.safetensors"))
    by_step = {0: theta0, 1: {k: 0.5 * theta0[k] + 0.5 * theta1[k] for k in theta0}, 2: ema}
    for k in theta0:
        torch.testing.assert_close(ema[k], 0.25 * theta0[k] + 0.25 * theta1[k] + 0.5 * theta2[k],
                                   rtol=1e-12, atol=1e-14)
    assert any(not torch.equal(ema[k], theta2[k]) for k in ema)  # the average is not the last step
    selected = json.loads((out / "training.json").read_text())["selection"]["step"]
    submitted = load_file(str(out / "weights.safetensors"))
    for k in theta0:
        torch.testing.assert_close(submitted[k], by_step[selected][k], rtol=1e-12, atol=1e-14)
    assert json.loads((out / "training.json").read_text())["identity"]["ema_decay"] == 0.5
    (out / "checkpoints" / "last-ema.safetensors").unlink()  # a damaged checkpoint: one clear line
    with pytest.raises(TrainError, match=r"last-ema\.safetensors: missing"):
        train(_cfg(out, cache, steps=3, overrides=dict(CI["overrides"], **over)))
