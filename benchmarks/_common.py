"""Shared helpers of the asv benchmarks and the stand-alone scripts (defines no benchmarks
itself; the scripts import it as ``_common``, their own folder being first on ``sys.path``).

Everything heavy is imported lazily so that asv's discovery step stays fast.
"""

from __future__ import annotations

#: the SCF molecules of docs/performance.md (G2 names): 24, 72 and 114 AOs in def2-SVP
SCF_MOLECULES = ["H2O", "CH3CH2OH", "C6H6"]

#: convergence of the PySCF companion runs (as in benchmarks/bench_scf.py)
PYSCF_CONV_TOL = 1e-9
#: Davidson residual tolerance of both TDDFT codes (the harness default, the reference setting)
TDDFT_CONV_TOL = 1e-6
NSTATES = 5


def matmul_peak_gflops(device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Best float64 GFLOP/s of an n×n matmul on ``device``: the anchor that every speed figure is
    compared with in the same run (noise only slows a timing, so the best sample is the peak)."""
    import time

    import torch

    a = torch.randn(n, n, dtype=torch.float64, device=device)
    b = torch.randn(n, n, dtype=torch.float64, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def molecule(name: str):
    from harness.molecules import resolve_molecule

    return resolve_molecule(name)


def torch_pbe():
    from harness.functionals import TORCH_FUNCTIONALS

    return TORCH_FUNCTIONALS["pbe"]()


def jax_pbe():
    """The bundled jax PBE (submissions/pbe-jax) behind the harness's jax adapter."""
    from harness.adapter import as_functional
    from harness.functionals.jax_classic import make_pbe

    return as_functional(make_pbe(), name="pbe-jax")


def pyscf_df_pbe(name: str):
    """PySCF's DF-PBE RKS with the settings of benchmarks/bench_scf.py (not yet run)."""
    from pyscf import dft

    from harness.molecules import to_pyscf

    mf = dft.RKS(to_pyscf(molecule(name)), xc="pbe").density_fit(auxbasis="def2-universal-jfit")
    mf.grids.level = 3
    mf.conv_tol = PYSCF_CONV_TOL
    mf.verbose = 0
    return mf


def warm_up_torch() -> None:
    """One tiny SCF (H2) so that lazy initialisation (torch ops, PySCF modules, basis
    parsing) is not charged to the first timed call."""
    from harness.scf import run_scf

    run_scf(torch_pbe(), molecule("H2"), exact_j=False)


def warm_up_pyscf() -> None:
    from pyscf import dft

    from harness.molecules import to_pyscf

    mf = dft.RKS(to_pyscf(molecule("H2")), xc="pbe").density_fit(auxbasis="def2-universal-jfit")
    mf.verbose = 0
    mf.kernel()
