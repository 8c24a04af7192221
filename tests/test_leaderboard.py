"""``harness leaderboard publish``: validation, ranking, staleness and the three output files.

The results are ``summary_format`` 2 summaries built here to the spec ``harness evaluate``
writes (docs/protocol.md, ranking), beside a real ``per_molecule.csv``: the metrics come from
the real registry (`harness.metric_registry.aggregate`), the hashes from the real submission
folders (copies of the bundled ones), the real scoring code and the real evaluation settings,
so the whole module runs in seconds without an SCF.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

import harness
from harness import leaderboard as lb
from harness import metric_registry as registry
from harness import provenance
from harness.cli import main as cli_main
from harness.leaderboard import MISSING, publish
from harness.reference.pins import BUNDLED_MANIFEST_SHA256
from harness.status import STATUSES
from harness.submission import submission_sha256

REPO = Path(__file__).resolve().parents[1]

#: Per submission: |energy error| per molecule (mEh) = the energy MAE, per-molecule wall time (s),
#: excitation MAE (eV) or None (excitations not run). Expected ranking: lda-leaky, tpss, pbe, lda.
FAKE = {
    "lda": (50.0, 1.0, None),
    "pbe": (5.0, 2.0, None),
    "tpss": (3.0, 4.0, 0.25),
    "lda-leaky": (1.0, 1.5, None),
}
EXPECTED_ORDER = ["lda-leaky", "tpss", "pbe", "lda"]
SPLIT = "tiny"
N_SPLIT = 6

#: Columns of the per_molecule.csv written here (the ones the registry aggregates).
CSV_FIELDS = ("key", "status", "error", "energy_error_mEh", "e_rho_mEh", "dipole_error_debye", "density_l2",
              "scf_iter_reduction", "scf_cycles_model_start", "scf_cycles_minao", "excitation_mae_eV", "wall_s")


@functools.lru_cache(maxsize=1)
def split_keys() -> tuple[str, ...]:
    return lb.bundled_reference().split_keys[SPLIT]


def make_rows(name: str, keys=None, failed: dict | None = None, exc_failed=()) -> list[dict]:
    """Per-molecule rows of ``name`` (numbers from `FAKE`); ``failed``: key -> status without
    metrics; ``exc_failed``: keys whose TDDFT failed (status excitations_failed)."""
    err, wall, exc = FAKE[name]
    failed = failed or {}
    rows = []
    for key in keys or split_keys():
        row = dict.fromkeys(CSV_FIELDS)
        row.update(key=key, wall_s=wall)
        if key in failed:
            row.update(status=failed[key], error=f"{key}: {failed[key]}")
        else:
            sign = -1.0 if len(key) % 2 else 1.0  # signed errors: the MAE takes the absolute value
            row.update(status="excitations_failed" if key in exc_failed else "ok", energy_error_mEh=sign * err,
                       e_rho_mEh=err / 10.0, dipole_error_debye=err / 100.0, density_l2=err / 1000.0,
                       scf_iter_reduction=0.4, scf_cycles_model_start=6, scf_cycles_minao=10,
                       excitation_mae_eV=None if key in exc_failed else exc)
        rows.append(row)
    return rows


def _csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in CSV_FIELDS])
    return buf.getvalue().encode()


def write_result(results: Path, subs: Path, name: str, rows: list[dict], *, subset=None,
                 excitations: bool | None = None, sandbox: str = "bwrap") -> Path:
    """``results/<name>/tiny/{per_molecule.csv, summary.json}`` as ``harness evaluate`` writes
    them (summary_format 2). ``excitations`` defaults to whether `FAKE` has a value."""
    from harness.tddft import EXCITATION_METRIC_SETTINGS

    if excitations is None:
        excitations = FAKE[name][2] is not None
    folder = results / name / SPLIT
    folder.mkdir(parents=True, exist_ok=True)
    raw = _csv_bytes(rows)
    (folder / "per_molecule.csv").write_bytes(raw)
    counts = dict.fromkeys(STATUSES, 0)
    for r in rows:
        counts[r["status"]] += 1
    covered = counts["ok"] + counts["excitations_failed"]
    settings = provenance.EvaluationSettings(excitations=dict(EXCITATION_METRIC_SETTINGS) if excitations else None)
    summary = {
        "summary_format": 2,
        "submission": name,
        "split": SPLIT,
        "protocol_version": harness.PROTOCOL_VERSION,
        "subset": subset,
        **registry.aggregate(rows),
        "n_split": N_SPLIT,
        "n_molecules": len(rows),
        "n_failed": len(rows) - counts["ok"],
        "n_not_converged": counts["not_converged"],
        "model_scf_iterations_mean": None,
        "model_scf_iterations_max": None,
        "status_counts": counts,
        "failed_molecules": [r["key"] for r in rows if r["status"] != "ok"],
        "coverage": covered / N_SPLIT,
        "complete": subset is None and covered == N_SPLIT,
        "excitations_complete": (counts["ok"] == N_SPLIT) if excitations else None,
        "csv_sha256": hashlib.sha256(raw).hexdigest(),
        "provenance": {
            "reference": {"name": "g2-b3lyp-svp", "manifest_sha256": BUNDLED_MANIFEST_SHA256},
            "submission": {"name": name, "sha256": submission_sha256(subs / name)},
            "sandbox": sandbox,
            "limits": {"timeout_s": 600.0, "memory_gb": None},
            "scoring_sha256": provenance.scoring_sha256(),
            "evaluation_settings": settings.to_dict(),
            "settings_sha256": settings.sha256(),
        },
        "wall_s": {"total": 1.0, "molecules_sum": float(sum(r["wall_s"] for r in rows))},
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return folder / "summary.json"


def build_results(base: Path) -> tuple[Path, Path]:
    """Write ``base/submissions`` (copies of bundled submissions, plus ``lda-leaky`` that declares
    ``saw_test_molecules: true``) and a complete ``base/results/<name>/tiny/`` for each.
    Returns (results, submissions)."""
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
    for name in FAKE:
        write_result(results, subs, name, make_rows(name))
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


def _rewrite(work: Path, name: str, rows: list[dict], **kw) -> None:
    write_result(work / "results", work / "submissions", name, rows, **kw)


def _summary(work: Path, name: str) -> Path:
    return work / "results" / name / SPLIT / "summary.json"


def _edit_summary(work: Path, name: str, edit) -> None:
    p = _summary(work, name)
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data, indent=2))


def _readme(work: Path) -> str:
    return (work / "leaderboard" / "README.md").read_text(encoding="utf-8")


def _html(work: Path) -> str:
    return (work / "leaderboard" / "index.html").read_text(encoding="utf-8")


def _csv_rows(work: Path) -> list[dict]:
    with open(work / "leaderboard" / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def _header(readme: str) -> list[str]:
    line = next(ln for ln in readme.splitlines() if ln.startswith("| rank"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def _table_rows(readme: str) -> list[dict[str, str]]:
    """The split's table as {header: cell} dicts, in order."""
    lines = [ln for ln in readme.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split(" | ")))) for ln in lines[2:]]


def _col(key: str) -> str:
    return next(c.header for c in lb.TABLE_COLUMNS if c.key == key)


def _tbody(html: str, kind: str) -> str:
    start = html.index(f'<tbody class="{kind}">')
    return html[start:html.index("</tbody>", start)]


# ----------------------------------------------------------------------------------- ranking


def test_ranking_order_by_primary_metric(work):
    res = _publish(work)
    assert res.refusals == []
    entries = res.ranked[SPLIT]
    assert [e.submission for e in entries] == EXPECTED_ORDER
    assert [e.rank for e in entries] == [1, 2, 3, 4]
    assert [e.metrics["energy_mae_mEh"] for e in entries] == pytest.approx([1.0, 3.0, 5.0, 50.0])
    assert entries[2].wall_s == pytest.approx(12.0)  # 6 molecules × 2 s, wall_s.molecules_sum
    readme = _readme(work)
    header = _header(readme)
    for m in registry.LEADERBOARD_METRICS:
        assert m.header in header, m.header
    for title in ("rank", "submission", "framework", "failed", "coverage", "sandbox", "eval wall time (s)"):
        assert title in header, title
    rows = _table_rows(readme)
    assert [r["submission"] for r in rows] == ["lda-leaky †", "tpss", "pbe", "lda"]
    energy = registry.PRIMARY.header
    assert rows[0][energy] == "1.000" and rows[3][energy] == "50.000"
    assert {r["coverage"] for r in rows} == {"6/6 molecules"}
    assert "training data saw test-split molecules" in readme
    assert "## Stale or refused\n\nNone." in readme


def _entry(name: str, mae: float | None, complete: bool = True, covered: int = 28) -> lb.Entry:
    return lb.Entry(submission=name, version="1", framework="torch", split="test", saw_test_molecules=False,
                    metrics={"energy_mae_mEh": mae}, n_failed=28 - covered, n_molecules=28, n_split=28,
                    n_covered=covered, complete=complete, excitations_complete=None, n_excitations=0,
                    sandbox="bwrap", wall_s=1.0, submission_sha256="0" * 64,
                    summary_path=f"results/{name}/test/summary.json")


def test_ties_and_missing_primary_rank_last_partial_after_all():
    board = lb.rank([_entry("b", 2.0), _entry("none", None), _entry("part", 0.1, False, 20), _entry("a", 2.0),
                     _entry("c", 1.0), _entry("more", 0.5, False, 27)])
    assert [e.submission for e in board["test"]] == ["c", "a", "b", "none", "more", "part"]
    assert [e.rank for e in board["test"]] == [1, 2, 3, 4, None, None]


def test_publish_is_deterministic(work):
    _rewrite(work, "pbe", make_rows("pbe", failed={"CO": "timeout"}))  # a partial row too
    _publish(work, "one")
    _publish(work, "two")
    _publish(work, "two")  # over existing files
    for name in ("README.md", "leaderboard.csv", "index.html"):
        a = (work / "one" / name).read_bytes()
        b = (work / "two" / name).read_bytes()
        assert a == b, name
    assert sorted(p.name for p in (work / "two").iterdir()) == ["README.md", "index.html", "leaderboard.csv"]


# ------------------------------------------------------------------ failures count: partial results


def test_failing_two_of_six_ranks_below_a_complete_result_despite_a_better_mae(work):
    # lda-leaky has the best MAE (1 mEh over the molecules it kept) but fails 2 of 6 molecules
    _rewrite(work, "lda-leaky", make_rows("lda-leaky", failed={"CO": "timeout", "N2": "crashed"}))
    res = _publish(work)
    assert res.refusals == []
    board = res.board[SPLIT]
    assert [e.submission for e in board] == ["tpss", "pbe", "lda", "lda-leaky"]
    assert [e.rank for e in board] == [1, 2, 3, None]
    assert [e.submission for e in res.ranked[SPLIT]] == ["tpss", "pbe", "lda"]
    leaky = board[-1]
    assert leaky.metrics["energy_mae_mEh"] == pytest.approx(1.0) and leaky.n_failed == 2
    assert (leaky.n_covered, leaky.n_split) == (4, 6) and not leaky.complete

    rows = _table_rows(_readme(work))
    assert [r["submission"] for r in rows] == ["tpss", "pbe", "lda", "lda-leaky †"]
    assert rows[-1]["rank"] == lb.UNRANKED and rows[-1]["coverage"] == "4/6 molecules"
    assert rows[-1][_col("n_failed")] == "2"
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert "lda-leaky 4/6" in _readme(work)  # the note under the table

    lines = _csv_rows(work)
    assert [r["submission"] for r in lines] == ["tpss", "pbe", "lda", "lda-leaky"]
    assert [r["rank"] for r in lines] == ["1", "2", "3", ""]
    assert float(lines[-1]["coverage"]) == pytest.approx(4 / 6) and float(lines[0]["coverage"]) == 1.0

    html = _html(work)
    assert 'data-submission="lda-leaky"' in _tbody(html, "partial")
    assert 'data-submission="lda-leaky"' not in _tbody(html, "ranked")
    assert html.index('<tbody class="ranked">') < html.index('<tbody class="partial">')


def test_subset_run_is_partial_and_unranked(work):
    keys = ["H2O", "CO"]
    _rewrite(work, "pbe", make_rows("pbe", keys=keys), subset=keys)
    res = _publish(work)
    assert res.refusals == []
    assert [e.submission for e in res.ranked[SPLIT]] == ["lda-leaky", "tpss", "lda"]
    (pbe,) = res.partial[SPLIT]
    assert pbe.submission == "pbe" and pbe.rank is None and (pbe.n_covered, pbe.n_split) == (2, 6)
    assert _table_rows(_readme(work))[-1]["coverage"] == "2/6 molecules"


def test_cli_reports_ranked_results_only(work, capsys):
    _rewrite(work, "lda", make_rows("lda", failed={"CO": "memory"}))
    rc = cli_main(["leaderboard", "publish", "--results", str(work / "results"),
                   "--submissions", str(work / "submissions"), "--out", str(work / "board")])
    assert rc == 0
    assert f"ranked 3 result(s) ({SPLIT}: 3); 1 partial (unranked), 0 stale, 0 refused" in capsys.readouterr().out


# ------------------------------------------------------------------------------- excitations


def test_partial_excitations_are_marked_with_a_legend_line(work):
    rows = make_rows("tpss", exc_failed={"CO", "N2"})
    _rewrite(work, "tpss", rows)
    res = _publish(work)
    assert res.refusals == []
    tpss = next(e for e in res.ranked[SPLIT] if e.submission == "tpss")
    assert tpss.rank == 2 and tpss.complete  # metrics 1–5 everywhere: still ranked
    assert tpss.excitations_complete is False and tpss.n_excitations == 4
    readme = _readme(work)
    exc = _col("excitation_mae_eV")
    cells = {r["submission"]: r[exc] for r in _table_rows(readme)}
    assert cells["tpss"] == "0.250\\*"  # Markdown-escaped "0.250*"
    assert f"\\* tpss: {registry.BY_KEY['excitation_mae_eV'].title} over 4 of 6 molecules" in readme
    html = _html(work)
    assert '>0.250*</td>' in html and "tpss: excitation MAE over 4 of 6 molecules" in html
    line = next(r for r in _csv_rows(work) if r["submission"] == "tpss")
    assert line["excitations_complete"] == "false" and float(line["excitation_mae_eV"]) == pytest.approx(0.25)


def test_complete_excitations_are_unmarked_and_not_run_is_shown(work):
    _publish(work)
    readme = _readme(work)
    exc = _col("excitation_mae_eV")
    cells = {r["submission"]: r[exc] for r in _table_rows(readme)}
    assert cells == {"lda-leaky †": lb.NOT_RUN, "tpss": "0.250", "pbe": lb.NOT_RUN, "lda": lb.NOT_RUN}
    assert "over 6 of 6" not in readme and " over " not in readme.split("## Stale")[0]
    html = _html(work)
    assert f'<td class="num" data-value="">{lb.NOT_RUN}</td>' in html
    exc_csv = {r["submission"]: r["excitations_complete"] for r in _csv_rows(work)}
    assert exc_csv == {"lda-leaky": "", "tpss": "true", "pbe": "", "lda": ""}


# ------------------------------------------------------------------------------- staleness


def test_summary_before_format_2_is_stale(work):
    def old(d):
        for k in ("summary_format", "n_split", "status_counts", "coverage", "complete", "excitations_complete",
                  "csv_sha256"):
            d.pop(k)
        for k in lb.PROVENANCE_KEYS:
            d["provenance"].pop(k)

    _edit_summary(work, "pbe", old)
    res = _publish(work)
    (r,) = res.refusals
    assert r.summary_path == "results/pbe/tiny/summary.json" and r.kind == "stale"
    assert "made before the harness recorded its scoring code" in r.reason
    assert "results/pbe/tiny/summary.json" in _readme(work).split("## Stale or refused", 1)[1]
    assert "pbe" not in [e.submission for e in res.ranked[SPLIT]]


def _copy_harness_sources(dst: Path) -> None:
    for p in provenance.HARNESS_DIR.rglob("*.py"):
        if "__pycache__" in p.parts:
            continue
        target = dst / p.relative_to(provenance.HARNESS_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)


def test_committed_results_are_of_this_scoring_code():
    """Every committed leaderboard summary and every cached Skala-1.0 test molecule was made by
    the scoring code of this checkout: a change to a scoring file (or a new module not listed in
    NOT_SCORING) would silently make them all stale and their reruns cost hours."""
    from harness.provenance import scoring_sha256

    repo = Path(__file__).resolve().parents[1]
    here = scoring_sha256()
    made = {str(f.relative_to(repo)): json.loads(f.read_text())["provenance"]["scoring_sha256"]
            for f in repo.glob("leaderboard/results/*/*/summary.json")}
    made |= {str(f.relative_to(repo)): json.loads(f.read_text())["cache"]["scoring_sha256"]
             for f in repo.glob("studies/*/results/*/*/molecules/*.json")}
    assert len(made) >= 13
    stale = sorted(k for k, v in made.items() if v != here)
    assert not stale, f"made by other scoring code than this checkout's: {stale[:5]} ({len(stale)})"


def test_edited_scoring_file_makes_every_result_stale(work, tmp_path, monkeypatch):
    copy = tmp_path / "harness-copy"
    _copy_harness_sources(copy)
    uncached = provenance.scoring_sha256.__wrapped__
    monkeypatch.setattr(provenance, "scoring_sha256", lambda root=None: uncached(copy))
    for name in FAKE:  # the results were made by the copy as it is now
        _edit_summary(work, name, lambda d: d["provenance"].update(scoring_sha256=uncached(copy)))
    assert _publish(work).refusals == []

    leaderboard_file = copy / "leaderboard" / "columns.py"  # presentation: not scoring code
    leaderboard_file.write_text(leaderboard_file.read_text() + "\n# edited\n")
    assert _publish(work).refusals == []

    metrics_file = copy / "metrics.py"
    metrics_file.write_text(metrics_file.read_text() + "\n# edited after evaluation\n")
    res = _publish(work)
    assert res.n_ranked == 0 and len(res.refusals) == len(FAKE)
    for r in res.refusals:
        assert r.kind == "stale" and "scoring code changed" in r.reason, r.line
    assert "scoring code changed" in _readme(work).split("## Stale or refused", 1)[1]


def test_monkeypatched_scoring_hash_makes_the_result_stale(work, monkeypatch):
    monkeypatch.setattr(provenance, "scoring_sha256", lambda root=None: "f" * 64)
    res = _publish(work)
    assert res.n_ranked == 0 and {r.kind for r in res.refusals} == {"stale"}
    assert "scoring sha256" in res.refusals[0].reason


def test_changed_evaluation_settings_make_the_result_stale(work):
    def looser(d):
        s = provenance.EvaluationSettings(**{**d["provenance"]["evaluation_settings"], "conv_tol_grad": 1e-4})
        d["provenance"].update(evaluation_settings=s.to_dict(), settings_sha256=s.sha256())

    _edit_summary(work, "lda", looser)
    res = _publish(work)
    (r,) = res.refusals
    assert r.summary_path == "results/lda/tiny/summary.json" and r.kind == "stale"
    assert "evaluation settings changed" in r.reason and "conv_tol_grad" in r.reason
    assert [e.submission for e in res.ranked[SPLIT]] == ["lda-leaky", "tpss", "pbe"]


def test_changed_excitation_settings_make_only_results_with_excitations_stale(work, monkeypatch):
    from harness import tddft

    monkeypatch.setitem(tddft.EXCITATION_METRIC_SETTINGS, "max_cycle", 50)
    res = _publish(work)
    (r,) = res.refusals
    assert r.summary_path == "results/tpss/tiny/summary.json" and r.kind == "stale"
    assert "settings sha256" in r.reason and "excitations" in r.reason


def test_tampered_reference_hash_is_stale_naming_the_file(work):
    def edit(d):
        d["provenance"]["reference"]["manifest_sha256"] = "0" * 64

    _edit_summary(work, "pbe", edit)
    res = _publish(work)
    assert [e.submission for e in res.ranked[SPLIT]] == ["lda-leaky", "tpss", "lda"]
    (r,) = res.refusals
    assert r.summary_path == "results/pbe/tiny/summary.json"
    assert r.kind == "stale" and "reference manifest sha256" in r.reason
    assert "\n" not in r.line and r.line.startswith("results/pbe/tiny/summary.json: stale: ")
    readme = _readme(work)
    assert "`results/pbe/tiny/summary.json`" in readme.split("## Stale or refused", 1)[1]
    assert "pbe" not in [r["submission"] for r in _table_rows(readme.split("## Stale or refused")[0])]
    html = _html(work)
    assert "results/pbe/tiny/summary.json" in html.split('id="stale"', 1)[1]
    assert 'data-submission="pbe"' not in html
    assert "pbe" not in [r["submission"] for r in _csv_rows(work)]


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


# ----------------------------------------------------------------------------- refusals


def test_csv_not_written_with_the_summary_is_refused_naming_the_file(work):
    p = work / "results" / "lda" / SPLIT / "per_molecule.csv"
    p.write_bytes(p.read_bytes().replace(b"50.0", b"40.0"))  # a later run's CSV, the old summary
    res = _publish(work)
    (r,) = res.refusals
    assert r.summary_path == "results/lda/tiny/summary.json" and r.kind == "refused"
    assert "per_molecule.csv" in r.reason and "csv_sha256" in r.reason
    assert "lda" not in [e.submission for e in res.ranked[SPLIT]]
    assert "per_molecule.csv" in _readme(work).split("## Stale or refused", 1)[1]


def test_missing_csv_is_refused_naming_the_file(work):
    (work / "results" / "pbe" / SPLIT / "per_molecule.csv").unlink()
    (r,) = _publish(work).refusals
    assert r.summary_path == "results/pbe/tiny/summary.json" and r.kind == "refused"
    assert "per_molecule.csv beside it is missing" in r.reason


def test_csv_missing_a_molecule_is_refused_even_with_a_matching_hash(work):
    p = work / "results" / "lda" / SPLIT / "per_molecule.csv"
    raw = b"".join(p.read_bytes().splitlines(keepends=True)[:-1])
    p.write_bytes(raw)
    _edit_summary(work, "lda", lambda d: d.update(csv_sha256=hashlib.sha256(raw).hexdigest()))
    (r,) = _publish(work).refusals
    assert r.kind == "refused" and "per_molecule.csv beside it lacks" in r.reason


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.pop("dipole_mae_debye"), "missing key(s) dipole_mae_debye"),
        (lambda d: d["provenance"].pop("sandbox"), "missing key(s) provenance.sandbox"),
        (lambda d: d.update(subset=["H2O"]), "the subset names 1"),
        (lambda d: d.update(n_molecules=5), "5 molecule(s) scored"),
        (lambda d: d.update(n_split=5), "'n_split' is 5"),
        (lambda d: d.update(n_failed=1), "'n_failed' is 1"),
        (lambda d: d["status_counts"].update(ok=5, lost=1), "'status_counts' must map statuses"),
        (lambda d: d["status_counts"].update(ok=5, timeout=1), "'n_failed' is 0"),
        (lambda d: d.update(coverage=0.5), "'coverage' is 0.5"),
        (lambda d: d.update(complete=False), "inconsistent: 'complete' is False"),
        (lambda d: d.update(energy_mae_mEh="fast"), "expected float or null"),
        (lambda d: d["wall_s"].pop("molecules_sum"), "wall_s.molecules_sum"),
        (lambda d: d["provenance"].update(sandbox="docker"), "'provenance.sandbox' is 'docker'"),
        (lambda d: d.update(summary_format=3), "summary_format 3 is newer"),
    ],
    ids=["missing-key", "missing-provenance", "subset", "count", "n-split", "n-failed", "bad-status",
         "counts-vs-failed", "coverage", "complete", "bad-type", "no-wall-time", "sandbox", "format"],
)
def test_malformed_or_inconsistent_summary_is_refused(work, edit, words):
    _edit_summary(work, "pbe", edit)
    res = _publish(work)
    (r,) = res.refusals
    assert r.kind == "refused" and words in r.reason, r.line
    assert r.summary_path == "results/pbe/tiny/summary.json"
    assert len(res.ranked[SPLIT]) == 3


def test_partial_result_claiming_to_be_complete_is_refused(work):
    _rewrite(work, "lda-leaky", make_rows("lda-leaky", failed={"CO": "timeout"}))
    _edit_summary(work, "lda-leaky", lambda d: d.update(complete=True, coverage=1.0))
    (r,) = _publish(work).refusals
    assert r.kind == "refused" and "'coverage' is 1.0 but 'status_counts' give 5/6" in r.reason


def test_malformed_json_is_refused(work):
    _summary(work, "lda").write_text("{not json")
    (r,) = _publish(work).refusals
    assert r.kind == "refused" and "not valid JSON" in r.reason


# ------------------------------------------------------------------------------- outputs


def test_sandbox_is_shown(work):
    _rewrite(work, "lda", make_rows("lda"), sandbox="none")
    _publish(work)
    cells = {r["submission"]: r["sandbox"] for r in _table_rows(_readme(work))}
    assert cells == {"lda-leaky †": "bwrap", "tpss": "bwrap", "pbe": "bwrap", "lda": "none"}
    assert {r["submission"]: r["sandbox"] for r in _csv_rows(work)}["lda"] == "none"
    assert '<td class="txt" data-value="none">none</td>' in _html(work)


def test_columns_follow_the_registry(work, monkeypatch):
    renamed = tuple(dataclasses.replace(m, title="dipole error, mean") if m.key == "dipole_mae_debye" else m
                    for m in registry.LEADERBOARD_METRICS if m.key != "density_l2_mean")
    monkeypatch.setattr(registry, "LEADERBOARD_METRICS", renamed)
    _publish(work)
    header = _header(_readme(work))
    assert "dipole error, mean (D)" in header and "dipole MAE (D)" not in header
    assert "L2 density error mean (a.u.)" not in header
    assert [h for h in header if h in {m.header for m in renamed}] == [m.header for m in renamed]
    html = _html(work)
    assert ">dipole error, mean (D)</th>" in html and "dipole error, mean (D) \u2014 lower is better" in html
    assert html.count("<svg") == len(renamed) + 1
    assert "density_l2_mean" not in lb.CSV_COLUMNS
    assert "density_l2_mean" not in next(iter(_csv_rows(work)))


def test_ranking_follows_the_registry_primary_metric(work, monkeypatch):
    monkeypatch.setattr(registry, "PRIMARY", dataclasses.replace(registry.PRIMARY, better="higher"))
    res = _publish(work)
    assert [e.submission for e in res.ranked[SPLIT]] == EXPECTED_ORDER[::-1]


def test_csv_parses_with_pandas(work):
    pd = pytest.importorskip("pandas")
    _publish(work)
    df = pd.read_csv(work / "leaderboard" / "leaderboard.csv")
    assert tuple(df.columns) == lb.CSV_COLUMNS
    assert list(df["submission"]) == EXPECTED_ORDER
    assert list(df["rank"]) == [1, 2, 3, 4]
    assert set(df["split"]) == {SPLIT}
    assert df["energy_mae_mEh"].tolist() == pytest.approx([1.0, 3.0, 5.0, 50.0])
    assert df["eval_wall_s"].tolist() == pytest.approx([9.0, 24.0, 12.0, 6.0])
    assert df["saw_test_molecules"].tolist() == [True, False, False, False]
    exc = df.set_index("submission")["excitation_mae_eV"]
    assert exc["tpss"] == pytest.approx(0.25) and pd.isna(exc["pbe"])
    assert (df["n_failed"] == 0).all() and (df["n_molecules"] == 6).all() and (df["coverage"] == 1.0).all()


def test_html_is_self_contained_with_charts(work):
    from harness.leaderboard import html as lb_html

    _publish(work)
    html = _html(work)
    assert html.startswith("<!DOCTYPE html>")
    for forbidden in ("http://", "https://", "<link", " src=", "@import", "$"):
        assert forbidden not in html, forbidden
    assert html.count("<svg") == len(lb.METRIC_COLUMNS) + 1  # a bar chart per metric + the scatter
    assert f"{registry.PRIMARY.header} vs eval wall time (s)" in html
    assert "<script>" in html and 'class="sortable"' in html
    assert "Stale or refused" in html
    assert lb_html.asset("style.css") in html and lb_html.asset("table.js") in html


def test_assets_are_package_data():
    text = (REPO / "pyproject.toml").read_text()
    assert '"harness.leaderboard" = ["assets/*"]' in text
    from harness.leaderboard import html as lb_html

    assets = REPO / "harness" / "leaderboard" / "assets"
    assert sorted(lb_html.ASSETS) == sorted(p.name for p in assets.iterdir())


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


def test_leaderboard_error_is_a_harness_error():
    from harness.errors import HarnessError

    assert issubclass(lb.LeaderboardError, HarnessError) and issubclass(lb.LeaderboardError, RuntimeError)
    assert MISSING == "\u2014"


# ----------------------------------------------------------------------------------- CLI


def test_cli_publish_prints_counts_and_reasons(work, capsys):
    _edit_summary(work, "pbe", lambda d: d.update(n_molecules=5))
    rc = cli_main(["leaderboard", "publish", "--results", str(work / "results"),
                   "--submissions", str(work / "submissions"), "--out", str(work / "board")])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"ranked 3 result(s) ({SPLIT}: 3); 0 partial (unranked), 0 stale, 1 refused" in out
    assert "results/pbe/tiny/summary.json: refused: incomplete" in out
    assert (work / "board" / "index.html").is_file()


def test_cli_missing_results_folder_is_one_line_error(tmp_path, capsys):
    rc = cli_main(["leaderboard", "publish", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "lb")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: results folder") and err.count("\n") == 1
    assert not (tmp_path / "lb").exists()
