"""``harness reference build | verify | show``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.executor import add_scheduler_argument
from harness.reference.pins import BUNDLED_REFERENCE_DIR

DEFAULT_BUILD_DIR = Path("reference_data") / "build" / "g2-b3lyp-svp-v1"
SPLIT_CHOICES = ("train", "val", "test", "tiny")


def register(sub: argparse._SubParsersAction) -> None:
    ref = sub.add_parser(
        "reference",
        help="build, verify or list the B3LYP/def2-SVP reference set",
        description="The reference set g2-b3lyp-svp v1: 119 closed-shell G2 molecules computed with "
        "PySCF B3LYP/def2-SVP (grid level 3, exact J and K). The test and tiny splits ship in "
        f"{BUNDLED_REFERENCE_DIR.parent.name}/{BUNDLED_REFERENCE_DIR.name}; the rest is built on demand.",
    )
    rsub = ref.add_subparsers(dest="reference_command", metavar="ACTION")
    ref.set_defaults(func=lambda a: (ref.print_help(), 2)[1])

    b = rsub.add_parser(
        "build",
        help="compute a reference set with PySCF (resumable, parallel)",
        description="Compute reference geometries with PySCF. Finished geometries are kept: after "
        "an interruption, rerun the same command and it continues where it stopped.",
    )
    b.add_argument("--out", type=Path, default=DEFAULT_BUILD_DIR, help="output folder (default: %(default)s)")
    b.add_argument(
        "--split", action="append", choices=SPLIT_CHOICES,
        help="build only these splits (repeatable); default: every split with its conformers",
    )
    b.add_argument("--molecules", type=Path, metavar="DIR",
                   help="build a custom set from the .xyz files of DIR instead of G2 "
                   "(comment line: 'charge=0 multiplicity=1' or '0 1'; default neutral singlet)")
    b.add_argument("--conformers", type=int, default=3, metavar="K",
                   help="distorted conformers per train/val molecule (default: %(default)s)")
    b.add_argument("--workers", type=int, default=1, metavar="N",
                   help="molecules computed in parallel (default: %(default)s)")
    add_scheduler_argument(b, "the geometries")
    b.add_argument("--name", default=None, help="name recorded in the manifest (default: g2-b3lyp-svp, or the folder name of --molecules)")
    b.add_argument("--di", action=argparse.BooleanOptionalAction, default=True,
                   help="compute the DI-Loss targets (PROTOCOL §4: energy, orbital gradient and Hessian-vector "
                   "products at the reference and at perturbed orbitals) for train and val geometries; never "
                   "for test geometries or ones built only as part of 'tiny' (default: on)")
    b.add_argument("--di-samples", type=int, default=None, metavar="S",
                   help="perturbed points per geometry besides the reference (default: 2)")
    b.add_argument("--di-sigma", type=float, default=None, metavar="X",
                   help="Frobenius norm of each perturbation kappa (default: 0.05)")
    b.add_argument("--di-probes", type=int, default=None, metavar="P",
                   help="random unit probes per point (default: 2)")
    b.add_argument("--di-seed", type=int, default=None, metavar="N", help="base seed of the DI draws (default: 0)")
    b.add_argument("--max", type=int, default=None, metavar="M", help="stop after M new geometries")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)

    v = rsub.add_parser(
        "verify",
        help="check every checksum and recompute random geometries with PySCF",
        description="Check the sha256 of every file against the manifest (and the manifest against "
        "its pin), then recompute N randomly chosen geometries with PySCF and compare: energy "
        "1e-8 Eh, dipole 1e-6 D, excitations 1e-5 eV. Exits 1 naming the file or molecule that failed.",
    )
    v.add_argument("--reference", type=Path, default=BUNDLED_REFERENCE_DIR, help="reference folder (default: the bundled set)")
    v.add_argument("--recompute", type=int, default=2, metavar="N", help="geometries to recompute (default: %(default)s; 0 = checksums only)")
    v.add_argument("--split", choices=SPLIT_CHOICES, help="draw the recomputed geometries from this split")
    v.add_argument("--molecule", action="append", metavar="KEY", help="recompute this geometry (repeatable) instead of random ones")
    v.add_argument("--seed", type=int, default=None, help="seed of the random choice (default: random)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run_verify)

    s = rsub.add_parser("show", help="list the molecules of a reference set",
                        description="A table of the geometries: name, formula, atoms, AOs, split.")
    s.add_argument("--reference", type=Path, default=BUNDLED_REFERENCE_DIR, help="reference folder (default: the bundled set)")
    s.add_argument("--all", action="store_true",
                   help="list the whole G2 set (119 molecules) with its splits, built or not")
    s.add_argument("--split", choices=SPLIT_CHOICES, help="only this split")
    s.add_argument("--conformers", action="store_true", help="include distorted conformers")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=run_show)


def run_build(args) -> int:
    from harness.molecules import MoleculeError, read_xyz_folder
    from harness.reference.build import build_reference, plan_geometries
    from harness.reference.settings import ReferenceSettings
    from harness.reference.store import ReferenceDataError

    from harness.reference.di_targets import DISettings

    settings = ReferenceSettings(conformers=args.conformers)
    d = DISettings()
    di_settings = DISettings(
        samples=d.samples if args.di_samples is None else args.di_samples,
        sigma=d.sigma if args.di_sigma is None else args.di_sigma,
        probes=d.probes if args.di_probes is None else args.di_probes,
        seed=d.seed if args.di_seed is None else args.di_seed,
    )
    try:
        molecules = read_xyz_folder(args.molecules) if args.molecules else None
        planned = plan_geometries(molecules, settings, set(args.split) if args.split else None, di=args.di)
        name = args.name or (args.molecules.resolve().name if args.molecules else "g2-b3lyp-svp")
        report = build_reference(args.out, planned, settings, workers=args.workers, scheduler=args.scheduler, name=name,
                                 progress=not args.quiet, max_geometries=args.max, di_settings=di_settings)
    except (MoleculeError, ReferenceDataError) as exc:
        raise HarnessError(str(exc)) from exc
    print(f"{args.out}: {len(report.computed)} computed, {len(report.skipped)} already present, "
          f"{len(report.failed)} failed; wall {report.wall_s:.1f} s, compute {report.compute_s:.1f} s")
    for key, why in report.failed.items():
        print(f"failed: {key}: {why}", file=sys.stderr)
    return 0 if report.ok else 1


def run_verify(args) -> int:
    from harness.reference.store import ReferenceDataError, ReferenceSet
    from harness.reference.verify import verify_reference

    try:
        refset = ReferenceSet(args.reference)
        report = verify_reference(refset, n_recompute=args.recompute, seed=args.seed, split=args.split,
                                  keys=args.molecule, progress=not args.quiet)
    except ReferenceDataError as exc:
        raise HarnessError(str(exc)) from exc
    for key, dev in report.recomputed.items():
        parts = ", ".join(f"{k} {v:.1e}" for k, v in dev.items())
        print(f"recomputed {key}: max deviation {parts}")
    if not report.ok:
        for e in report.errors:
            print(f"FAIL {e}", file=sys.stderr)
        return 1
    print(f"OK {args.reference}: {report.checked_files} files match their checksums; "
          f"{len(report.recomputed)} recomputed geometries agree with PySCF")
    return 0


def run_show(args) -> int:
    from harness.reference.show import g2_table, reference_table, render_table
    from harness.reference.store import ReferenceDataError

    try:
        rows = g2_table() if args.all else reference_table(args.reference, args.split, args.conformers)
    except ReferenceDataError as exc:
        raise HarnessError(str(exc)) from exc
    if args.all and args.split:
        rows = [r for r in rows if r["split"] == args.split or args.split in r["subsets"]]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(render_table(rows))
    return 0
