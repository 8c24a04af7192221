"""harness.reproduction: the E+D vs DI table of docs/reproduction.md."""

import json

import pytest

from harness.reproduction import END, START, load_summaries, relative_change, render_table, rewrite_doc


def _write(root, name, **metrics):
    p = root / name / "test"
    p.mkdir(parents=True)
    (p / "summary.json").write_text(json.dumps({"n_failed": 0, **metrics}))


def test_relative_change():
    assert relative_change(10.0, 4.0) == pytest.approx(-0.6)
    assert relative_change(-2.0, -1.0) == pytest.approx(0.5)
    assert relative_change(None, 1.0) is None and relative_change(0.0, 1.0) is None


def test_table_average_and_doc_rewrite(tmp_path):
    _write(tmp_path, "xcdiff-ed", energy_mae_mEh=10.0, excitation_mae_eV=0.4)
    _write(tmp_path, "xcdiff-di", energy_mae_mEh=5.0, excitation_mae_eV=0.3)
    _write(tmp_path, "nagai-ed", energy_mae_mEh=20.0)
    _write(tmp_path, "nagai-di", energy_mae_mEh=4.0)
    s = load_summaries(tmp_path)
    assert set(s) == {("xcdiff", "ed"), ("xcdiff", "di"), ("nagai", "ed"), ("nagai", "di")}
    table = render_table(s)
    assert "| xcdiff | -50 %" in table and "| nagai | -80 %" in table
    avg = next(line for line in table.splitlines() if line.startswith("| **uniform average**"))
    assert avg.split("|")[2].strip() == "-65 %"  # (−50 − 80) / 2
    assert avg.split("|")[7].strip() == "-25 %"  # excitation: xcdiff only
    assert "(not evaluated)" in table  # skala and egxc rows
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    rewrite_doc(doc, table)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text and table in text
    bad = tmp_path / "bad.md"
    bad.write_text("no markers")
    with pytest.raises(ValueError, match="bad.md"):
        rewrite_doc(bad, table)


def _write_run(root, name, errors, exc=None):
    """A results folder with a per-molecule CSV (energy errors in mEh) and its summary."""
    import csv as _csv

    p = root / name / "test"
    p.mkdir(parents=True)
    with open(p / "per_molecule.csv", "w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["key", "status", "energy_error_mEh", "excitation_mae_eV"])
        for i, e in enumerate(errors):
            w.writerow([f"M{i}", "ok", e, "" if exc is None else exc[i]])
    (p / "summary.json").write_text(json.dumps({"n_failed": 0, "energy_mae_mEh": sum(abs(e) for e in errors) / len(errors)}))


def test_seed_study_bootstrap_intervals_and_verdicts(tmp_path):
    import numpy as np

    from harness.metric_registry import BY_KEY
    from harness.reproduction import load_study, paired_bootstrap, paired_matrices, render_study, run_name, verdict

    rng = np.random.default_rng(1)
    base = rng.uniform(5, 15, size=12)
    for seed in (0, 1, 2):
        for arch in ("xcdiff", "nagai", "nlmp", "egxc"):
            ed = base * rng.uniform(0.95, 1.05, size=12)
            _write_run(tmp_path, run_name(arch, "ed", seed), list(ed))
            # DI halves the error for every architecture but nagai, where it changes nothing
            di = ed * (1.0 if arch == "nagai" else 0.5) * rng.uniform(0.98, 1.02, size=12)
            _write_run(tmp_path, run_name(arch, "di", seed), list(di))
    study = load_study(tmp_path, [0, 1, 2])
    assert len(study) == 24 and run_name("xcdiff", "di", 1) == "xcdiff-di-s1"
    m = BY_KEY["energy_mae_mEh"]
    boot = paired_bootstrap(study, [0, 1, 2], m, n_boot=400)
    point, lo, hi = boot["xcdiff"]
    assert point == pytest.approx(-0.5, abs=0.03) and lo < point < hi < 0
    assert verdict(m, lo, hi) == "reproduced"
    assert verdict(m, *boot["nagai"][1:]) == "inconclusive" and boot["nagai"][1] < 0 < boot["nagai"][2]
    assert verdict(m, 0.1, 0.3) == "not reproduced"
    assert verdict(BY_KEY["scf_iter_reduction_mean"], 0.1, 0.3) == "reproduced"  # higher is better
    text = render_study(study, [0, 1, 2])
    assert "| xcdiff-ed | 3 |" in text and " ± " in text and "reproduced" in text
    # a molecule that failed in one run leaves that architecture's comparison (both losses, every
    # seed), so the two sides stay paired; it is named, and the other architectures keep it
    csv_path = tmp_path / "egxc-di-s2" / "test" / "per_molecule.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = "M0,crashed,,"
    csv_path.write_text("\n".join(lines) + "\n")
    failed = load_study(tmp_path, [0, 1, 2])
    keys, mats, excluded = paired_matrices(failed, [0, 1, 2], m)
    assert excluded == {"xcdiff": [], "nagai": [], "nlmp": [], "egxc": ["M0"]}
    ed, di = mats["egxc"]
    assert np.isnan(ed[:, keys.index("M0")]).all() and np.isnan(di[:, keys.index("M0")]).all()
    rest = [k != "M0" for k in keys]
    # point estimate by hand over the 11 remaining molecules, every seed
    by_hand = (di[:, rest].mean() - ed[:, rest].mean()) / ed[:, rest].mean()
    assert paired_bootstrap(failed, [0, 1, 2], m, n_boot=50)["egxc"][0] == pytest.approx(by_hand)
    assert paired_bootstrap(failed, [0, 1, 2], m, n_boot=50)["xcdiff"] == pytest.approx(
        paired_bootstrap(study, [0, 1, 2], m, n_boot=50)["xcdiff"])
    assert "egxc: 1 molecule(s) without a value in some run" in render_study(failed, [0, 1, 2])
    # a missing run leaves the architecture out, and the average says over how many
    (tmp_path / "nlmp-ed-s1" / "test" / "summary.json").unlink()
    partial = load_study(tmp_path, [0, 1, 2])
    assert "nlmp" not in paired_bootstrap(partial, [0, 1, 2], m, n_boot=50)
    assert "the average is over 3 of 4 architectures" in render_study(partial, [0, 1, 2])


def test_makespan_by_hand():
    from harness.reproduction import makespan

    # slots: 3 | 1 → the freed slot takes 2 (ends 3), then the next free one takes 2 (ends 5)
    assert makespan([3, 1, 2, 2], 2) == 5
    assert makespan([3, 1, 2, 2], 1) == 8
    assert makespan([], 2) == 0


def test_study_cost_counts_finished_paper_runs_and_their_own_evaluations(tmp_path):
    """Only a finished paper-preset run counts, and only an evaluation of that very model; the
    makespan appears once every run has both."""
    import shutil
    from pathlib import Path

    from harness.reproduction import ARCHS, LOSSES, render_cost, run_dir, study_cost
    from harness.submission import submission_sha256

    subs, study, results = tmp_path / "submissions", tmp_path / "study", tmp_path / "results"
    src = Path(__file__).resolve().parents[1] / "submissions" / "xcdiff-ed"
    walls = {}
    for i, (arch, loss) in enumerate((a, lo) for a in ARCHS for lo in LOSSES):
        for seed in (0, 1):
            d = run_dir(arch, loss, seed, subs, study)
            d.mkdir(parents=True)
            for f in ("submission.yaml", "functional.py", "weights.safetensors"):
                shutil.copy(src / f, d / f)
            name = d.name
            walls[name] = (100.0 * (i + 1) + seed, 10.0 * (i + 1))
            (d / "training.json").write_text(json.dumps({"preset": {"name": "paper"}, "wall_s_total": walls[name][0]}))
            out = results / name / "test"
            out.mkdir(parents=True)
            (out / "summary.json").write_text(json.dumps({
                "wall_s": {"molecules_sum": walls[name][1]},
                "provenance": {"submission": {"sha256": submission_sha256(d)}}}))
    cost = study_cost([0, 1], subs, study, results, jobs=2)
    assert cost["missing"] == [] and len(cost["runs"]) == 16
    assert cost["train_s_sum"] == pytest.approx(sum(t for t, _ in walls.values()))
    assert cost["eval_s_sum"] == pytest.approx(sum(e for _, e in walls.values()))
    order = [r["name"] for r in cost["runs"]]
    assert order[:2] == ["xcdiff-ed", "xcdiff-di"] and order[8] == "xcdiff-ed-s1"
    from harness.reproduction import makespan

    assert cost["makespan_s"] == pytest.approx(makespan([walls[n][0] for n in order], 2)
                                               + makespan([walls[n][1] for n in order], 2))
    assert "stages 3–4, 2 at a time" in render_cost(cost)

    # a quick-preset training.json is not a paper run; an evaluation of other weights is not this run's
    (run_dir("nagai", "ed", 0, subs, study) / "training.json").write_text(
        json.dumps({"preset": {"name": "quick"}, "wall_s_total": 5.0}))
    (run_dir("egxc", "di", 1, subs, study) / "weights.safetensors").write_bytes(b"other weights")
    cost = study_cost([0, 1], subs, study, results, jobs=2)
    assert cost["missing"] == ["nagai-ed", "egxc-di-s1"] and cost["makespan_s"] is None
    by = {r["name"]: r for r in cost["runs"]}
    assert by["nagai-ed"]["train_s"] is None and by["egxc-di-s1"]["eval_s"] is None
    assert by["egxc-di-s1"]["train_s"] == walls["egxc-di-s1"][0]
    assert "not done yet: nagai-ed, egxc-di-s1" in render_cost(cost)

    # a damaged file is named, with the field that could not be read
    (run_dir("nlmp", "di", 1, subs, study) / "training.json").write_text('{"preset": {"name": "paper"}}')
    with pytest.raises(ValueError, match=r"nlmp-di-s1/training\.json: no wall_s_total"):
        study_cost([0, 1], subs, study, results)
    (run_dir("nlmp", "di", 1, subs, study) / "training.json").write_text("{truncated")
    with pytest.raises(ValueError, match=r"nlmp-di-s1/training\.json: unreadable"):
        study_cost([0, 1], subs, study, results)
