"""``harness train``: fit a baseline architecture with the E+D or DI loss and write a submission."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import HarnessError
from harness.executor import add_scheduler_argument
from harness.train import ARCH_CHOICES, LOSS_CHOICES, PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a baseline functional (E+D or DI loss) into a submission folder",
        description="Train one of the four baseline architectures against B3LYP/def2-SVP references "
        "with the E+D loss (energy + density, implicit gradients through the model's SCF) or the DI "
        "loss (E+D plus orbital-gradient and Hessian-vector supervision), select the model on the "
        "validation split (lowest val energy MAE) and write OUT as a submission folder that "
        "'harness evaluate OUT' scores. Checkpoints after every step: rerun the same command to "
        "resume; a finished run (OUT/training.json of the same configuration) is left as it is, "
        "with or without its checkpoints. Presets: " + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()),
    )
    p.add_argument("--arch", choices=ARCH_CHOICES, required=True, help="architecture (harness.architectures)")
    p.add_argument("--loss", choices=LOSS_CHOICES, required=True, help="ed: energy+density; di: DI-Loss")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="training budget (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output submission folder, e.g. submissions/xcdiff-di")
    p.add_argument("--reference", type=Path, default=None, metavar="DIR",
                   help="reference folder to train from (default: build the preset's subset into the cache)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="reference/DI-target cache (default: reference_data/build/train-subset)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--split-train", default="train", help="split to train on (default: %(default)s)")
    p.add_argument("--split-val", default="val", help="split for model selection (default: %(default)s)")
    p.add_argument("--max-train", type=int, default=None, metavar="N", help="train molecules (default: the preset's)")
    p.add_argument("--max-val", type=int, default=None, metavar="N", help="val molecules (default: the preset's)")
    p.add_argument("--grid-level", type=int, default=None, help="training grid level (default: the preset's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--w-gradient", type=float, default=None, metavar="W",
                   help="DI loss: weight of the orbital-gradient term (default: harness.losses.LossWeights)")
    p.add_argument("--w-hvp", type=float, default=None, metavar="W",
                   help="DI loss: weight of the Hessian-vector term (default: harness.losses.LossWeights)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes computing each step's per-molecule losses and gradients (default: 1, this "
                   "process); the same training to round-off for any N")
    add_scheduler_argument(p, "each step's per-molecule losses and gradients (summed here; the same training "
                           "to round-off)")
    p.add_argument("--build-workers", type=int, default=1, metavar="N",
                   help="processes for the reference build when the preset's data must be computed (default: 1)")
    p.add_argument("--prepare-data", action="store_true",
                   help="only build (or check) the preset's reference data and DI targets, then stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from harness.contract import FunctionalError
    from harness.reference.store import ReferenceDataError
    import dataclasses

    from harness.losses import DEFAULT_WEIGHTS
    from harness.train import TrainConfig, TrainError, prepare_data, train

    cfg = TrainConfig(
        arch=args.arch, loss=args.loss, out=args.out, preset=args.preset, seed=args.seed, steps=args.steps,
        lr=args.lr, reference=args.reference, split_train=args.split_train, split_val=args.split_val,
        max_train=args.max_train, max_val=args.max_val, grid_level=args.grid_level, cache=args.cache,
        threads=args.threads, progress=not args.quiet, build_workers=args.build_workers,
        workers=args.workers, scheduler=args.scheduler,
        weights=dataclasses.replace(DEFAULT_WEIGHTS, **{k: v for k, v in (("gradient", args.w_gradient),
                                                                          ("hvp", args.w_hvp)) if v is not None}),
    )
    try:
        if args.prepare_data:
            desc = prepare_data(cfg)
            print(f"reference data ready: {desc['reference']} ({len(desc['train_keys'])} train, "
                  f"{len(desc['val_keys'])} val geometries; manifest sha256 {desc['reference_manifest_sha256']})")
            return 0
        res = train(cfg)
    except (TrainError, ReferenceDataError, FunctionalError) as exc:
        raise HarnessError(" ".join(str(exc).split())) from exc
    selected = f"selected step {res.best_step} (val energy MAE {res.best_val_energy_mae_mEh:.3f} mEh)"
    if not res.rows:  # a finished run, found as it was: nothing trained, nothing written
        print(f"{selected}, as recorded in {res.out}/training.json")
    else:
        print(f"{selected}; wall {res.wall_s:.1f} s")
        print(f"wrote {res.out}/submission.yaml")
    print(f"evaluate with: harness evaluate {res.out}")
    return 0
