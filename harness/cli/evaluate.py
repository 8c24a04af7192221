"""``harness evaluate SUBMISSION_DIR``: score a submission against the reference set."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.executor import add_scheduler_argument
from harness.reference.pins import BUNDLED_REFERENCE_DIR

SPLIT_CHOICES = ("test", "tiny", "val", "train")


#: Default ``--workers``: two processes when there are two cores or more.
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a submission (SCF, metrics) against the B3LYP reference set",
        description="Run the harness SCF with a submitted functional on every molecule of a split "
        "and score it against the B3LYP/def2-SVP reference (docs/protocol.md): total-energy error, "
        "E_rho, dipole, L2 density error, SCF-iteration reduction, robustness, and the excitation-energy MAE "
        "from the harness's own TDDFT with the model's kernel (lowest 5 singlets, against TD-B3LYP). Writes "
        "OUT/<name>/<split>/per_molecule.csv and summary.json. Finished molecules are cached: "
        "after an interruption, rerun the same command and it continues where it stopped.",
    )
    p.add_argument("submissions", type=Path, nargs="+", metavar="SUBMISSION_DIR",
                   help="submission folder holding submission.yaml (e.g. submissions/pbe); several folders are "
                   "scored in one batch of tasks (a whole leaderboard sweep), each into its own results folder")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="test", help="molecules to score (default: %(default)s)")
    p.add_argument("--reference", type=Path, default=None, metavar="DIR",
                   help="reference folder (default: the bundled set "
                   f"{BUNDLED_REFERENCE_DIR.parent.name}/{BUNDLED_REFERENCE_DIR.name})")
    p.add_argument("--device", default="cpu", help="torch device of the model SCF: cpu or cuda (default: %(default)s)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help="molecules in parallel (processes, each with cores/N threads; default: %(default)s, "
                   "i.e. min(2, cores): two single-thread workers beat one two-thread worker on small matrices)")
    add_scheduler_argument(p, "the (submission, molecule) tasks")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: %(default)s)")
    p.add_argument("--molecule", action="append", metavar="KEY",
                   help="evaluate only this molecule of the split (repeatable)")
    p.add_argument("--recompute", action="store_true", help="ignore cached per-molecule results")
    p.add_argument("--no-excitations", action="store_true",
                   help="skip metric 6 (the model's TDDFT excitation energies against TD-B3LYP); "
                   "faster, and excitation_mae_eV stays empty")
    p.add_argument("--timeout-s", type=float, default=1800.0, metavar="S",
                   help="wall-time limit per molecule, SCF and TDDFT together (default: %(default)g s); "
                   "a molecule past it gets status 'timeout'")
    p.add_argument("--memory-gb", type=float, default=None, metavar="GB",
                   help="resident-memory limit of the functional's process (default: 75%% of this machine's "
                   "memory); past it the molecule gets status 'memory'")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                   help="how the submission's code is isolated: 'bwrap' (no network, read-only filesystem, "
                   "no reference data or results visible), 'none' (a separate process only), or 'auto': "
                   "bwrap where it works (default: %(default)s; recorded in summary.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table, only the file paths")
    p.set_defaults(func=run_evaluate)


def one_line(message: str) -> str:
    """A multi-line message (e.g. a YAML parser's, with its caret diagram) as one line."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def run_evaluate(args) -> int:
    from harness.evaluate import default_memory_gb, evaluate_many
    from harness.remote import Limits
    from harness.results import render_report
    from harness.tddft import excitations_hook

    try:
        results = evaluate_many(
            args.submissions, split=args.split, reference=args.reference, out=args.out,
            device=args.device, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet,
            keys=args.molecule, recompute=args.recompute,
            excitations=None if args.no_excitations else excitations_hook,
            limits=Limits(timeout_s=args.timeout_s,
                          memory_gb=args.memory_gb if args.memory_gb is not None else default_memory_gb()),
            sandbox=args.sandbox,
        )
    except HarnessError as exc:
        raise HarnessError(one_line(str(exc))) from exc
    failed = []
    for result in results:
        if not args.quiet:
            print(render_report(result.summary, result.rows))
            print()
        s = result.summary
        print(f"{s['submission']}: {len(result.computed)} computed, {len(result.cached)} from cache; "
              f"wall {s['wall_s']['total']:.1f} s")
        print(f"wrote {result.paths.csv}")
        print(f"wrote {result.paths.summary}")
        if result.harness_errors:
            failed.append(f"{s['submission']}: {', '.join(result.harness_errors)}")
    if failed:
        print(f"error: the harness itself failed on some molecules ({'; '.join(failed)}); they are not cached: "
              "rerun the same command to retry", file=sys.stderr)
        return 1
    return 0
