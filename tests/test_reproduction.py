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
