"""``harness tddft``: singlet excitation energies of a functional with the harness's own drivers."""

from __future__ import annotations

import argparse
import json
import time

from harness.errors import HarnessError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tddft",
        help="singlet excitation energies of a functional on one molecule (harness SCF + linear response)",
        description="Closed-shell SCF with the harness's torch driver, then singlet linear-response "
        "TDDFT at that solution with the functional's own kernel (Hessian-vector products of E_xc by "
        "autodiff): full Casida by default, Tamm-Dancoff with --tda. Davidson solver; J from density "
        "fitting (def2-universal-jfit), def2-SVP, grid level 3. Prints the excitation energies in eV "
        "and the oscillator strengths (length gauge).",
    )
    p.add_argument("--functional", required=True, metavar="SUBMISSION",
                   help="a submission folder (submissions/<name>) or a built-in name: lda, pbe, tpss")
    p.add_argument("--molecule", required=True, metavar="MOL", help="a G2 molecule name (e.g. H2O) or an .xyz file")
    p.add_argument("--nstates", type=int, default=5, help="number of singlet states (default: %(default)s)")
    p.add_argument("--tda", action="store_true", help="Tamm-Dancoff approximation instead of full TDDFT")
    p.add_argument("--conv-tol", type=float, default=1e-6,
                   help="Davidson residual-norm tolerance (default: %(default)g)")
    p.add_argument("--max-cycle", type=int, default=100, help="maximum Davidson iterations (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: torch's default; 1 is often faster on a busy machine)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from harness.contract import FunctionalError
    from harness.integrals import build_setup
    from harness.molecules import MoleculeError, resolve_molecule
    from harness.scf import needs_of, run_scf
    from harness.cli.scf import _load
    from harness.tddft import tddft

    if args.nstates < 1:
        raise HarnessError(f"--nstates must be at least 1, got {args.nstates}")
    fn = _load(args.functional)
    try:
        mol = resolve_molecule(args.molecule)
    except MoleculeError as exc:
        raise HarnessError(str(exc)) from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        setup = build_setup(mol, device=args.device, **needs_of(fn))
        t_setup = time.perf_counter() - t0
        res = run_scf(fn, setup, exact_j=False)
        if not res.converged:
            raise HarnessError(f"{mol.name}: the SCF did not converge in {res.iterations} iterations; "
                               "no excitations from a non-converged ground state")
        t_scf = time.perf_counter() - t0 - t_setup
        r = tddft(fn, res, setup, nstates=args.nstates, tda=args.tda, conv_tol=args.conv_tol,
                  max_cycle=args.max_cycle)
    except (FunctionalError, ValueError, NotImplementedError) as exc:
        raise HarnessError(str(exc)) from exc
    wall = time.perf_counter() - t0
    energies = [float(e) for e in r.excitation_energies_eV.cpu()]
    strengths = [float(f) for f in r.oscillator_strengths.cpu()]
    converged = [bool(c) for c in r.converged]
    if args.json:
        print(json.dumps({
            "molecule": mol.name, "functional": getattr(fn, "name", type(fn).__name__),
            "method": "TDA" if args.tda else "TDDFT",
            "excitations_eV": energies, "oscillator_strengths": strengths, "converged": converged,
            "davidson_iterations": r.iterations, "scf_energy_df_Eh": res.energy_df_Eh,
            "wall_s": round(wall, 4), "setup_s": round(t_setup, 4), "scf_s": round(t_scf, 4),
            "tddft_s": round(r.wall_s, 4), "nao": setup.nao, "ngrid": setup.ngrid,
        }, indent=1))
    else:
        print(f"{mol.name}  {getattr(fn, 'name', type(fn).__name__)}  {'TDA' if args.tda else 'TDDFT'}  "
              f"nAO {setup.nao}  grid {setup.ngrid}")
        print(f"{'state':>5}  {'energy/eV':>10}  {'osc. strength':>13}  converged")
        for k, (e, f, c) in enumerate(zip(energies, strengths, converged), start=1):
            print(f"{k:>5}  {e:>10.4f}  {f:>13.4f}  {'yes' if c else 'NO'}")
        print(f"Davidson iterations {r.iterations}")
        print(f"wall time {wall:.2f} s  (setup {t_setup:.2f} s, SCF {t_scf:.2f} s, TDDFT {r.wall_s:.2f} s)")
    return 0 if all(converged) else 1
