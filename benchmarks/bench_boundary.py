"""What the process boundary costs: a submission's functional in its own (sandboxed) process
against the same functional imported into the harness's process, in one run.

    python benchmarks/bench_boundary.py                         # pbe, test split, with excitations
    python benchmarks/bench_boundary.py --split tiny --no-excitations
    python benchmarks/bench_boundary.py --submission submissions/pbe-jax --repeat 2

For every molecule of the split, `harness.pipeline.evaluate_molecule` runs twice, back to back
and in alternating order (so drift of a shared machine hits both alike): once with
`harness.remote.RemoteFunctional` (what ``harness evaluate`` does) and once with the
in-process adapter from `harness.submission.load_functional`. It prints the per-molecule and
total wall times, the ratio, and checks that both give the same numbers. The child's start
(imports) is reported apart: it is paid once per worker, not per molecule.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--submission", type=Path, default=ROOT / "submissions" / "pbe")
    p.add_argument("--split", default="test")
    p.add_argument("--no-excitations", action="store_true")
    p.add_argument("--repeat", type=int, default=1, help="passes over the split (default: 1)")
    p.add_argument("--sandbox", default="auto")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    import torch

    from harness.evaluate import evaluate_molecule
    from harness.reference.pins import BUNDLED_REFERENCE_DIR
    from harness.reference.store import ReferenceSet
    from harness.remote import RemoteFunctional
    from harness.submission import load_functional
    from harness.tddft import excitations_hook

    refset = ReferenceSet(BUNDLED_REFERENCE_DIR)
    keys = [e.key for e in refset.select(args.split)]
    hook = None if args.no_excitations else excitations_hook
    t = time.perf_counter()
    remote = RemoteFunctional(args.submission, sandbox=args.sandbox, hide=[BUNDLED_REFERENCE_DIR]).start()
    start_s = time.perf_counter() - t
    local = load_functional(args.submission)
    totals = {"remote": 0.0, "local": 0.0}
    worst = 0.0
    print(f"{args.submission.name} on {args.split} ({len(keys)} molecules), sandbox {remote.sandbox}, "
          f"torch threads {torch.get_num_threads()}; child start {start_s:.2f} s")
    print(f"{'molecule':12s} {'remote/s':>9s} {'local/s':>9s} {'ratio':>6s}")
    for rep in range(args.repeat):
        for i, key in enumerate(keys):
            record = refset.load(key)
            order = [("remote", remote), ("local", local)]
            if (i + rep) % 2:
                order.reverse()
            rows, wall = {}, {}
            for name, fn in order:
                t = time.perf_counter()
                rows[name] = evaluate_molecule(fn, record, refset.settings, excitations=hook)
                wall[name] = time.perf_counter() - t
                totals[name] += wall[name]
            a, b = rows["remote"], rows["local"]
            assert a["status"] == b["status"], (key, a["status"], a["error"], b["status"], b["error"])
            if a["energy_model_Eh"] is not None:
                worst = max(worst, abs(a["energy_model_Eh"] - b["energy_model_Eh"]))
            print(f"{key:12s} {wall['remote']:9.2f} {wall['local']:9.2f} {wall['remote'] / wall['local']:6.3f}")
    ratio = totals["remote"] / totals["local"]
    print(f"{'total':12s} {totals['remote']:9.2f} {totals['local']:9.2f} {ratio:6.3f}")
    print(f"overhead {100 * (ratio - 1):+.1f} % (target <= 5 %); largest energy difference {worst:.1e} Eh")
    remote.close()
    if args.json:
        args.json.write_text(json.dumps({"submission": args.submission.name, "split": args.split,
                                         "sandbox": remote.sandbox, "start_s": start_s, **totals,
                                         "ratio": ratio, "max_energy_diff_Eh": worst}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
