"""What the Dask backend costs against the local pool, and how an evaluation scales with workers,
measured in one run (`harness.executor`).

    python benchmarks/bench_executor.py                          # overhead on tiny, scaling on test
    python benchmarks/bench_executor.py --what overhead --repeat 3
    python benchmarks/bench_executor.py --what scaling --split test --excitations

* ``overhead``: ``harness evaluate submissions/pbe --split tiny`` with ``--workers N`` (the
  local pool) and with ``--scheduler local:N`` (a Dask LocalCluster), same N, alternating order,
  ``--recompute`` into fresh folders. Each is a whole command (start-up of the pool or the
  cluster and of the functional processes included), timed from outside.
* ``scaling``: the same evaluation on ``--split`` with ``--scheduler local:1`` and
  ``local:2``.

The per-molecule numbers of every run are checked against the first (1e-9 Eh), the float64
matmul peak is sampled before and after (the machine's speed drifts), and the figures are
printed as ratios against the anchor measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: _common beside it
from _common import matmul_peak_gflops  # noqa: E402


def run(submission: Path, split: str, backend: list[str], excitations: bool, out: Path) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "harness.cli", "evaluate", str(submission), "--split", split, "--quiet",
           "--recompute", "--out", str(out), *backend] + ([] if excitations else ["--no-excitations"])
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    with open(out / submission.name / split / "per_molecule.csv") as f:
        rows = {r["key"]: float(r["energy_model_Eh"]) for r in csv.DictReader(f)}
    return wall, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=("overhead", "scaling", "both"), default="both")
    p.add_argument("--submission", type=Path, default=ROOT / "submissions" / "pbe")
    p.add_argument("--workers", type=int, default=2, help="N of the overhead comparison (default: 2)")
    p.add_argument("--split", default="test", help="split of the scaling measurement (default: test)")
    p.add_argument("--excitations", action="store_true", help="with the TDDFT stage (default: without)")
    p.add_argument("--repeat", type=int, default=2, help="alternating passes of the overhead pair (default: 2)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    peaks = [matmul_peak_gflops()]
    figures: dict = {"cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    references: dict[str, dict] = {}

    def check(split: str, rows: dict) -> None:
        reference = references.setdefault(split, rows)  # the first run of a split is the anchor
        worst = max(abs(rows[k] - reference[k]) for k in reference)
        assert rows.keys() == reference.keys() and worst <= 1e-9, f"{split}: energies differ by {worst:.2e} Eh"

    with tempfile.TemporaryDirectory() as tmp:
        if args.what in ("overhead", "both"):
            n = args.workers
            pool, dask = [], []
            for rep in range(args.repeat):
                order = [("pool", ["--workers", str(n)]), ("dask", ["--scheduler", f"local:{n}"])]
                for name, backend in order if rep % 2 == 0 else order[::-1]:
                    wall, rows = run(args.submission, "tiny", backend, args.excitations, Path(tmp) / f"{name}{rep}")
                    check("tiny", rows)
                    (pool if name == "pool" else dask).append(wall)
                    print(f"overhead  tiny  {name:5s} {n} workers  {wall:7.1f} s", flush=True)
            ratio = min(dask) / min(pool)
            figures["overhead"] = {"workers": n, "pool_s": pool, "dask_s": dask, "ratio_best": ratio}
            print(f"overhead: Dask local:{n} / local pool of {n}, best of {args.repeat}: {ratio:.3f}×")
            peaks.append(matmul_peak_gflops())
        if args.what in ("scaling", "both"):
            walls = {}
            for n in (1, 2):
                wall, rows = run(args.submission, args.split, ["--scheduler", f"local:{n}"], args.excitations,
                                 Path(tmp) / f"scale{n}")
                check(args.split, rows)
                walls[n] = wall
                print(f"scaling   {args.split}  local:{n}  {wall:7.1f} s", flush=True)
            figures["scaling"] = {"split": args.split, "wall_s": walls, "speedup_1_to_2": walls[1] / walls[2]}
            print(f"scaling: {args.split} split, local:1 → local:2: {walls[1] / walls[2]:.2f}× faster "
                  f"({walls[1]:.0f} s → {walls[2]:.0f} s)")
            peaks.append(matmul_peak_gflops())
    figures["matmul_peak_gflops"] = peaks
    figures["load_avg_end"] = os.getloadavg()[0]
    print(f"float64 matmul peak (2048×2048) samples: {', '.join(f'{x:.0f}' for x in peaks)} GFLOP/s; "
          f"load avg {figures['load_avg_start']:.1f} → {figures['load_avg_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
