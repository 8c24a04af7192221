"""``harness leaderboard publish``: validation, ranking and the three output files.

The results are written by the real ``harness evaluate`` pipeline (`harness.evaluate.evaluate`)
on the bundled ``tiny`` split, with real submission folders (copies of the bundled ones) and the
real hashes; only the per-molecule computation is replaced by a fast fake that returns fixed
metric rows, so the whole module runs in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import harness
from harness import evaluate as ev
from harness import leaderboard as lb
from harness.cli import main as cli_main
from harness.leaderboard import CSV_COLUMNS, MISSING, publish
from harness.reference.pins import BUNDLED_MANIFEST_SHA256
from harness.results import STATUS_OK

REPO = Path(__file__).resolve().parents[1]

#: Per submission: |energy error| per molecule (mEh) = the energy MAE, per-molecule wall time (s),
#: excitation MAE (eV) or None. Expected ranking on energy MAE: lda-leaky, tpss, pbe, lda.
FAKE = {
    "lda": (50.0, 1.0, None),
    "pbe": (5.0, 2.0, None),
    "tpss": (3.0, 4.0, 0.25),
    "lda-leaky": (1.0, 1.5, None),
}
EXPECTED_ORDER = ["lda-leaky", "tpss", "pbe", "lda"]
SPLIT = "tiny"


def _fake_evaluate_molecule(functional, record, settings, **_options):
    """A complete ``ok`` row with fixed numbers chosen by submission name (no SCF, no PySCF)."""
    name = functional.submission.name
    err, wall, exc = FAKE[name]
    sign = -1.0 if len(record.key) % 2 else 1.0  # signed errors: the MAE takes the absolute value
    row = ev.empty_row(record.key)
    row.update(
        status=STATUS_OK,
        energy_ref_Eh=float(record.energy_Eh),
        energy_model_Eh=float(record.energy_Eh) + sign * err / 1000.0,
        energy_error_mEh=sign * err,
        e_rho_mEh=err / 10.0,
        dipole_error_debye=err / 100.0,
        density_l2=err / 1000.0,
        excitation_mae_eV=exc,
        scf_iterations_model=10,
        scf_converged_model=True,
        scf_cycles_model_start=6,
        scf_cycles_minao=10,
        scf_iter_reduction=0.4,
        scf_converged=True,
        nao=10,
        ngrid=1000,
        setup_wall_s=0.0,
        model_scf_wall_s=wall,
        excitations_wall_s=0.0,
        metrics_wall_s=0.0,
        wall_s=wall,
    )
    return row


def build_results(base: Path) -> tuple[Path, Path]:
    """Write ``base/submissions`` (copies of bundled submissions, plus ``lda-leaky`` that declares
    ``saw_test_molecules: true``) and ``base/results/<name>/tiny/`` with the real evaluate
    pipeline around a fake per-molecule step. Returns (results, submissions)."""
    subs = base / "submissions"
    subs.mkdir(parents=True)
    for name in ("lda", "pbe", "tpss"):
        shutil.copytree(REPO / "submissions" / name, subs / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    leaky = subs / "lda-leaky"
    shutil.copytree(subs / "lda", leaky)
    y = (leaky / "submission.yaml").read_text()
    y = y.replace("name: lda\n", "name: lda-leaky\n").replace("saw_test_molecules: false", "saw_test_molecules: true")
    (leaky / "submission.yaml").write_text(y)
    results = base / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "evaluate_molecule", _fake_evaluate_molecule)
        mp.setattr(ev, "git_info", lambda: {"commit": None, "dirty": None})
        for name in FAKE:
            ev.evaluate(subs / name, split=SPLIT, out=results, progress=False)
    return results, subs


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("lb")
    build_results(base)
    return base


@pytest.fixture
def work(pristine, tmp_path) -> Path:
    """A private copy of results/ and submissions/ that a test may tamper with."""
    for d in ("results", "submissions"):
        shutil.copytree(pristine / d, tmp_path / d)
    return tmp_path


def _publish(work: Path, out: str = "leaderboard"):
    return publish(work / "results", work / "submissions", work / out)


def _summary(work: Path, name: str) -> Path:
    return work / "results" / name / SPLIT / "summary.json"


def _edit_summary(work: Path, name: str, edit) -> None:
    p = _summary(work, name)
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data, indent=2))


def _table_rows(readme: str) -> list[list[str]]:
    lines = [ln for ln in readme.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


# ----------------------------------------------------------------------------------- ranking


def test_real_evaluate_summary_has_the_keys_the_leaderboard_reads(pristine):
    s = json.loads(_summary(pristine, "pbe").read_text())
    for k in lb.REQUIRED_KEYS + ("excitation_mae_eV",):
        assert k in s, k
    assert s["protocol_version"] == harness.PROTOCOL_VERSION
    assert s["provenance"]["reference"]["manifest_sha256"] == BUNDLED_MANIFEST_SHA256
    assert s["n_molecules"] == 6 and s["subset"] is None
    assert s["energy_mae_mEh"] == pytest.approx(5.0)


def test_ranking_order_by_energy_mae(work):
    res = _publish(work)
    assert res.refusals == []
    entries = res.ranked[SPLIT]
    assert [e.submission for e in entries] == EXPECTED_ORDER
    assert [e.rank for e in entries] == [1, 2, 3, 4]
    assert [e.energy_mae_mEh for e in entries] == pytest.approx([1.0, 3.0, 5.0, 50.0])
    assert entries[2].wall_s == pytest.approx(12.0)  # 6 molecules × 2 s, wall_s.molecules_sum
    readme = (work / "leaderboard" / "README.md").read_text(encoding="utf-8")
    header = next(ln for ln in readme.splitlines() if ln.startswith("| rank"))
    for title in ("energy MAE (mEh)", "E_ρ mean (mEh)", "dipole MAE (D)", "L2 density error mean (a.u.)",
                  "SCF-iteration reduction", "excitation MAE (eV)", "failed", "eval wall time (s)",
                  "submission", "framework"):
        assert title in header, title
    rows = _table_rows(readme)
    assert [r[1] for r in rows] == ["lda-leaky †", "tpss", "pbe", "lda"]
    assert rows[0][3] == "1.000" and rows[3][3] == "50.000"
    assert "training data saw test-split molecules" in readme
    assert "## Stale or refused\n\nNone." in readme


def test_ties_and_missing_energy_rank_last():
    def entry(name, mae):
        return lb.Entry(name, "1", "torch", "test", False, mae, None, None, None, None, None, 0, 28, 1.0,
                        "0" * 64, f"results/{name}/test/summary.json")

    ranked = lb.rank([entry("b", 2.0), entry("none", None), entry("a", 2.0), entry("c", 1.0)])
    assert [e.submission for e in ranked["test"]] == ["c", "a", "b", "none"]


def test_publish_is_deterministic(work):
    _publish(work, "one")
    _publish(work, "two")
    _publish(work, "two")  # over existing files
    for name in ("README.md", "leaderboard.csv", "index.html"):
        a = (work / "one" / name).read_bytes()
        b = (work / "two" / name).read_bytes()
        assert a == b, name
    assert sorted(p.name for p in (work / "two").iterdir()) == ["README.md", "index.html", "leaderboard.csv"]


# ----------------------------------------------------------------------------- refusals


def test_tampered_reference_hash_is_refused_naming_the_file(work):
    def edit(d):
        d["provenance"]["reference"]["manifest_sha256"] = "0" * 64

    _edit_summary(work, "pbe", edit)
    res = _publish(work)
    assert [e.submission for e in res.ranked[SPLIT]] == ["lda-leaky", "tpss", "lda"]
    (r,) = res.refusals
    assert r.summary_path == "results/pbe/tiny/summary.json"
    assert r.kind == "stale" and "reference manifest sha256" in r.reason
    assert "\n" not in r.line and r.line.startswith("results/pbe/tiny/summary.json: stale: ")
    readme = (work / "leaderboard" / "README.md").read_text(encoding="utf-8")
    stale = readme.split("## Stale or refused", 1)[1]
    assert "`results/pbe/tiny/summary.json`" in stale
    assert "pbe" not in [r[1] for r in _table_rows(readme.split("## Stale or refused")[0])]
    html = (work / "leaderboard" / "index.html").read_text(encoding="utf-8")
    assert "results/pbe/tiny/summary.json" in html.split('id="stale"', 1)[1]
    assert 'data-submission="pbe"' not in html
    csv_text = (work / "leaderboard" / "leaderboard.csv").read_text()
    assert ",pbe," not in csv_text


def test_other_protocol_version_is_stale(work):
    _edit_summary(work, "lda", lambda d: d.update(protocol_version=harness.PROTOCOL_VERSION + 1))
    (r,) = _publish(work).refusals
    assert r.kind == "stale" and "protocol version" in r.reason and "lda/tiny" in r.summary_path


def test_changed_submission_files_make_the_result_stale(work):
    f = work / "submissions" / "tpss" / "functional.py"
    f.write_text(f.read_text() + "\n# edited after evaluation\n")
    res = _publish(work)
    (r,) = res.refusals
    assert r.summary_path == "results/tpss/tiny/summary.json" and r.kind == "stale"
    assert "changed" in r.reason and "functional.py" in r.reason
    assert "tpss" not in [e.submission for e in res.ranked[SPLIT]]


def test_removed_submission_folder_is_stale(work):
    shutil.rmtree(work / "submissions" / "lda")
    (r,) = _publish(work).refusals
    assert r.kind == "stale" and "no longer exists" in r.reason


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.pop("dipole_mae_debye"), "missing key(s) dipole_mae_debye"),
        (lambda d: d.update(subset=["H2O"], n_molecules=1), "only a subset"),
        (lambda d: d.update(n_molecules=5), "5 molecule(s) scored"),
        (lambda d: d.update(energy_mae_mEh="fast"), "expected a number or null"),
        (lambda d: d["wall_s"].pop("molecules_sum"), "wall_s.molecules_sum"),
    ],
    ids=["missing-key", "subset", "count", "bad-type", "no-wall-time"],
)
def test_incomplete_summary_is_refused(work, edit, words):
    _edit_summary(work, "pbe", edit)
    res = _publish(work)
    (r,) = res.refusals
    assert r.kind == "refused" and words in r.reason, r.line
    assert r.summary_path == "results/pbe/tiny/summary.json"
    assert len(res.ranked[SPLIT]) == 3


def test_per_molecule_csv_missing_a_molecule_is_refused(work):
    p = work / "results" / "lda" / SPLIT / "per_molecule.csv"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:-1]))
    (r,) = _publish(work).refusals
    assert r.kind == "refused" and "per_molecule.csv" in r.reason


def test_malformed_json_is_refused(work):
    _summary(work, "lda").write_text("{not json")
    (r,) = _publish(work).refusals
    assert r.kind == "refused" and "not valid JSON" in r.reason


# ------------------------------------------------------------------------------- outputs


def test_csv_parses_with_pandas(work):
    pd = pytest.importorskip("pandas")
    _publish(work)
    df = pd.read_csv(work / "leaderboard" / "leaderboard.csv")
    assert tuple(df.columns) == CSV_COLUMNS
    assert list(df["submission"]) == EXPECTED_ORDER
    assert list(df["rank"]) == [1, 2, 3, 4]
    assert set(df["split"]) == {SPLIT}
    assert df["energy_mae_mEh"].tolist() == pytest.approx([1.0, 3.0, 5.0, 50.0])
    assert df["eval_wall_s"].tolist() == pytest.approx([9.0, 24.0, 12.0, 6.0])
    assert df["saw_test_molecules"].tolist() == [True, False, False, False]
    exc = df.set_index("submission")["excitation_mae_eV"]
    assert exc["tpss"] == pytest.approx(0.25) and pd.isna(exc["pbe"])
    assert (df["n_failed"] == 0).all() and (df["n_molecules"] == 6).all()


def test_missing_excitation_mae_shows_a_dash(work):
    _edit_summary(work, "lda", lambda d: d.pop("excitation_mae_eV"))  # an older summary
    res = _publish(work)
    assert res.refusals == []
    readme = (work / "leaderboard" / "README.md").read_text(encoding="utf-8")
    header = next(ln for ln in readme.splitlines() if ln.startswith("| rank"))
    col = [c.strip() for c in header.strip("|").split(" | ")].index("excitation MAE (eV)")
    cells = {r[1]: r[col] for r in _table_rows(readme)}
    assert cells == {"lda-leaky †": MISSING, "tpss": "0.250", "pbe": MISSING, "lda": MISSING}
    html = (work / "leaderboard" / "index.html").read_text(encoding="utf-8")
    assert f'<td class="num" data-value="">{MISSING}</td>' in html


def test_html_is_self_contained_with_charts(work):
    _publish(work)
    html = (work / "leaderboard" / "index.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    for forbidden in ("http://", "https://", "<link", " src=", "@import"):
        assert forbidden not in html, forbidden
    assert html.count("<svg") == len(lb.METRIC_COLUMNS) + 1  # a bar chart per metric + the scatter
    assert "energy MAE (mEh) vs eval wall time (s)" in html
    assert "<script>" in html and 'class="sortable"' in html
    assert "Stale or refused" in html


def test_empty_results_folder_publishes_an_empty_board(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "submissions").mkdir()
    res = publish(tmp_path / "results", tmp_path / "submissions", tmp_path / "lb")
    assert res.n_ranked == 0 and res.refusals == []
    assert "No valid results yet" in (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")


def test_nice_ticks_cover_the_range():
    t = lb.nice_ticks(0.0, 47.0)
    assert t[0] == 0.0 and t[-1] >= 47.0 and len(t) <= 8
    assert lb.nice_ticks(-0.3, 0.7)[0] <= -0.3


# ----------------------------------------------------------------------------------- CLI


def test_cli_publish_prints_counts_and_reasons(work, capsys):
    _edit_summary(work, "pbe", lambda d: d.update(subset=["H2O"]))
    rc = cli_main(["leaderboard", "publish", "--results", str(work / "results"),
                   "--submissions", str(work / "submissions"), "--out", str(work / "board")])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"ranked 3 result(s) ({SPLIT}: 3); 0 stale, 1 refused" in out
    assert "results/pbe/tiny/summary.json: refused: incomplete" in out
    assert (work / "board" / "index.html").is_file()


def test_cli_missing_results_folder_is_one_line_error(tmp_path, capsys):
    rc = cli_main(["leaderboard", "publish", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "lb")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: results folder") and err.count("\n") == 1
    assert not (tmp_path / "lb").exists()
