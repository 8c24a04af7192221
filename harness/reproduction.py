"""The E+D versus DI-Loss comparison table of `docs/reproduction.md`.

Reads ``results/<arch>-<loss>/test/summary.json`` for the four baseline architectures and
both losses, and renders a Markdown table of every metric, the relative change from E+D to DI
per architecture and its uniform average, beside the headline numbers of the paper
(*Derivative Informed Learning of Exchange-Correlation Functionals*, ICML 2026,
arXiv 2606.04279). ``python -m harness.reproduction [--results results] [--doc docs/reproduction.md]``
rewrites the block between the two markers of the doc in place (atomically).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from harness.io import atomic_write_text
from harness.metric_registry import LEADERBOARD_METRICS, Metric

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
                out[(arch, loss)] = json.loads(p.read_text())
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
    args = ap.parse_args(argv)
    table = render_table(load_summaries(args.results, args.split))
    rewrite_doc(args.doc, table)
    print(table)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
