"""``harness scf``: one closed-shell KS calculation with the harness's torch driver."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import HarnessError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scf",
        help="run the harness's torch Kohn-Sham SCF of a functional on one molecule",
        description="Closed-shell restricted Kohn-Sham with the harness's own torch driver: "
        "def2-SVP, grid level 3, J from density fitting (def2-universal-jfit), DIIS; the final "
        "energy is re-evaluated with exact J at the converged density.",
    )
    p.add_argument("--functional", required=True, metavar="SUBMISSION",
                   help="a submission folder (submissions/<name>) or a built-in name: lda, pbe, tpss")
    p.add_argument("--molecule", required=True, metavar="MOL", help="a G2 molecule name (e.g. H2O) or an .xyz file")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--float32", action="store_true", help="single precision (default: float64)")
    p.add_argument("--max-cycle", type=int, default=100, help="maximum SCF iterations (default: %(default)s)")
    p.add_argument("--no-exact-j", action="store_true", help="skip the exact-J energy re-evaluation")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: torch's default; 1 is often faster on a busy machine)")
    p.add_argument("--verbose", action="store_true", help="print every iteration")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _load(spec: str):
    """A submission folder (run in its own sandboxed process, `harness.remote`) or the name of a
    built-in functional (run here)."""
    path = Path(spec)
    if path.exists():
        from harness.remote import RemoteFunctional

        try:
            return RemoteFunctional(path).start()
        except HarnessError as exc:
            raise HarnessError(f"{spec}: {exc}") from exc
    from harness.functionals import TORCH_FUNCTIONALS

    if spec.lower() in TORCH_FUNCTIONALS:
        return TORCH_FUNCTIONALS[spec.lower()]()
    raise HarnessError(f"{spec}: no such submission folder, and not one of {sorted(TORCH_FUNCTIONALS)}")


def run(args) -> int:
    import torch

    from harness.contract import FunctionalError
    from harness.molecules import MoleculeError, resolve_molecule
    from harness.scf import run_scf

    fn = _load(args.functional)
    try:
        mol = resolve_molecule(args.molecule)
    except MoleculeError as exc:
        raise HarnessError(str(exc)) from exc
    try:
        res = run_scf(fn, mol, device=args.device, dtype=torch.float32 if args.float32 else torch.float64,
                      max_cycle=args.max_cycle, exact_j=not args.no_exact_j, verbose=args.verbose and not args.json,
                      threads=args.threads)
    except (FunctionalError, ValueError, RuntimeError) as exc:
        raise HarnessError(str(exc)) from exc
    if args.json:
        out = {
            "molecule": res.molecule, "functional": res.functional,
            "energy_Eh": res.energy_Eh, "energy_df_Eh": res.energy_df_Eh, "energy_xc_Eh": res.energy_xc_Eh,
            "iterations": res.iterations, "converged": res.converged, "wall_s": round(res.wall_s, 4),
            "setup_s": round(res.setup_s, 4), "iterations_s": round(res.iterations_s, 4),
            "exact_j_s": round(res.exact_j_s, 4), "nao": res.nao, "ngrid": res.ngrid,
        }
        print(json.dumps(out, indent=1))
    else:
        e = "n/a" if res.energy_Eh is None else f"{res.energy_Eh:.10f}"
        print(f"{res.molecule}  {res.functional}  nAO {res.nao}  grid {res.ngrid}")
        print(f"energy (exact J)   {e} Eh")
        print(f"energy (DF J)      {res.energy_df_Eh:.10f} Eh")
        print(f"iterations         {res.iterations}  converged {'yes' if res.converged else 'NO'}")
        print(f"wall time          {res.wall_s:.2f} s  (setup {res.setup_s:.2f} s, iterations {res.iterations_s:.2f} s, "
              f"exact J {res.exact_j_s:.2f} s)")
    return 0 if res.converged else 1
