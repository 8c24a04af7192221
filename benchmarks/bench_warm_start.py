"""What warm starts save in training: each geometry's model SCF and adjoint CG started from its
previous step's solution (`harness.losses.WarmStart`) against starting every step from the
reference density and λ = 0, in one run.

    python benchmarks/bench_warm_start.py                        # quick preset, xcdiff, both losses
    python benchmarks/bench_warm_start.py --cg                   # the CG warm-started too
    python benchmarks/bench_warm_start.py --preset paper --steps 20 --losses ed

For each architecture and loss it trains the same run twice (warm, then cold, into temporary
folders; same seed and batches) and reports the training steps' mean SCF and CG iterations per
geometry and their wall time (validation passes left out), and how far the selected models'
parameters differ (the two runs differ only by solver tolerance).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import tempfile
from pathlib import Path


def _train_rows(out: Path) -> list[dict]:
    with open(out / "training_log.csv") as fh:
        return list(csv.DictReader(fh))


def _summary(rows: list[dict]) -> dict:
    """Mean SCF / CG iterations per geometry over the training steps, and their wall time (each
    train row's wall_s minus the row before it, so validation passes are left out)."""
    wall = 0.0
    scf, cg = [], []
    for prev, row in zip(rows, rows[1:]):
        if row["split"] != "train":
            continue
        wall += float(row["wall_s"]) - float(prev["wall_s"])
        scf.append(float(row["scf_iterations_mean"]))
        if row["cg_iterations_mean"]:
            cg.append(float(row["cg_iterations_mean"]))
    return {"steps": len(scf), "train_wall_s": wall, "scf_iterations": sum(scf) / max(1, len(scf)),
            "cg_iterations": sum(cg) / len(cg) if cg else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=None, help="default: the preset's")
    p.add_argument("--archs", nargs="*", default=["xcdiff"])
    p.add_argument("--losses", nargs="*", default=["ed", "di"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cg", action="store_true", help="warm-start the adjoint CG too (SolverOptions.cg_warm_start)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch
    from safetensors.torch import load_file

    from harness.losses import DEFAULT_SOLVER
    from harness.train import TrainConfig, train

    results = []
    print(f"preset {args.preset}, {args.threads} thread(s); warm (SCF{' and CG' if args.cg else ''}) / cold")
    print(f"{'model':10s} {'steps':>5s} {'SCF it':>13s} {'CG it':>13s} {'train wall s':>15s} {'ratio':>6s} "
          f"{'max |Δθ|/|θ|':>12s}")
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        for arch in args.archs:
            for loss in args.losses:
                got = {}
                for mode in ("warm", "cold"):
                    solver = dataclasses.replace(DEFAULT_SOLVER, warm_start=(mode == "warm"),
                                                 cg_warm_start=(mode == "warm" and args.cg))
                    out = Path(tmp, f"{arch}-{loss}-{mode}")
                    train(TrainConfig(arch=arch, loss=loss, out=out, preset=args.preset, steps=args.steps,
                                      threads=args.threads, progress=False, plot=False, solver=solver))
                    got[mode] = _summary(_train_rows(out)) | {
                        "weights": load_file(str(out / "checkpoints" / "last.safetensors"))}
                w, c = got["warm"], got["cold"]
                drift = max(float((w["weights"][k] - c["weights"][k]).norm() / max(c["weights"][k].norm(), 1e-300))
                            for k in c["weights"])
                row = {"model": f"{arch}-{loss}", "steps": w["steps"],
                       **{f"{k}_{m}": got[m][k] for m in ("warm", "cold")
                          for k in ("scf_iterations", "cg_iterations", "train_wall_s")},
                       "wall_ratio": w["train_wall_s"] / c["train_wall_s"], "param_rel_diff": drift}
                results.append(row)
                cgs = (f"{w['cg_iterations']:.1f} / {c['cg_iterations']:.1f}" if c["cg_iterations"] is not None
                       else "—")
                print(f"{row['model']:10s} {w['steps']:5d} {w['scf_iterations']:5.1f} / {c['scf_iterations']:5.1f} "
                      f"{cgs:>13s} {w['train_wall_s']:6.1f} / {c['train_wall_s']:6.1f} {row['wall_ratio']:6.2f} "
                      f"{drift:12.2e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
