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
    from harness.reproduction import load_study, paired_bootstrap, render_study, run_name, verdict

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
    # an incomplete run (one molecule without a value) is not averaged over part of the split
    csv_path = tmp_path / "egxc-di-s2" / "test" / "per_molecule.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = "M0,crashed,,"
    csv_path.write_text("\n".join(lines) + "\n")
    assert "egxc" not in paired_bootstrap(load_study(tmp_path, [0, 1, 2]), [0, 1, 2], m, n_boot=50)
