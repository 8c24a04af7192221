"""asv: whole SCF (setup included) of H2O, ethanol and benzene — the harness's torch driver
with torch PBE against PySCF DF-PBE — and the peak memory of the torch SCF.

Settings as in benchmarks/bench_scf.py: def2-SVP, grid level 3, def2-universal-jfit;
ours ``run_scf(PBE(), molecule)`` (its default convergence), PySCF ``conv_tol=1e-9``.
Torch and PySCF keep their default thread counts.
"""

from __future__ import annotations

from ._common import SCF_MOLECULES, molecule, pyscf_df_pbe, torch_pbe, warm_up_pyscf, warm_up_torch

_WARM = set()  # per benchmark process: what has been warmed up already (setup re-runs per sample)


def _warm(kind: str) -> None:
    if kind not in _WARM:
        (warm_up_torch if kind == "torch" else warm_up_pyscf)()
        _WARM.add(kind)


class _Heavy:
    """Timing attributes of the multi-second benchmarks: one call per sample, 2–4 samples
    (at most ~60 s of sampling) in one process; ``asv run --quick`` takes one sample."""

    number = 1
    repeat = (2, 4, 60.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 600


class TimeSCF(_Heavy):
    """Harness SCF with torch PBE from a Molecule: ``build_setup`` + iterations;
    ``exact_j`` adds the exact-J energy at the converged density (the `run_scf` default)."""

    params = (SCF_MOLECULES, [False, True])
    param_names = ["molecule", "exact_j"]

    def setup(self, name, exact_j):
        _warm("torch")
        self.mol = molecule(name)

    def time_scf_torch_pbe(self, name, exact_j):
        from harness.scf import run_scf

        r = run_scf(torch_pbe(), self.mol, exact_j=exact_j)
        if not r.converged:
            raise RuntimeError(f"{name}: harness SCF did not converge")


class TimeSCFPySCF(_Heavy):
    """Companion: PySCF ``RKS(mol, xc='pbe').density_fit(auxbasis='def2-universal-jfit')``,
    grid level 3, conv_tol 1e-9 (Mole build + grids + kernel)."""

    params = SCF_MOLECULES
    param_names = ["molecule"]

    def setup(self, name):
        _warm("pyscf")

    def time_scf_pyscf_df_pbe(self, name):
        mf = pyscf_df_pbe(name)
        mf.kernel()
        if not mf.converged:
            raise RuntimeError(f"{name}: PySCF did not converge")


class PeakMemSCF:
    """Peak RSS of the process (the imports of torch and PySCF included) over one
    harness SCF with torch PBE (`run_scf` defaults, exact J included)."""

    params = SCF_MOLECULES
    param_names = ["molecule"]
    timeout = 600

    def setup(self, name):
        self.mol = molecule(name)

    def peakmem_scf_torch_pbe(self, name):
        from harness.scf import run_scf

        run_scf(torch_pbe(), self.mol)
