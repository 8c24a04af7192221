"""asv: singlet TDDFT (full Casida, 5 states) on a converged PBE ground state — the
harness's torch TDDFT (`harness.tddft.tddft`) against PySCF's TDDFT of its DF-PBE ground
state. The ground states are computed in ``setup()`` (once per benchmark process; asv
re-runs ``setup()`` before every sample, so they are memoised) and are not timed.
"""

from __future__ import annotations

from ._common import NSTATES, SCF_MOLECULES, TDDFT_CONV_TOL, molecule, pyscf_df_pbe, torch_pbe

_GROUND: dict = {}  # (code, molecule) -> ground state, per benchmark process


class _Heavy:
    """One call per sample; 1-3 samples within ~60 s in one process (benzene: ~1 minute per
    call on the project machine, so one sample); ``asv run --quick`` takes one sample."""

    number = 1
    repeat = (1, 3, 60.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 900


class TimeTDDFT(_Heavy):
    """``tddft(PBE(), scf_result, setup, nstates=5)`` (its default conv_tol 1e-6)."""

    params = SCF_MOLECULES
    param_names = ["molecule"]

    def setup(self, name):
        key = ("torch", name)
        if key not in _GROUND:
            from harness.integrals import build_setup
            from harness.scf import run_scf

            fn = torch_pbe()
            setup = build_setup(molecule(name))
            res = run_scf(fn, setup, exact_j=False)
            if not res.converged:
                raise RuntimeError(f"{name}: harness SCF did not converge")
            _GROUND[key] = (fn, res, setup)
        self.fn, self.res, self.setup_ = _GROUND[key]

    def time_tddft_torch_pbe(self, name):
        from harness.tddft import tddft

        out = tddft(self.fn, self.res, self.setup_, nstates=NSTATES)
        if not bool(out.converged.all()):
            raise RuntimeError(f"{name}: harness TDDFT did not converge")


class TimeTDDFTPySCF(_Heavy):
    """Companion: PySCF ``mf.TDDFT()`` (nstates 5, singlets, conv_tol 1e-6) on its
    DF-PBE ground state (grid level 3, def2-universal-jfit)."""

    params = SCF_MOLECULES
    param_names = ["molecule"]

    def setup(self, name):
        key = ("pyscf", name)
        if key not in _GROUND:
            mf = pyscf_df_pbe(name)
            mf.kernel()
            if not mf.converged:
                raise RuntimeError(f"{name}: PySCF did not converge")
            _GROUND[key] = mf
        self.mf = _GROUND[key]

    def time_tddft_pyscf_pbe(self, name):
        td = self.mf.TDDFT()
        td.nstates = NSTATES
        td.singlet = True
        td.conv_tol = TDDFT_CONV_TOL
        td.verbose = 0
        td.kernel()
        if not all(td.converged):
            raise RuntimeError(f"{name}: PySCF TDDFT did not converge")
