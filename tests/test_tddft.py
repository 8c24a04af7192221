"""Singlet TDDFT / TDA (harness.tddft) against PySCF on the same ground state (H2O)."""

import numpy as np
import pytest
import torch

from harness.functionals import LDA, PBE
from harness.integrals import build_setup
from harness.molecules import g2_molecule
from harness.scf import run_scf
from harness.tddft import HARTREE_EV, XCKernel, tddft
from harness.xc import XCEngine

AUXBASIS = "def2-universal-jfit"
NSTATES = 5
_CACHE: dict = {}


def setup_h2o():
    if "setup" not in _CACHE:
        _CACHE["setup"] = build_setup(g2_molecule("H2O"))
    return _CACHE["setup"]


def ground_state(cls):
    key = cls.__name__
    if key not in _CACHE:
        fn = cls()
        res = run_scf(fn, setup_h2o(), conv_tol_energy=1e-11, conv_tol_grad=1e-7)
        assert res.converged
        _CACHE[key] = (fn, res)
    return _CACHE[key]


def pyscf_at(fn, res, setup):
    """PySCF DF-RKS object carrying OUR ground state (same grid, no density pruning)."""
    from pyscf import dft

    mf = dft.RKS(setup.mol, xc=fn.libxc_code).density_fit(auxbasis=AUXBASIS)
    mf.grids.level = 3
    mf.small_rho_cutoff = 0
    mf.mo_coeff = res.mo_coeff.numpy()
    mf.mo_energy = res.mo_energy.numpy()
    mf.mo_occ = res.mo_occ.numpy()
    mf.converged = True
    return mf


@pytest.mark.parametrize("tda", [True, False], ids=["tda", "rpa"])
@pytest.mark.parametrize("cls", [LDA, PBE], ids=["lda", "pbe"])
def test_tddft_matches_pyscf(cls, tda):
    setup = setup_h2o()
    fn, res = ground_state(cls)
    r = tddft(fn, res, setup, nstates=NSTATES, tda=tda, conv_tol=1e-7)
    assert bool(r.converged.all())
    mf = pyscf_at(fn, res, setup)
    td = mf.TDA() if tda else mf.TDDFT()
    td.nstates = NSTATES
    td.conv_tol = 1e-10
    td.kernel()
    e_ref = np.asarray(td.e) * HARTREE_EV
    f_ref = np.asarray(td.oscillator_strength())
    de = np.abs(r.excitation_energies_eV.numpy() - e_ref).max()
    df = np.abs(r.oscillator_strengths.numpy() - f_ref).max()
    print(f"\nH2O {cls.__name__} {'TDA' if tda else 'RPA'}: max|dE|={de:.2e} eV max|df|={df:.2e} "
          f"iterations={r.iterations} wall={r.wall_s:.2f}s")
    assert de < 1e-4
    assert df < 1e-4


@pytest.mark.parametrize("cls", [LDA, PBE], ids=["lda", "pbe"])
def test_xc_hvp_matches_finite_difference(cls):
    """K_xc[δP] (double backward) = central difference of V_xc along δP."""
    setup = setup_h2o()
    fn, res = ground_state(cls)
    P0 = res.dm
    g = torch.Generator().manual_seed(0)
    nocc = setup.nocc
    C = res.mo_coeff
    # two perturbations of transition (occupied–virtual) type: the TDDFT ones
    X = torch.randn(2, C.shape[1] - nocc, nocc, generator=g, dtype=P0.dtype)
    T = C[:, nocc:] @ X @ C[:, :nocc].T
    dP = T + T.transpose(-1, -2)
    K = XCKernel(fn, setup, P0).apply(dP)
    K_loop = XCKernel(fn, setup, P0, batched=False).apply(dP)
    assert torch.allclose(K, K_loop, rtol=1e-10, atol=1e-12)
    eng = XCEngine(fn, setup)
    h = 1e-4
    for k in range(2):
        Vp = eng.exc_vxc(P0 + h * dP[k])[1]
        Vm = eng.exc_vxc(P0 - h * dP[k])[1]
        fd = (Vp - Vm) / (2 * h)
        err = float((K[k] - fd).abs().max())
        scale = float(fd.abs().max())
        print(f"\n{cls.__name__} perturbation {k}: max|K - FD|={err:.2e} (max|FD|={scale:.2e})")
        assert err < 1e-5 * max(scale, 1.0)


def test_davidson_matches_dense_diagonalisation():
    """Davidson eigenvalues = eigenvalues of the explicitly built (A+B)^½-symmetrised / A matrix."""
    setup = setup_h2o()
    fn, res = ground_state(LDA)
    nocc = setup.nocc
    C, eps = res.mo_coeff, res.mo_energy
    Co, Cv = C[:, :nocc], C[:, nocc:]
    nvir = Cv.shape[1]
    K = XCKernel(fn, setup, res.dm, batched=False)
    N = nvir * nocc
    E = torch.eye(N, dtype=C.dtype).reshape(N, nvir, nocc)
    T = Cv @ E @ Co.T
    dP = T + T.transpose(-1, -2)
    R = (Cv.T @ (setup.coulomb_df(dP) + K.apply(dP)) @ Co).reshape(N, N)
    de = (eps[nocc:, None] - eps[None, :nocc]).reshape(-1)
    A = torch.diag(de) + R
    M = torch.diag(de) @ (torch.diag(de) + 2 * R)  # (A−B)(A+B): same eigenvalues ω²
    w_tda = torch.linalg.eigvalsh(0.5 * (A + A.T))[:8]
    w_rpa = torch.sort(torch.linalg.eigvals(M).real).values[:8].sqrt()
    for tda, ref in ((True, w_tda), (False, w_rpa)):
        r = tddft(fn, res, setup, nstates=8, tda=tda, conv_tol=1e-8)
        assert bool(r.converged.all())
        assert torch.allclose(r.excitation_energies_Eh, ref, atol=1e-9, rtol=0)


def test_unconverged_is_reported():
    setup = setup_h2o()
    fn, res = ground_state(LDA)
    r = tddft(fn, res, setup, nstates=3, max_cycle=1, conv_tol=1e-12)
    assert not bool(r.converged.all())
    assert r.iterations == 1
