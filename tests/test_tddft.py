"""Singlet TDDFT / TDA (harness.tddft) against PySCF on the same ground state (H2O)."""

import numpy as np
import pytest
import torch

from harness.functionals import LDA, PBE, TPSS
from harness.integrals import build_setup
from harness.molecules import g2_molecule
from harness.scf import run_scf
from harness.tddft import HARTREE_EV, MOResponse, XCKernel, tddft
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
    # one iteration of the search with the random admixture, one of the noise-free retry
    assert r.timings["guess_retry"] and r.iterations == 2


# ------------------------------------------------------------------------------------------
# the MO-pair response (default path) and its per-point kernel
# ------------------------------------------------------------------------------------------


class NonLocalLDA(torch.nn.Module):
    """LDA plus a term coupling all grid points, λ (Σ_g w ρ^{4/3})²: not point-local."""

    features = ["density", "grid_weights"]

    def __init__(self, lam: float = 0.05):
        super().__init__()
        self.lda = LDA()
        self.lam = lam

    def get_exc(self, f):
        rho = f["density"].sum(0).clamp(min=1e-14)
        s = (f["grid_weights"] * rho ** (4.0 / 3.0)).sum()
        return self.lda.get_exc(f) - self.lam * s * s / 100.0


@pytest.mark.parametrize("cls", [LDA, PBE, TPSS], ids=["lda", "pbe", "tpss"])
def test_mo_response_equals_ao_response(cls):
    """The MO-pair XC response with the per-point kernel = the AO-basis double-backward one."""
    setup = setup_h2o()
    fn, res = ground_state(cls)
    nocc = setup.nocc
    Co, Cv = res.mo_coeff[:, :nocc], res.mo_coeff[:, nocc:]
    kernel = XCKernel(fn, setup, res.dm, batched=False)
    mo = MOResponse(kernel, setup, Co, Cv)
    assert mo.local and mo.local_error < 1e-12
    X = torch.randn(3, Cv.shape[1], nocc, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    T = Cv @ X @ Co.T
    ref = Cv.T @ kernel.apply(T + T.transpose(-1, -2)) @ Co
    got = mo(X)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    mo.f = None  # the exact per-vector Hessian-vector products give the same
    assert torch.allclose(mo(X), ref, rtol=0, atol=1e-12 * float(ref.abs().max()))


def test_non_local_functional_falls_back_to_exact_products():
    setup = setup_h2o()
    fn = NonLocalLDA()
    res = run_scf(fn, setup, conv_tol_energy=1e-11, conv_tol_grad=1e-7)
    assert res.converged
    nocc = setup.nocc
    mo = MOResponse(XCKernel(fn, setup, res.dm, batched=False), setup, res.mo_coeff[:, :nocc], res.mo_coeff[:, nocc:])
    assert not mo.local and mo.local_error > 1e-6
    r_mo = tddft(fn, res, setup, nstates=3)
    r_ao = tddft(fn, res, setup, nstates=3, xc_response="ao")
    assert r_mo.timings["local_kernel"] is False
    assert torch.allclose(r_mo.excitation_energies_eV, r_ao.excitation_energies_eV, atol=1e-8, rtol=0)


def test_jax_pbe_gives_the_torch_excitations():
    """The jax PBE submission, at the torch PBE ground state, gives the same TDDFT states."""
    pytest.importorskip("jax")
    from pathlib import Path

    from harness.submission import load_functional

    setup = setup_h2o()
    fn, res = ground_state(PBE)
    jfn = load_functional(Path(__file__).resolve().parents[1] / "submissions" / "pbe-jax")
    r_t = tddft(fn, res, setup, nstates=NSTATES)
    r_j = tddft(jfn, res, setup, nstates=NSTATES)
    assert bool(r_j.converged.all())
    assert torch.allclose(r_j.excitation_energies_eV, r_t.excitation_energies_eV, atol=1e-8, rtol=0)
    assert torch.allclose(r_j.oscillator_strengths, r_t.oscillator_strengths, atol=1e-8, rtol=0)


# ------------------------------------------------------------------------------------------
# NH3 and formaldehyde against PySCF; one molecule of 60+ AOs (slow)
# ------------------------------------------------------------------------------------------


def _against_pyscf(name: str, cls, tda: bool, nstates: int = NSTATES):
    setup = build_setup(g2_molecule(name))
    fn = cls()
    res = run_scf(fn, setup, conv_tol_energy=1e-11, conv_tol_grad=1e-7)
    assert res.converged
    r = tddft(fn, res, setup, nstates=nstates, tda=tda, conv_tol=1e-7)
    assert bool(r.converged.all())
    td = pyscf_at(fn, res, setup).TDA() if tda else pyscf_at(fn, res, setup).TDDFT()
    td.nstates = nstates
    td.conv_tol = 1e-10
    td.kernel()
    de = np.abs(r.excitation_energies_eV.numpy() - np.asarray(td.e) * HARTREE_EV).max()
    df = np.abs(r.oscillator_strengths.numpy() - np.asarray(td.oscillator_strength())).max()
    print(f"\n{name} {cls.__name__} {'TDA' if tda else 'RPA'} nAO={setup.nao}: max|dE|={de:.2e} eV "
          f"max|df|={df:.2e} wall={r.wall_s:.2f}s")
    assert de < 1e-4
    assert df < 1e-4


@pytest.mark.parametrize("tda", [True, False], ids=["tda", "rpa"])
@pytest.mark.parametrize("cls", [LDA, PBE], ids=["lda", "pbe"])
@pytest.mark.parametrize("name", ["NH3", "H2CO"])
def test_nh3_and_formaldehyde_match_pyscf(name, cls, tda):
    _against_pyscf(name, cls, tda)


@pytest.mark.slow
def test_ethanol_72_aos_matches_pyscf():
    _against_pyscf("CH3CH2OH", PBE, tda=False)


@pytest.mark.slow
def test_benzene_114_aos_finds_the_degenerate_pair():
    """Benzene's 4th/5th PBE singlets are a degenerate pair (7.2019 eV) that a unit-vector
    Davidson search skipped; the states must match PySCF in order."""
    _against_pyscf("C6H6", PBE, tda=False)


# ------------------------------------------------------------------------------------------
# metric 6 inside harness evaluate, and the CLI
# ------------------------------------------------------------------------------------------


def test_evaluate_reports_excitations_per_state(tmp_path):
    from harness.evaluate import evaluate
    from harness.tddft import excitations_hook

    sub = submissions_dir() / "pbe"
    res = evaluate(sub, split="tiny", out=tmp_path, progress=False, keys=["HF"], excitations=excitations_hook)
    row = res.rows[0]
    assert row["status"] == "ok", row["error"]
    model = [row[f"excitation_model_eV_{k}"] for k in range(1, 6)]
    ref = [row[f"excitation_ref_eV_{k}"] for k in range(1, 6)]
    assert all(m is not None for m in model) and all(r is not None for r in ref)
    assert row["excitation_mae_eV"] == pytest.approx(np.mean(np.abs(np.subtract(model, ref))), rel=1e-12)
    assert res.summary["excitation_mae_eV"] == pytest.approx(row["excitation_mae_eV"], rel=1e-12)
    assert res.summary["provenance"]["excitations"]["stage"] == "harness.tddft.excitations_hook"


def test_evaluate_records_unconverged_davidson_as_failed(tmp_path, monkeypatch):
    import harness.tddft as td
    from harness.evaluate import evaluate

    monkeypatch.setitem(td.EXCITATION_METRIC_SETTINGS, "max_cycle", 1)
    res = evaluate(submissions_dir() / "lda", split="tiny", out=tmp_path, progress=False, keys=["HF"],
                   excitations=td.excitations_hook)
    row = res.rows[0]
    assert row["status"] == "excitations_failed"
    assert "HF" in row["error"] and "did not converge" in row["error"]
    assert res.summary["failed_molecules"] == ["HF"]
    # metrics 1-5 are kept, and the result says its excitations are incomplete
    assert row["energy_error_mEh"] is not None and row["excitation_mae_eV"] is None
    assert res.summary["energy_mae_mEh"] == pytest.approx(abs(row["energy_error_mEh"]))
    assert res.summary["excitations_complete"] is False and res.summary["coverage"] == pytest.approx(1 / 6)


def test_negative_omega_squared_is_reported_as_unstable(monkeypatch):
    """Full TDDFT with ω² < 0 (an unstable ground state) is an error, never a 'converged' 0 eV."""
    from types import SimpleNamespace

    import harness.tddft as td

    fake = td.TDDFTResult(excitation_energies_eV=torch.tensor([0.0, 5.0]), oscillator_strengths=torch.zeros(2),
                          converged=torch.tensor([True, True]), iterations=3,
                          unstable=torch.tensor([True, False]))
    monkeypatch.setattr(td, "tddft", lambda *a, **k: fake)
    record = SimpleNamespace(excitation_energies_eV=[4.0, 5.0])
    with pytest.raises(td.TDDFTError, match=r"unstable TDDFT: omega\^2 < 0 for state\(s\) \[1\]"):
        td.excitations_hook(None, SimpleNamespace(name="X"), None, record)


def test_excitations_hook_skips_geometries_without_reference_states():
    from types import SimpleNamespace

    from harness.tddft import excitations_hook

    setup = setup_h2o()
    fn, res = ground_state(LDA)
    assert excitations_hook(fn, setup, res, SimpleNamespace(excitation_energies_eV=None)) is None


def test_cli_json(capsys):
    import json

    from harness.cli import main

    rc = main(["tddft", "--functional", "lda", "--molecule", "H2O", "--nstates", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert len(out["excitations_eV"]) == 3 and len(out["oscillator_strengths"]) == 3
    assert out["wall_s"] > 0 and all(out["converged"])
    fn, res = ground_state(LDA)
    ref = tddft(fn, res, setup_h2o(), nstates=3)
    assert np.allclose(out["excitations_eV"], ref.excitation_energies_eV.numpy(), atol=1e-4)


def test_cli_bad_nstates_exits_1(capsys):
    from harness.cli import main

    assert main(["tddft", "--functional", "lda", "--molecule", "H2O", "--nstates", "0"]) == 1
    assert "--nstates" in capsys.readouterr().err


def submissions_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "submissions"
