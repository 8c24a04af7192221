#!/usr/bin/env python
"""Benchmark of the harness's linear-response TDDFT (harness.tddft) against PySCF's TDDFT.

In ONE run, per molecule (H2O, ethanol CH3CH2OH, benzene C6H6 from ase.collections.g2;
def2-SVP, grid level 3, DF-J with def2-universal-jfit): one PBE ground state (ours), then,
interleaved ``--repeats`` times, the 5 lowest singlets by full TDDFT (Casida) with
- ours: ``harness.tddft.tddft`` (kernel by autodiff of the torch PBE), and
- PySCF: ``tdscf.TDDFT`` on a DF-RKS object carrying the SAME ground state (libxc kernel).
Both use a residual tolerance of 1e-6 (PySCF's default ``conv_tol`` for TDDFT is 1e-5; it is set
to 1e-6 here so the two solve to the same tolerance). Medians, ratio ours/PySCF, and the largest
excitation-energy difference (eV).

    python benchmarks/bench_tddft.py [--repeats 3] [--threads N] [--molecules H2O,CH3CH2OH,C6H6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch and PySCF threads (default: library default)")
    ap.add_argument("--molecules", default="H2O,CH3CH2OH,C6H6")
    ap.add_argument("--nstates", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from pyscf import dft, lib, tdscf

    from harness.functionals import PBE
    from harness.integrals import build_setup
    from harness.molecules import g2_molecule
    from harness.scf import run_scf
    from harness.tddft import HARTREE_EV, tddft

    if args.threads:
        torch.set_num_threads(args.threads)
        lib.num_threads(args.threads)
    rows = []
    for name in args.molecules.split(","):
        setup = build_setup(g2_molecule(name))
        fn = PBE()
        res = run_scf(fn, setup, conv_tol_energy=1e-11, conv_tol_grad=1e-7, exact_j=False)
        mf = dft.RKS(setup.mol, xc="pbe").density_fit(auxbasis="def2-universal-jfit")
        mf.grids.level = 3
        mf.small_rho_cutoff = 0
        mf.verbose = 0
        mf.mo_coeff, mf.mo_energy, mf.mo_occ = (res.mo_coeff.numpy(), res.mo_energy.numpy(), res.mo_occ.numpy())
        mf.converged = True
        mf.grids.build()
        t_ours, t_pyscf = [], []
        e_ours = e_pyscf = None
        timings = {}
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = tddft(fn, res, setup, nstates=args.nstates, conv_tol=1e-6)
            t_ours.append(time.perf_counter() - t)
            e_ours, timings = r.excitation_energies_eV.numpy(), dict(r.timings, iterations=r.iterations)
            t = time.perf_counter()
            td = tdscf.TDDFT(mf)
            td.nstates = args.nstates
            td.conv_tol = 1e-6
            td.verbose = 0
            td.kernel()
            t_pyscf.append(time.perf_counter() - t)
            e_pyscf = np.asarray(td.e) * HARTREE_EV
        row = {
            "molecule": name, "nao": setup.nao, "ngrid": setup.ngrid,
            "ours_s": statistics.median(t_ours), "pyscf_s": statistics.median(t_pyscf),
            "max_abs_diff_eV": float(np.abs(e_ours - e_pyscf).max()),
            "ours_timings": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
        }
        row["ratio"] = row["ours_s"] / row["pyscf_s"]
        rows.append(row)
        print(f"{name}: ours {row['ours_s']:.2f} s, PySCF {row['pyscf_s']:.2f} s, ratio {row['ratio']:.3f}, "
              f"max|dE| {row['max_abs_diff_eV']:.1e} eV  {row['ours_timings']}", flush=True)
    print()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats (medians)")
    print("| molecule | nAO | grid | PySCF TDDFT s | ours s | ratio | max abs dE eV |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['molecule']} | {r['nao']} | {r['ngrid']} | {r['pyscf_s']:.2f} | {r['ours_s']:.2f} | "
              f"{r['ratio']:.3f} | {r['max_abs_diff_eV']:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": torch.get_num_threads(), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
