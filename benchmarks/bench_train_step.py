"""Where one training step's time goes, per architecture and loss, against that molecule's own
model SCF at the same grid, in one run.

    python benchmarks/bench_train_step.py                       # H2O, grid level 1 (the quick preset's)
    python benchmarks/bench_train_step.py --molecule CH4 --grid-level 1 --repeats 3
    python benchmarks/bench_train_step.py --reference reference_data/paper-train-val-v1 --molecule CH3OH

For each architecture (untrained, seed 0) and loss, on one molecule of a reference set (default: the bundled one):

* ``setup``: `harness.losses.prepare_geometry` (integrals, grid, reference density), paid
  once per geometry and kept across steps;
* ``scf``: the model's SCF inside the loss (from the reference density, as training does);
* ``cg``: the adjoint solve H λ = ∂L/∂κ (orbital-Hessian products through TDDFT response);
* ``di``: the DI gradient and Hessian-vector terms (DI loss only);
* ``rest``: the E_xc graph, the surrogate's backward and Python around it;

and the ratio of a whole molecule-step to a plain model SCF from ``minao`` on the same setup
(`harness.scf.run_scf`, the same convergence as evaluation), by wall time and by this process's
CPU time (user + system; the fairer figure on a loaded machine). The best of ``--repeats`` steps
(by wall time) is reported (the first step also builds per-geometry caches). The C allocator is
tuned as the harness commands tune it (`harness.allocator`) unless ``--system-malloc``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecule", default="H2O")
    p.add_argument("--reference", type=Path, default=None, metavar="DIR",
                   help="reference folder holding the molecule (default: the bundled set), e.g. "
                   "reference_data/paper-train-val-v1 for the paper preset's training molecules")
    p.add_argument("--grid-level", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--archs", nargs="*", default=None)
    p.add_argument("--losses", nargs="*", default=["ed", "di"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc's malloc as it is (the harness commands tune it: harness.allocator)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not args.system_malloc:
        from harness.allocator import tune_allocator

        tune_allocator()

    import torch

    from harness.losses import DEFAULT_SOLVER, DEFAULT_WEIGHTS, di_terms, loss_function, prepare_geometry
    from harness.reference.di_targets import DISettings, di_targets_for_record
    from harness.reference.pins import BUNDLED_REFERENCE_DIR
    from harness.reference.store import ReferenceSet
    from harness.scf import run_scf
    from harness.train import ARCH_CHOICES, build_model

    torch.set_num_threads(args.threads)
    record = ReferenceSet(args.reference or BUNDLED_REFERENCE_DIR).load(args.molecule)
    di = di_targets_for_record(record, DISettings(samples=1, probes=2, sigma=0.05))
    out = []
    print(f"{args.molecule}, grid level {args.grid_level}, {args.threads} thread(s); best of {args.repeats} steps")
    print(f"{'model':10s} {'setup/s':>8s} {'SCF/s':>7s} {'step/s':>7s} {'scf':>6s} {'cg':>6s} {'di':>6s} "
          f"{'rest':>6s} {'step/SCF':>8s} {'CPU s':>6s} {'CPU ratio':>9s}")
    for arch in args.archs or ARCH_CHOICES:
        model = build_model(arch, "quick", 0)
        t = time.perf_counter()
        geom = prepare_geometry(record, model, grid_level=args.grid_level, di=di)
        setup_s = time.perf_counter() - t
        with torch.no_grad():
            for prm in model.parameters():
                prm.requires_grad_(False)
            t, c = time.perf_counter(), time.process_time()
            scf = run_scf(model, geom.setup, exact_j=False)
            scf_s, scf_cpu_s = time.perf_counter() - t, time.process_time() - c
            for prm in model.parameters():
                prm.requires_grad_(True)
        for loss in args.losses:
            fn = loss_function(loss)
            best = None
            for _ in range(args.repeats):
                model.zero_grad()
                t, c = time.perf_counter(), time.process_time()
                res = fn(model, geom, DEFAULT_WEIGHTS, DEFAULT_SOLVER, backward=True)
                step_s, step_cpu_s = time.perf_counter() - t, time.process_time() - c
                di_s = 0.0
                if loss == "di":  # time the DI terms alone (the loss above includes them)
                    t = time.perf_counter()
                    di_terms(model, geom, DEFAULT_WEIGHTS, backward=True)
                    di_s = time.perf_counter() - t
                m = res.metrics
                row = {"arch": arch, "loss": loss, "setup_s": setup_s, "scf_ref_s": scf_s, "step_s": step_s,
                       "scf_s": m.get("scf_s", 0.0), "cg_s": m.get("cg_s", 0.0), "di_s": di_s,
                       "cg_iterations": m.get("cg_iterations"), "scf_iterations": m.get("scf_iterations"),
                       "model_scf_iterations_minao": scf.iterations}
                row["rest_s"] = max(0.0, step_s - row["scf_s"] - row["cg_s"] - di_s)
                row["ratio"] = step_s / scf_s
                row["step_cpu_s"], row["scf_cpu_s"] = step_cpu_s, scf_cpu_s
                row["cpu_ratio"] = step_cpu_s / scf_cpu_s
                if best is None or step_s < best["step_s"]:
                    best = row
            out.append(best)
            b = best
            print(f"{arch + '-' + loss:10s} {b['setup_s']:8.2f} {b['scf_ref_s']:7.2f} {b['step_s']:7.2f} "
                  f"{b['scf_s']:6.2f} {b['cg_s']:6.2f} {b['di_s']:6.2f} {b['rest_s']:6.2f} {b['ratio']:8.2f} "
                  f"{b['step_cpu_s']:6.2f} {b['cpu_ratio']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
