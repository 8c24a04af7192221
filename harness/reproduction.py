"""The E+D versus DI-Loss comparison tables of `docs/reproduction.md`.

Reads ``results/<arch>-<loss>/test/summary.json`` for the four baseline architectures and
both losses, and renders a Markdown table of every metric, the relative change from E+D to DI
per architecture and its uniform average, beside the headline numbers of the paper
(*Derivative Informed Learning of Exchange-Correlation Functionals*, ICML 2026,
arXiv 2606.04279). ``python -m harness.reproduction [--results results] [--doc docs/reproduction.md]``
rewrites the block between the two markers of the doc in place (atomically).

With ``--seeds 0 1 2`` it renders the seed study instead (`render_study`): per architecture the
mean ± standard deviation over seeds of every metric for E+D and DI, and the relative change
DI against E+D with a 95 % interval from a **paired bootstrap over molecules and seeds**: each
replicate draws the test molecules with replacement (the same draw for every model, so E+D and
DI stay paired by molecule) and the seeds with replacement (the same seeds for both losses, so
they stay paired by seed), recomputes each model's aggregate metric from its per-molecule
column (the registry's aggregation) averaged over the drawn seeds, and takes
(DI − E+D)/|E+D|. The uniform average over architectures is bootstrapped the same way, from
the same draws. A molecule that failed in any run of an architecture (either loss, any seed)
leaves that architecture's comparison on both sides, so the pairing holds; the doc names it,
and the per-model table counts it under *failed*. An architecture with a missing run is left
out, and the doc says over how many architectures the average is. A verdict compares the interval with zero: *reproduced* when the whole interval
lies on the improving side, *not reproduced* when it lies on the worsening side, *inconclusive*
when it contains zero. Seed 0 of each model lives in ``results/<arch>-<loss>``, seed s > 0 in
``results/<arch>-<loss>-s<s>``.

With ``--cost`` it prints what the study cost instead (`study_cost`): each run's training wall
time across resumes (``wall_s_total`` of its ``training.json``, paper preset only) and its
test-split evaluation (the summary's ``molecules_sum``), their sums, and the wall time of the
study's stages 3–4 run ``--jobs`` at a time in `scripts/reproduce.sh`'s order (`makespan`: each
job slot takes the next run when it frees), computed from those measured times.
"""

from __future__ import annotations

import argparse
import csv
import json
import heapq
import math
from pathlib import Path

import numpy as np

from harness.io import atomic_write_text
from harness.metric_registry import LEADERBOARD_METRICS, Metric
from harness.submission import submission_sha256

ARCHS = ("xcdiff", "nagai", "nlmp", "egxc")
LOSSES = ("ed", "di")
START = "<!-- reproduction-table:start -->"
END = "<!-- reproduction-table:end -->"

#: The table's metrics: the leaderboard's, from the one registry (titles, units, formats).
METRICS: tuple[Metric, ...] = LEADERBOARD_METRICS

#: The paper's headline numbers (arXiv 2606.04279), for the side-by-side column.
PAPER = {
    "energy_mae_mEh": "−66 % (average over four architectures)",
    "e_rho_mean_mEh": "1.2 → 0.8 mEh (−33 %)",
    "dipole_mae_debye": "not given as a headline",
    "density_l2_mean": "not given as a headline",
    "scf_iter_reduction_mean": "distilled densities cut B3LYP SCF iterations by up to 50 %",
    "excitation_mae_eV": "−19 % to −35 % (Hessian supervision)",
}


def load_summaries(results: Path, split: str = "test") -> dict[tuple[str, str], dict]:
    """{(arch, loss): summary} for the result files that exist."""
    out = {}
    for arch in ARCHS:
        for loss in LOSSES:
            p = Path(results) / f"{arch}-{loss}" / split / "summary.json"
            if p.is_file():
                out[(arch, loss)] = _read_json(p)
    return out


def relative_change(ed: float | None, di: float | None) -> float | None:
    """(DI − E+D) / |E+D|, or None when either is missing or E+D is 0."""
    if ed is None or di is None or not math.isfinite(ed) or not math.isfinite(di) or ed == 0:
        return None
    return (di - ed) / abs(ed)


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:+.0f} %"


def render_table(summaries: dict[tuple[str, str], dict]) -> str:
    """Markdown: the metric table, then the E+D → DI relative changes with their average."""
    lines = ["| model | " + " | ".join(m.header for m in METRICS) + " | failed |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    for arch in ARCHS:
        for loss in LOSSES:
            s = summaries.get((arch, loss))
            if s is None:
                lines.append(f"| {arch}-{loss} | " + " | ".join("—" for _ in METRICS) + " | (not evaluated) |")
                continue
            cells = [_fmt(s.get(m.key), m.fmt) for m in METRICS]
            lines.append(f"| {arch}-{loss} | " + " | ".join(cells) + f" | {s.get('n_failed', '—')} |")
    higher = ", ".join(m.title for m in METRICS if m.better == "higher") or "none"
    lines += ["", "Relative change from E+D to DI, (DI − E+D) / |E+D| (negative is better for every column "
              f"except where higher is better: {higher}):", "",
              "| architecture | " + " | ".join(m.header for m in METRICS) + " |",
              "|---|" + "---|" * len(METRICS)]
    per_metric: dict[str, list[float]] = {m.key: [] for m in METRICS}
    for arch in ARCHS:
        ed, di = summaries.get((arch, "ed")), summaries.get((arch, "di"))
        cells = []
        for m in METRICS:
            r = relative_change(ed.get(m.key) if ed else None, di.get(m.key) if di else None)
            if r is not None:
                per_metric[m.key].append(r)
            cells.append(_pct(r))
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    avg = [_pct(sum(v) / len(v)) if v else "—" for v in (per_metric[m.key] for m in METRICS)]
    lines.append("| **uniform average** | " + " | ".join(avg) + " |")
    lines.append("| paper (arXiv 2606.04279) | " + " | ".join(PAPER.get(m.key, "—") for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# the seed study
# ------------------------------------------------------------------------------------------

#: Which architecture's interval decides each headline claim (None: the uniform average).
CLAIM_SCOPE = {"excitation_mae_eV": "xcdiff"}
BOOTSTRAP_SAMPLES = 2000


def run_name(arch: str, loss: str, seed: int) -> str:
    """The submission (and results) folder of one run: seed 0 is the bundled baseline."""
    return f"{arch}-{loss}" if seed == 0 else f"{arch}-{loss}-s{seed}"


def run_dir(arch: str, loss: str, seed: int, submissions: Path = Path("submissions"),
            study: Path = Path("studies/paper")) -> Path:
    """The trained submission of one run of the seed study (`scripts/reproduce.sh paper`): seed 0
    replaces the bundled baseline, the other seeds live under the study's ``runs/``."""
    if seed == 0:
        return Path(submissions) / run_name(arch, loss, 0)
    return Path(study) / "runs" / run_name(arch, loss, seed)


def makespan(durations_s, jobs: int) -> float:
    """Wall seconds to run ``durations_s`` in order on ``jobs`` slots, each slot taking the next
    item as soon as it is free (what ``xargs -P jobs`` does)."""
    slots = [0.0] * max(1, int(jobs))
    for d in durations_s:
        heapq.heappush(slots, heapq.heappop(slots) + float(d))
    return max(slots)


_REQUIRED = object()


def _read_json(path: Path) -> dict:
    """A JSON file; a clear error naming it if it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def _get(data: dict, path: Path, *keys, default=_REQUIRED):
    """``data[k1][k2]…`` of the JSON file ``path``; ``default`` if given and missing, else an
    error naming the file and the field."""
    try:
        for k in keys:
            data = data[k]
        return data
    except (KeyError, TypeError):
        if default is not _REQUIRED:
            return default
        raise ValueError(f"{path}: no {'.'.join(keys)}") from None


def study_cost(seeds, submissions: Path = Path("submissions"), study: Path = Path("studies/paper"),
               results: Path = Path("results"), split: str = "test", jobs: int = 2, preset: str = "paper") -> dict:
    """What the seed study cost (module docstring), in seconds: ``runs`` (one dict per run, in
    the script's order: seed, architecture, loss; ``train_s`` None unless the run finished with
    ``preset``, ``eval_s`` None unless the summary is of the run's submission as it is now),
    ``train_s_sum``, ``eval_s_sum``, ``makespan_s`` (stages 3 and 4 at ``jobs`` at a time; None
    until every run is done) and ``missing`` (names of runs lacking either)."""
    runs = []
    for seed in seeds:
        for arch in ARCHS:
            for loss in LOSSES:
                name = run_name(arch, loss, seed)
                train_s = eval_s = None
                folder = run_dir(arch, loss, seed, submissions, study)
                info = folder / "training.json"
                if info.is_file():
                    t = _read_json(info)
                    if _get(t, info, "preset", "name", default=None) == preset:
                        train_s = float(_get(t, info, "wall_s_total"))
                summ = Path(results) / name / split / "summary.json"
                if train_s is not None and summ.is_file():  # an evaluation of this very model
                    sm = _read_json(summ)
                    if _get(sm, summ, "provenance", "submission", "sha256", "combined") == \
                            submission_sha256(folder)["combined"]:
                        eval_s = float(_get(sm, summ, "wall_s", "molecules_sum"))
                runs.append({"name": name, "arch": arch, "loss": loss, "seed": seed,
                             "train_s": train_s, "eval_s": eval_s})
    missing = [r["name"] for r in runs if r["train_s"] is None or r["eval_s"] is None]
    done_t = [r["train_s"] for r in runs if r["train_s"] is not None]
    done_e = [r["eval_s"] for r in runs if r["eval_s"] is not None]
    return {
        "runs": runs, "missing": missing, "jobs": jobs,
        "train_s_sum": sum(done_t), "eval_s_sum": sum(done_e),
        "makespan_s": None if missing else makespan([r["train_s"] for r in runs], jobs)
        + makespan([r["eval_s"] for r in runs], jobs),
    }


def render_cost(cost: dict) -> str:
    """`study_cost` as a Markdown table with its totals (hours)."""
    h = lambda s: "—" if s is None else f"{s / 3600:.2f}"  # noqa: E731
    lines = ["| run | training h | evaluation h |", "| --- | --- | --- |"]
    lines += [f"| {r['name']} | {h(r['train_s'])} | {h(r['eval_s'])} |" for r in cost["runs"]]
    lines.append(f"| **sum** | {h(cost['train_s_sum'])} | {h(cost['eval_s_sum'])} |")
    tail = (f"stages 3–4, {cost['jobs']} at a time, from these times: {h(cost['makespan_s'])} h"
            if cost["makespan_s"] is not None else f"not done yet: {', '.join(cost['missing'])}")
    return "\n".join(lines) + "\n\n" + tail + "\n"


def load_study(results: Path, seeds, split: str = "test") -> dict[tuple[str, str, int], dict]:
    """{(arch, loss, seed): {"summary": dict, "rows": {key: row}}} for the runs that exist."""
    out = {}
    for arch in ARCHS:
        for loss in LOSSES:
            for seed in seeds:
                d = Path(results) / run_name(arch, loss, seed) / split
                if not (d / "summary.json").is_file() or not (d / "per_molecule.csv").is_file():
                    continue
                with open(d / "per_molecule.csv", newline="") as f:
                    rows = {r["key"]: r for r in csv.DictReader(f)}
                out[(arch, loss, seed)] = {"summary": _read_json(d / "summary.json"), "rows": rows}
    return out


def _matrix(study, arch: str, loss: str, seeds, metric: Metric, keys) -> np.ndarray | None:
    """(seeds, molecules) values of ``metric``'s column (|x| for ``mean_abs``), NaN where a
    molecule has no value (it failed); None if a run is missing."""
    out = np.full((len(seeds), len(keys)), np.nan)
    for i, seed in enumerate(seeds):
        run = study.get((arch, loss, seed))
        if run is None:
            return None
        for j, k in enumerate(keys):
            v = run["rows"].get(k, {}).get(metric.column, "")
            if v not in ("", None):
                out[i, j] = abs(float(v)) if metric.aggregation == "mean_abs" else float(v)
    return out


def paired_matrices(study, seeds, metric: Metric):
    """(keys, {arch: (ed, di)}, {arch: [excluded keys]}): each architecture's (seeds, molecules)
    matrices for both losses over the split's molecules, NaN in both at every molecule that some
    run of that architecture (either loss, any seed) has no value for, so the two stay paired.
    Architectures with a missing run, or with no molecule left, are left out."""
    keys = sorted(set().union(*[set(r["rows"]) for r in study.values()])) if study else []
    mats, excluded = {}, {}
    for arch in ARCHS:
        ed, di = _matrix(study, arch, "ed", seeds, metric, keys), _matrix(study, arch, "di", seeds, metric, keys)
        if ed is None or di is None or not keys:
            continue
        valid = np.isfinite(ed).all(axis=0) & np.isfinite(di).all(axis=0)
        if not valid.any():
            continue
        ed[:, ~valid] = np.nan
        di[:, ~valid] = np.nan
        mats[arch] = (ed, di)
        excluded[arch] = [k for k, ok in zip(keys, valid) if not ok]
    return keys, mats, excluded


def paired_bootstrap(study, seeds, metric: Metric, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """{arch or "average": (point estimate, low, high)} of the relative change DI vs E+D (module
    docstring), over the molecules that every run of the architecture has a value for
    (`paired_matrices`); architectures without complete, paired runs are left out."""
    keys, mats, _ = paired_matrices(study, seeds, metric)
    if not mats:
        return {}

    def rel(ed: np.ndarray, di: np.ndarray) -> float:
        if np.isnan(ed).all():
            return float("nan")  # the draw holds none of the architecture's paired molecules
        a, b = float(np.nanmean(ed)), float(np.nanmean(di))
        return (b - a) / abs(a) if a != 0 else float("nan")

    rng = np.random.default_rng(seed)
    n_s, n_m = len(seeds), len(keys)
    boots = {a: np.empty(n_boot) for a in mats}
    for t in range(n_boot):
        si = rng.integers(0, n_s, n_s)
        mi = rng.integers(0, n_m, n_m)
        for a, (ed, di) in mats.items():
            boots[a][t] = rel(ed[np.ix_(si, mi)], di[np.ix_(si, mi)])
    out = {}
    for a, (ed, di) in mats.items():
        lo, hi = np.nanpercentile(boots[a], [2.5, 97.5])
        out[a] = (rel(ed, di), float(lo), float(hi))
    avg = np.nanmean(np.stack(list(boots.values())), axis=0)
    lo, hi = np.nanpercentile(avg, [2.5, 97.5])
    out["average"] = (float(np.mean([v[0] for v in out.values()])), float(lo), float(hi))
    return out


def verdict(metric: Metric, low: float, high: float) -> str:
    """reproduced / not reproduced / inconclusive: where the 95 % interval lies against zero."""
    better_below = metric.better == "lower"
    if (high < 0) if better_below else (low > 0):
        return "reproduced"
    if (low > 0) if better_below else (high < 0):
        return "not reproduced"
    return "inconclusive"


def render_study(study, seeds) -> str:
    """Markdown: mean ± std over seeds per model, then relative changes with 95 % intervals and
    a verdict per headline claim."""
    seeds = list(seeds)
    lines = [f"Seeds {', '.join(map(str, seeds))}; mean ± standard deviation over seeds.", "",
             "| model | seeds | " + " | ".join(m.header for m in METRICS) + " | failed |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]
    for arch in ARCHS:
        for loss in LOSSES:
            runs = [study[(arch, loss, s)]["summary"] for s in seeds if (arch, loss, s) in study]
            cells = []
            for m in METRICS:
                vals = [r.get(m.key) for r in runs if r.get(m.key) is not None]
                if not vals:
                    cells.append("—")
                    continue
                sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
                cells.append(f"{format(float(np.mean(vals)), m.fmt)} ± {format(sd, m.fmt)}" if len(vals) > 1
                             else format(vals[0], m.fmt))
            failed = sum(int(r.get("n_failed") or 0) for r in runs)
            lines.append(f"| {arch}-{loss} | {len(runs)} | " + " | ".join(cells) + f" | {failed} |")
    lines += ["", "Relative change DI against E+D, (DI − E+D)/|E+D|, with a 95 % paired bootstrap interval over "
              f"molecules and seeds ({BOOTSTRAP_SAMPLES} replicates):", "",
              "| architecture | " + " | ".join(m.header for m in METRICS) + " |",
              "|---|" + "---|" * len(METRICS)]
    boot = {m.key: paired_bootstrap(study, seeds, m) for m in METRICS}
    for arch in (*ARCHS, "average"):
        cells = []
        for m in METRICS:
            v = boot[m.key].get(arch)
            cells.append("—" if v is None else f"{100 * v[0]:+.0f} % [{100 * v[1]:+.0f}, {100 * v[2]:+.0f}]")
        label = "**uniform average**" if arch == "average" else arch
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = []
    for m in METRICS:
        _, mats, excluded = paired_matrices(study, seeds, m)
        for arch, keys in excluded.items():
            if keys:
                notes.append(f"{m.title}, {arch}: {len(keys)} molecule(s) without a value in some run, left out "
                             f"of both losses' side of the interval: {', '.join(keys)}.")
        if mats and len(mats) < len(ARCHS):
            notes.append(f"{m.title}: the average is over {len(mats)} of {len(ARCHS)} architectures "
                         f"({', '.join(mats)}); the others lack a complete set of runs.")
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    lines += ["", "| claim (arXiv 2606.04279) | paper | here | verdict |", "|---|---|---|---|"]
    for m in METRICS:
        if m.key not in PAPER:
            continue
        scope = CLAIM_SCOPE.get(m.key, "average")
        v = boot[m.key].get(scope)
        here = "—" if v is None else f"{100 * v[0]:+.0f} % [{100 * v[1]:+.0f}, {100 * v[2]:+.0f}] ({scope})"
        lines.append(f"| {m.title} | {PAPER[m.key]} | {here} | {'not run' if v is None else verdict(m, v[1], v[2])} |")
    return "\n".join(lines) + "\n"


def rewrite_doc(doc: Path, table: str) -> None:
    """Replace the text between `START` and `END` in ``doc`` (both markers must be present)."""
    text = Path(doc).read_text()
    if START not in text or END not in text:
        raise ValueError(f"{doc}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(Path(doc), head + START + "\n" + table + END + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--doc", type=Path, default=Path("docs/reproduction.md"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="render the seed study over these seeds (with 95 %% intervals) instead of one seed")
    ap.add_argument("--cost", action="store_true",
                    help="print what the seed study cost (training and evaluation hours per run, and the "
                    "stages' wall time --jobs at a time) instead of writing the table")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, for --cost (default 2)")
    args = ap.parse_args(argv)
    if args.cost:
        print(render_cost(study_cost(args.seeds or [0, 1, 2], results=args.results, split=args.split, jobs=args.jobs)))
        return 0
    if args.seeds:
        table = render_study(load_study(args.results, args.seeds, args.split), args.seeds)
    else:
        table = render_table(load_summaries(args.results, args.split))
    rewrite_doc(args.doc, table)
    print(table)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
