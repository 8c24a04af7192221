"""The torch restricted KS driver (harness.scf) against PySCF DF-RKS on the same grid."""

import pytest
import torch

from harness.contract import FunctionalError
from harness.functionals import LDA, PBE, TPSS
from harness.integrals import build_setup
from harness.molecules import g2_molecule, to_pyscf
from harness.scf import run_scf

AUXBASIS = "def2-universal-jfit"
_SETUPS: dict = {}


def setup_of(name):
    if name not in _SETUPS:
        _SETUPS[name] = build_setup(g2_molecule(name))
    return _SETUPS[name]


def pyscf_df_rks(name, xc):
    from pyscf import dft

    mf = dft.RKS(to_pyscf(g2_molecule(name)), xc=xc).density_fit(auxbasis=AUXBASIS)
    mf.grids.level = 3
    mf.small_rho_cutoff = 0  # no density-based grid pruning: same grid as ours
    mf.conv_tol = 1e-10
    e = mf.kernel()
    assert mf.converged
    return e, mf


def check_against_pyscf(name, cls):
    from pyscf import dft

    fn = cls()
    res = run_scf(fn, setup_of(name))
    assert res.converged, res.history[-3:]
    e_ref, mf = pyscf_df_rks(name, fn.libxc_code)
    d_df = abs(res.energy_df_Eh - e_ref)
    # exact J: PySCF's non-DF RKS energy functional at our converged density
    mf_exact = dft.RKS(mf.mol, xc=fn.libxc_code)
    mf_exact.grids = mf.grids
    mf_exact.small_rho_cutoff = 0
    e_exact_ref = mf_exact.energy_tot(res.dm.numpy())
    d_exact = abs(res.energy_Eh - e_exact_ref)
    print(f"\n{name} {type(fn).__name__}: |dE_DF|={d_df:.2e} |dE_exactJ|={d_exact:.2e} "
          f"iterations ours={res.iterations} pyscf={mf.cycles}")
    assert d_df <= 1e-6
    assert d_exact <= 1e-6
    return res


@pytest.mark.parametrize("name", ["H2O", "NH3", "CH4"])
@pytest.mark.parametrize("cls", [LDA, PBE, TPSS], ids=["lda", "pbe", "tpss"])
def test_scf_energy_matches_pyscf(name, cls):
    check_against_pyscf(name, cls)


@pytest.mark.slow
def test_scf_energy_matches_pyscf_ethanol():
    res = check_against_pyscf("CH3CH2OH", PBE)
    assert res.nao >= 60


def test_result_fields_and_history():
    res = run_scf(PBE(), setup_of("H2O"))
    assert res.converged and res.iterations == len(res.history) <= 100
    last = res.history[-1]
    assert abs(last["delta_e_Eh"]) < 1e-9 and last["grad_norm"] < 1e-5
    assert {"energy_Eh", "delta_e_Eh", "grad_norm", "mode"} <= set(last)
    nao = res.nao
    assert res.dm.shape == (nao, nao) and res.mo_coeff.shape[0] == nao
    assert float(res.mo_occ.sum()) == 10.0
    # aufbau: the occupied orbitals are the lowest ones; the idempotent density is C_occ C_occᵀ
    C = res.mo_coeff[:, :5]
    torch.testing.assert_close(2 * C @ C.T, res.dm, atol=1e-5, rtol=0)
    assert res.energy_xc_Eh < 0
    assert res.iterations_s > 0 and res.wall_s >= res.iterations_s


def test_run_scf_from_molecule_times_setup():
    res = run_scf(LDA(), g2_molecule("H2O"), exact_j=False)
    assert res.converged and res.setup_s > 0 and res.energy_Eh is None


def test_max_cycle_reached_returns_unconverged():
    res = run_scf(PBE(), setup_of("H2O"), max_cycle=2)
    assert res.converged is False
    assert len(res.history) == 2 and res.iterations == 2


def test_given_initial_density_converges_fast():
    s = setup_of("H2O")
    first = run_scf(PBE(), s, exact_j=False)
    again = run_scf(PBE(), s, dm0=first.dm, exact_j=False)
    assert again.converged and again.iterations <= 3
    assert abs(again.energy_df_Eh - first.energy_df_Eh) < 1e-8


class _NaNAfter:
    """Behaves like Slater exchange, then returns NaN from the 3rd call on."""

    name = "nan-after-two"
    features = ["density", "grid_weights"]

    def __init__(self):
        self.calls = 0

    def get_exc(self, f):
        self.calls += 1
        rho = f["density"].clamp(min=0)
        e = -0.9305257363491 * ((rho ** (4 / 3)).sum(0) * f["grid_weights"]).sum()
        return e * float("nan") if self.calls > 2 else e


def test_scf_raises_functional_error_mid_run():
    with pytest.raises(FunctionalError, match="nan-after-two.*H2O.*non-finite"):
        run_scf(_NaNAfter(), setup_of("H2O"))


def test_float32_runs():
    res = run_scf(LDA(), setup_of("H2O"), dtype=torch.float32, conv_tol_energy=1e-5, conv_tol_grad=1e-3,
                  exact_j=False)
    ref = run_scf(LDA(), setup_of("H2O"), exact_j=False)
    assert res.dm.dtype == torch.float32
    assert abs(res.energy_df_Eh - ref.energy_df_Eh) < 1e-3


def test_cli_scf_json(capsys, repo_root):
    import json

    from harness.cli import main

    rc = main(["scf", "--functional", str(repo_root / "submissions" / "lda"), "--molecule", "H2O", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["converged"] is True
    assert {"energy_Eh", "energy_df_Eh", "iterations", "wall_s", "setup_s", "iterations_s"} <= set(out)
    assert abs(out["energy_Eh"] - out["energy_df_Eh"]) < 1e-3


def test_fallback_ladder_still_converges_to_same_energy():
    """stall_window=1 walks the ladder diis → damp → shift → shift+damp at once."""
    s = setup_of("H2O")
    ref = run_scf(LDA(), s, exact_j=False)
    res = run_scf(LDA(), s, stall_window=1, exact_j=False, max_cycle=100)
    modes = [h["mode"] for h in res.history]
    assert "damp" in modes and "shift" in modes
    assert res.converged
    assert abs(res.energy_df_Eh - ref.energy_df_Eh) < 1e-7
