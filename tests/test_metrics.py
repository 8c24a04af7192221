"""Per-molecule metrics against independent truths (PySCF run directly, numpy by hand)."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
from pyscf import dft
from pyscf.dft import numint

from harness.metrics import (
    ROW_FIELDS,
    B3LYPEvaluator,
    MetricsError,
    density_grids,
    density_l2,
    dipole_debye,
    dipole_error_debye,
    energy_error_mEh,
    excitation_mae_eV,
    molecule_metrics,
    scf_iter_reduction,
)
from harness.molecules import g2_molecule, to_pyscf
from harness.reference.compute import b3lyp_cycles, compute_reference
from harness.reference.settings import ReferenceSettings

SETTINGS = ReferenceSettings(conformers=0)


def _reference(name):
    rec = compute_reference(g2_molecule(name), "test", SETTINGS, with_excitations=False)
    return rec, to_pyscf(rec.molecule, SETTINGS.basis)


def _df_pbe(pmol):
    """An independent PySCF DF-PBE/def2-SVP SCF: a nearby but different density and energy."""
    mf = dft.RKS(pmol, xc="pbe").density_fit()
    mf.verbose = 0
    mf.conv_tol = 1e-10
    mf.kernel()
    assert mf.converged
    return mf


@pytest.fixture(scope="module")
def h2o():
    rec, pmol = _reference("H2O")
    return rec, pmol, B3LYPEvaluator.from_record(rec, SETTINGS)


@pytest.fixture(scope="module")
def h2o_pbe(h2o):
    return _df_pbe(h2o[1])


@pytest.fixture(scope="module")
def hf():
    return _reference("HF")


def _rotated_dm(rec, theta):
    """Closed-shell density of the reference orbitals with HOMO and LUMO mixed by ``theta``
    (an exact unitary rotation, so the result is idempotent: P S P = 2 P)."""
    c = np.asarray(rec.mo_coeff)
    nocc = int(np.count_nonzero(rec.mo_occ > 0))
    kappa = np.zeros((c.shape[1], c.shape[1]))
    kappa[nocc, nocc - 1], kappa[nocc - 1, nocc] = theta, -theta
    c_rot = c @ scipy.linalg.expm(kappa)
    return 2.0 * c_rot[:, :nocc] @ c_rot[:, :nocc].T


# ---------------------------------------------------------------------------------- E_rho


def test_e_rho_is_zero_at_the_reference_density(h2o):
    rec, _, ev = h2o
    assert abs(ev.e_rho_mEh(rec.dm)) < 1e-6  # 1e-9 Eh
    # the stored SCF energy is the same functional at the same density
    assert abs(ev.e_ref_Eh - rec.energy_Eh) < 1e-8


def test_e_rho_of_the_pbe_density_is_positive_and_equals_direct_pyscf(h2o, h2o_pbe):
    rec, pmol, ev = h2o
    e_rho = ev.e_rho_mEh(h2o_pbe.make_rdm1())
    assert e_rho > 1e-3  # ~0.15 mEh: a real, positive density-driven error
    # independent: a fresh PySCF B3LYP object on an explicitly built, unpruned level-3 grid
    mf = dft.RKS(pmol, xc="b3lyp")
    mf.verbose = 0
    mf.small_rho_cutoff = 0
    mf.grids.level = 3
    mf.grids.build()
    direct = (mf.energy_tot(dm=h2o_pbe.make_rdm1()) - mf.energy_tot(dm=rec.dm)) * 1000
    assert e_rho == pytest.approx(direct, abs=1e-6)


def test_e_rho_is_quadratic_in_an_orbital_rotation(h2o):
    rec, pmol, ev = h2o
    s = pmol.intor("int1e_ovlp")
    e = {}
    for theta in (0.01, 0.02):
        dm = _rotated_dm(rec, theta)
        np.testing.assert_allclose(dm @ s @ dm, 2 * dm, atol=1e-10)
        e[theta] = ev.e_rho_mEh(dm)
        assert e[theta] > 1e-3
    assert e[0.02] / e[0.01] == pytest.approx(4.0, rel=0.02)  # a minimum: E_rho ∝ θ²


# ---------------------------------------------------------------------------------- dipole


def test_dipole_of_the_reference_density_is_the_stored_dipole(h2o, h2o_pbe):
    rec, pmol, ev = h2o
    assert np.linalg.norm(dipole_debye(pmol, rec.dm) - rec.dipole_debye) < 1e-6
    assert ev.dipole_error_debye(rec.dm, rec.dipole_debye) < 1e-6
    mu_pbe = np.asarray(h2o_pbe.dip_moment(unit="Debye", verbose=0))
    expected = float(np.linalg.norm(mu_pbe - rec.dipole_debye))
    assert expected > 1e-3
    assert dipole_error_debye(pmol, h2o_pbe.make_rdm1(), rec.dipole_debye) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------- L2 density


def test_density_l2_zero_at_reference_and_equal_to_numpy_on_all_points(h2o, h2o_pbe):
    rec, pmol, ev = h2o
    assert ev.density_l2(rec.dm) == 0.0
    # the metric's grid is PySCF's plain level-3 Grids(mol)
    g = dft.gen_grid.Grids(pmol)
    g.level = 3
    g.build()
    np.testing.assert_array_equal(g.coords, ev.grids.coords)
    np.testing.assert_array_equal(g.weights, ev.grids.weights)
    # independent: all points at once, each density separately, plain numpy contraction
    dm_pbe = h2o_pbe.make_rdm1()
    ao = numint.eval_ao(pmol, g.coords, deriv=0)
    rho_model = np.einsum("gi,ij,gj->g", ao, dm_pbe, ao)
    rho_ref = np.einsum("gi,ij,gj->g", ao, rec.dm, ao)
    expected = math.sqrt(float(np.sum(g.weights * (rho_model - rho_ref) ** 2)))
    assert expected > 1e-4
    assert ev.density_l2(dm_pbe) == pytest.approx(expected, rel=1e-8)
    # the blocking does not matter
    assert density_l2(pmol, g, dm_pbe, rec.dm, block_size=997) == pytest.approx(expected, rel=1e-8)
    assert density_l2(pmol, density_grids(pmol), dm_pbe, rec.dm) == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------------------------- SCF cycles


def test_scf_from_the_reference_density_takes_at_most_two_cycles_as_in_pyscf(h2o):
    rec, pmol, ev = h2o
    run = ev.run_scf(rec.dm)
    cycles, converged, mf = b3lyp_cycles(pmol, SETTINGS, dm0=rec.dm)
    assert run.converged and converged
    assert run.cycles <= 2
    assert run.cycles == cycles
    assert run.e_tot_Eh == pytest.approx(mf.e_tot, abs=1e-9)


def test_scf_from_the_pbe_density_matches_pyscf_and_its_initial_energy_is_e_b3lyp(h2o, h2o_pbe):
    rec, pmol, ev = h2o
    dm = h2o_pbe.make_rdm1()
    run = ev.run_scf(dm)
    cycles, converged, mf = b3lyp_cycles(pmol, SETTINGS, dm0=dm)
    assert run.converged and converged
    assert run.cycles == cycles and run.cycles > 2
    assert run.e_tot_Eh == pytest.approx(mf.e_tot, abs=1e-9)
    # the shortcut of molecule_metrics: the SCF's first energy is E_B3LYP[P] on the same grid
    assert run.same_grid
    assert abs(run.e_init_Eh - ev.energy_Eh(dm)) < 1e-10
    # the evaluator's grid was not touched by the SCFs
    assert ev.grids.weights.size == density_grids(pmol).weights.size


def test_scf_from_minao_gives_the_stored_baseline(hf):
    rec, pmol = hf
    ev = B3LYPEvaluator.from_record(rec, SETTINGS)
    run = ev.run_scf(None)
    assert run.converged
    assert run.cycles == rec.scf_cycles_minao


def test_scf_iter_reduction():
    assert scf_iter_reduction(3, 12) == pytest.approx(0.75)
    assert scf_iter_reduction(12, 12) == 0.0
    assert scf_iter_reduction(18, 12) == pytest.approx(-0.5)
    with pytest.raises(MetricsError):
        scf_iter_reduction(3, 0)


# ---------------------------------------------------------------------------------- energy, rows


def test_total_energy_error_of_a_df_pbe_calculation(h2o, h2o_pbe):
    rec, _, ev = h2o
    expected = (h2o_pbe.e_tot - rec.energy_Eh) * 1000.0
    assert energy_error_mEh(h2o_pbe.e_tot, rec.energy_Eh) == expected
    assert abs(expected) > 1.0
    timings = {}
    row = molecule_metrics(rec, h2o_pbe.make_rdm1(), h2o_pbe.e_tot, SETTINGS, evaluator=ev, timings=timings)
    assert tuple(row) == ROW_FIELDS
    assert row["energy_error_mEh"] == expected
    assert row["e_rho_mEh"] == pytest.approx(ev.e_rho_mEh(h2o_pbe.make_rdm1()), abs=1e-6)
    assert set(row) == set(ROW_FIELDS) and row["scf_converged"] is True
    assert row["scf_cycles_minao"] == rec.scf_cycles_minao
    assert row["scf_iter_reduction"] == 1 - row["scf_cycles_model_start"] / rec.scf_cycles_minao
    assert row["excitation_mae_eV"] is None
    assert row["wall_s"] > 0 and timings["wall_s"] == row["wall_s"]
    with pytest.raises(MetricsError, match="finite"):
        energy_error_mEh(float("nan"), rec.energy_Eh)


def test_molecule_metrics_at_the_reference_is_perfect(hf):
    rec, _ = hf
    with pytest.raises(MetricsError, match="no excitation energies"):
        molecule_metrics(rec, rec.dm, rec.energy_Eh, SETTINGS, excitations_model_eV=[1.0])
    rec_exc = dataclasses.replace(rec, excitation_energies_eV=np.array([10.0, 12.0]))
    row = molecule_metrics(rec_exc, rec.dm, rec.energy_Eh, SETTINGS, excitations_model_eV=[10.5, 11.0])
    assert row["excitation_mae_eV"] == pytest.approx(0.75)
    assert row["scf_converged"] is True
    assert row["energy_error_mEh"] == 0.0
    assert abs(row["e_rho_mEh"]) < 1e-6
    assert row["dipole_error_debye"] < 1e-6
    assert row["density_l2"] == 0.0
    assert row["scf_cycles_model_start"] <= 2
    assert row["scf_iter_reduction"] > 0.5


def test_model_density_is_checked(hf):
    rec, _ = hf
    ev = B3LYPEvaluator.from_record(rec, SETTINGS)
    with pytest.raises(MetricsError, match="shape"):
        ev.check_dm(rec.dm[:-1, :-1])
    bad = rec.dm.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MetricsError, match="non-finite"):
        ev.check_dm(bad)
    bad = rec.dm.copy()
    bad[0, 1] += 0.1
    with pytest.raises(MetricsError, match="symmetric"):
        ev.check_dm(bad)
    with pytest.raises(MetricsError, match="electrons"):
        ev.check_dm(0.9 * rec.dm)


# ---------------------------------------------------------------------------------- excitations


def test_excitation_mae():
    assert excitation_mae_eV([1.0, 2.5, 3.0], [1.5, 2.0, 3.25]) == pytest.approx(0.4166666666666667)
    assert excitation_mae_eV(np.array([7.0]), (7.0,)) == 0.0
    with pytest.raises(MetricsError, match="3 state.*2"):
        excitation_mae_eV([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(MetricsError, match="no states"):
        excitation_mae_eV([], [])
    with pytest.raises(MetricsError, match="non-finite"):
        excitation_mae_eV([np.nan], [1.0])


# ---------------------------------------------------------------------------------- medium molecule


@pytest.mark.slow
def test_ethanol_metrics_at_reference_and_pbe():
    rec, pmol = _reference("CH3CH2OH")
    ev = B3LYPEvaluator.from_record(rec, SETTINGS)
    row = molecule_metrics(rec, rec.dm, rec.energy_Eh, SETTINGS, evaluator=ev)
    assert abs(row["e_rho_mEh"]) < 1e-6 and row["density_l2"] == 0.0 and row["scf_cycles_model_start"] <= 2
    pbe = _df_pbe(pmol)
    row = molecule_metrics(rec, pbe.make_rdm1(), pbe.e_tot, SETTINGS, evaluator=ev)
    assert row["scf_converged"] and row["e_rho_mEh"] > 0
    assert row["scf_cycles_model_start"] == b3lyp_cycles(pmol, SETTINGS, dm0=pbe.make_rdm1())[0]
