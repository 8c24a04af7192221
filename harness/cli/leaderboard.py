"""``harness leaderboard publish``: rank every valid ``results/<name>/<split>/summary.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import HarnessError

PUBLISH_DESCRIPTION = """\
Collect every RESULTS/<submission>/<split>/summary.json written by 'harness evaluate',
check it against the current repository and publish the ranking.

A summary is ranked only when it is current and complete (docs/protocol.md, section 4):
  * stale (re-run 'harness evaluate') when its protocol version, reference-manifest sha256,
    submission files (SUBMISSIONS/<submission>), harness scoring code or evaluation
    settings differ from the current repository;
  * refused when it is malformed: a --molecule subset, counts that do not add up, a missing
    key, or a per_molecule.csv whose sha256 is not the summary's csv_sha256;
  * partial when some molecules of the split have no metrics (they failed, timed out,
    crashed): listed below the ranked results with their coverage, never ranked.
Stale and refused summaries are listed with a one-line reason in a separate section.

Each split gets its own table, ranked by total-energy MAE (mEh, ascending; the primary
metric of the metric registry), with the other registered metrics, failed molecules, the
sandbox the submission ran in and the evaluation wall time (s).

Writes, atomically and deterministically (same inputs give byte-identical files):
  OUT/README.md        Markdown tables, the stale/refused list and a legend
  OUT/leaderboard.csv  one row per ranked result, full precision
  OUT/index.html       one self-contained page (works offline): sortable tables,
                       a bar chart per metric, energy MAE vs wall time"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="publish the leaderboard (README.md, CSV, HTML) from the evaluation results",
        description="Leaderboard commands. Run 'harness leaderboard publish --help'.",
    )
    lsub = p.add_subparsers(dest="leaderboard_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _no_subcommand(p))
    pub = lsub.add_parser(
        "publish",
        help="validate and rank results/*/*/summary.json; write README.md, leaderboard.csv, index.html",
        description=PUBLISH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pub.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                     help="folder written by 'harness evaluate --out' (default: %(default)s)")
    pub.add_argument("--submissions", type=Path, default=Path("submissions"), metavar="DIR",
                     help="folder of submission folders, hashed to detect stale results (default: %(default)s)")
    pub.add_argument("--out", type=Path, default=Path("leaderboard"), metavar="DIR",
                     help="where README.md, leaderboard.csv and index.html go (default: %(default)s)")
    pub.set_defaults(func=run_publish)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_publish(args) -> int:
    from harness.leaderboard import LeaderboardError, publish

    try:
        result = publish(args.results, args.submissions, args.out)
    except LeaderboardError as exc:
        raise HarnessError(" ".join(str(exc).split())) from exc
    per_split = ", ".join(f"{split}: {len(rows)}" for split, rows in result.ranked.items())
    n_stale = sum(1 for r in result.refusals if r.kind == "stale")
    n_refused = len(result.refusals) - n_stale
    print(f"ranked {result.n_ranked} result(s)" + (f" ({per_split})" if per_split else "")
          + f"; {result.n_partial} partial (unranked), {n_stale} stale, {n_refused} refused")
    for r in result.refusals:
        print(f"  {r.line}")
    for f in result.files:
        print(f"wrote {f}")
    return 0
