"""DI-Loss targets (PROTOCOL §4): reference side (PySCF) and model side (harness.grassmann)
share one parametrisation; both checked against finite differences and against each other."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from pyscf import dft, gto

from harness.adapter import TorchFunctional
from harness.functionals import PBE, TPSS
from harness.grassmann import delta_density, energy_at, energy_gradient_hvp, fixed_terms, rotate, second_order_density
from harness.integrals import build_setup
from harness.reference import pins
from harness.reference.compute import make_rks
from harness.reference.di_targets import (
    DISettings,
    DITargets,
    compute_di_targets,
    point_quantities,
    rotate_np,
)
from harness.reference.settings import ReferenceSettings
from harness.reference.store import ManifestEntry, ReferenceDataError, ReferenceSet, read_record, write_record

HF_ATOM = "H 0 0 0; F 0 0 0.917"
H2O_ATOM = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"


def _mol(atom):
    return gto.M(atom=atom, basis="def2-svp", verbose=0)


def _fd1(f, h):
    """Fourth-order central first derivative of f(t) at 0."""
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


def _fd2(f, f0, h):
    """Fourth-order central second derivative of f(t) at 0."""
    return (-f(2 * h) + 16 * f(h) - 30 * f0 + 16 * f(-h) - f(-2 * h)) / (12 * h * h)


@pytest.fixture(scope="module")
def b3lyp_hf():
    mf = make_rks(_mol(HF_ATOM), ReferenceSettings())
    mf.conv_tol, mf.conv_tol_grad = 1e-11, 1e-8
    mf.kernel()
    assert mf.converged
    return mf


@pytest.fixture(scope="module")
def b3lyp_targets(b3lyp_hf):
    return compute_di_targets(b3lyp_hf, DISettings(samples=1, sigma=0.05, probes=2, seed=3), key="HF")


# -- parametrisation ---------------------------------------------------------------------
def test_rotation_closed_forms_match_matrix_exponential():
    torch.manual_seed(0)
    nao, nocc, nvir = 7, 3, 4
    C = torch.linalg.qr(torch.randn(nao, nao, dtype=torch.float64))[0][:, : nocc + nvir]
    v = torch.randn(nvir, nocc, dtype=torch.float64)
    P0 = 2 * C[:, :nocc] @ C[:, :nocc].T
    t = 1e-4
    Ct = rotate(C, nocc, t * v)
    Pt = 2 * Ct[:, :nocc] @ Ct[:, :nocc].T
    expansion = P0 + t * delta_density(C, nocc, v) + t * t * second_order_density(C, nocc, v)
    assert float((Pt - expansion).abs().max()) < 1e-11
    # first-order orbitals: C_occ(κ) ≈ C_o + C_v κ (occupied block first)
    assert float((Ct[:, :nocc] - (C[:, :nocc] + t * C[:, nocc:] @ v)).abs().max()) < 1e-7
    np.testing.assert_allclose(rotate_np(C.numpy(), nocc, (t * v).numpy()), Ct.numpy(), atol=1e-14)
    assert torch.allclose(Ct.T @ Ct, torch.eye(nocc + nvir, dtype=torch.float64), atol=1e-13)


# -- (a) reference targets against finite differences of PySCF's B3LYP E(κ) ----------------
def test_reference_targets_shapes_and_energy(b3lyp_hf, b3lyp_targets):
    di = b3lyp_targets
    nocc = int((b3lyp_hf.mo_occ > 0).sum())
    nvir = b3lyp_hf.mo_coeff.shape[1] - nocc
    assert di.kappa.shape == (2, nvir, nocc) and di.probes.shape == (2, 2, nvir, nocc) and di.hvp.shape == (2, 2, nvir, nocc)
    assert not np.any(di.kappa[0])
    np.testing.assert_allclose(np.linalg.norm(di.kappa[1]), 0.05, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(di.probes, axis=(2, 3)), 1.0, rtol=1e-12)
    assert abs(di.energy_Eh[0] - b3lyp_hf.e_tot) < 1e-9
    assert np.abs(di.gradient[0]).max() < 1e-6  # converged: no occupied-virtual Fock block
    assert np.abs(di.gradient[1]).max() > 1e-2  # perturbed point is not stationary
    again = compute_di_targets(b3lyp_hf, di.settings, key="HF")  # seeded: reproducible
    np.testing.assert_array_equal(again.kappa, di.kappa)
    np.testing.assert_array_equal(again.probes, di.probes)


@pytest.mark.parametrize("sample", [0, 1], ids=["stationary", "perturbed"])
def test_reference_gradient_and_hvp_match_finite_differences(b3lyp_hf, b3lyp_targets, sample):
    mf, di = b3lyp_hf, b3lyp_targets
    nocc = di.nocc
    Cs = di.orbitals(mf.mo_coeff, sample)

    def energy(kappa):
        C = rotate_np(Cs, nocc, kappa)
        return mf.energy_tot(dm=2 * C[:, :nocc] @ C[:, :nocc].T)

    for k in range(di.nprobes):
        v = di.probes[sample, k]
        d1 = _fd1(lambda t: energy(t * v), 1e-3)
        d2 = _fd2(lambda t: energy(t * v), di.energy_Eh[sample], 2e-3)
        assert abs(d1 - np.sum(di.gradient[sample] * v)) < 1e-7
        assert abs(d2 - np.sum(di.hvp[sample, k] * v)) < 1e-5 * abs(d2)
    # the whole H·v vector: finite difference of the gradient along v
    v = di.probes[sample, 0]
    none = np.zeros((0,) + v.shape)
    gp = lambda t: point_quantities(mf, rotate_np(Cs, nocc, t * v), mf.mo_occ, none)[1]  # noqa: E731
    fd = _fd1(gp, 1e-3)
    assert np.abs(fd - di.hvp[sample, 0]).max() < 1e-6 * np.abs(di.hvp[sample, 0]).max()


# -- (b) model side: own finite differences, and the same numbers as PySCF -----------------
@pytest.fixture(scope="module")
def pbe_hf():
    mol = _mol(HF_ATOM)
    mf = dft.RKS(mol, xc="pbe")
    mf.grids.level = 3
    mf.conv_tol = 1e-10
    mf.verbose = 0
    mf.kernel()
    return mf, build_setup(mol), TorchFunctional(PBE())


@pytest.mark.parametrize("perturbed", [False, True], ids=["stationary", "perturbed"])
def test_model_gradient_and_hvp_match_own_finite_differences(pbe_hf, perturbed):
    mf, setup, fn = pbe_hf
    nocc = setup.nocc
    C = torch.tensor(mf.mo_coeff)
    nvir = C.shape[1] - nocc
    rng = np.random.default_rng(7)
    if perturbed:
        k0 = rng.standard_normal((nvir, nocc))
        C = rotate(C, nocc, torch.tensor(0.05 * k0 / np.linalg.norm(k0)))
    probes = rng.standard_normal((2, nvir, nocc))
    probes = torch.tensor(probes / np.linalg.norm(probes, axis=(1, 2), keepdims=True))
    E, g, Hv = energy_gradient_hvp(fn, setup, C, nocc, probes)
    assert g.shape == (nvir, nocc) and Hv.shape == (2, nvir, nocc)
    assert abs(float(E) - mf.energy_tot(dm=2 * C[:, :nocc].numpy() @ C[:, :nocc].numpy().T)) < 1e-8
    for k in range(2):
        v = probes[k]
        e = lambda t: float(energy_at(fn, setup, C, nocc, t * v))  # noqa: E731
        assert abs(_fd1(e, 1e-3) - float((g * v).sum())) < 1e-7
        d2 = _fd2(e, float(E), 2e-3)
        assert abs(d2 - float((Hv[k] * v).sum())) < 1e-5 * abs(d2)
    gv = lambda t: energy_gradient_hvp(fn, setup, rotate(C, nocc, t * probes[0]), nocc, probes[:1])[1]  # noqa: E731
    fd = _fd1(gv, 1e-3)
    assert float((fd - Hv[0]).abs().max()) < 1e-6 * float(Hv[0].abs().max())


@pytest.mark.parametrize("atom", ["HF", pytest.param("H2O", marks=pytest.mark.slow)])
def test_model_side_equals_pyscf_targets_with_pbe(pbe_hf, atom):
    """Same functional (PBE), grid and exact J on both sides: E, g and Hv agree to 1e-6,
    so the two sides use the same parametrisation."""
    if atom == "HF":
        mf, setup, fn = pbe_hf
    else:
        mol = _mol(H2O_ATOM)
        mf = dft.RKS(mol, xc="pbe")
        mf.grids.level, mf.conv_tol, mf.verbose = 3, 1e-10, 0
        mf.kernel()
        setup, fn = build_setup(mol), TorchFunctional(PBE())
    di = compute_di_targets(mf, DISettings(samples=2, sigma=0.05, probes=3, seed=1), key="HF")
    fixed_probe_check = None
    for s in range(di.nsamples):
        Cs = rotate(torch.tensor(mf.mo_coeff), di.nocc, torch.tensor(di.kappa[s]))
        probes = torch.tensor(di.probes[s])
        E, g, Hv = energy_gradient_hvp(fn, setup, Cs, di.nocc, probes)
        assert abs(float(E) - di.energy_Eh[s]) < 1e-6
        assert float((g - torch.tensor(di.gradient[s])).abs().max()) < 1e-6
        assert float((Hv - torch.tensor(di.hvp[s])).abs().max()) < 1e-6
        fixed_probe_check = (Cs, probes, E, g, Hv)
    Cs, probes, E, g, Hv = fixed_probe_check  # precomputed fixed terms give the same numbers
    E2, g2, Hv2 = energy_gradient_hvp(fn, setup, Cs, di.nocc, probes, fixed=fixed_terms(setup, Cs, di.nocc, probes))
    assert torch.equal(E, E2) and torch.equal(g, g2) and torch.equal(Hv, Hv2)


@pytest.mark.slow
def test_model_side_equals_pyscf_targets_with_tpss():
    """The meta-GGA path (``kin`` feature) against PySCF's TPSS response."""
    mol = _mol(HF_ATOM)
    mf = dft.RKS(mol, xc="tpss")
    mf.grids.level = 3
    mf.conv_tol = 1e-10
    mf.verbose = 0
    mf.kernel()
    di = compute_di_targets(mf, DISettings(samples=1, probes=2, seed=2), key="HF")
    setup, fn = build_setup(mol), TorchFunctional(TPSS())
    for s in range(di.nsamples):
        Cs = rotate(torch.tensor(mf.mo_coeff), di.nocc, torch.tensor(di.kappa[s]))
        E, g, Hv = energy_gradient_hvp(fn, setup, Cs, di.nocc, torch.tensor(di.probes[s]))
        assert abs(float(E) - di.energy_Eh[s]) < 1e-6
        assert float((g - torch.tensor(di.gradient[s])).abs().max()) < 1e-6
        assert float((Hv - torch.tensor(di.hvp[s])).abs().max()) < 1e-5


# -- (e) create_graph: parameter gradients through E, g and Hv ------------------------------
class _TinyGGA(torch.nn.Module):
    """Spin-scaled exchange with a PBE-like enhancement F(s²) = 1 + κ − κ/(1 + μ s²/κ);
    parameters a (scale), κ and μ enter non-linearly."""

    features = ["density", "grad", "grid_weights"]

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.kappa = torch.nn.Parameter(torch.tensor(0.804, dtype=torch.float64))
        self.mu = torch.nn.Parameter(torch.tensor(0.2195, dtype=torch.float64))

    def get_exc(self, features):
        rho = features["density"]  # (2, G)
        grad = features["grad"]  # (2, 3, G)
        ok = rho > 1e-10
        r = torch.where(ok, rho, torch.ones_like(rho))
        sig = (grad * grad).sum(-2)
        s2 = sig / (4 * (6 * np.pi**2) ** (2 / 3) * r ** (8 / 3))
        F = 1 + self.kappa - self.kappa / (1 + self.mu * s2 / self.kappa)
        ex = -0.75 * (6 / np.pi) ** (1 / 3) * r ** (4 / 3) * F
        return self.a * (torch.where(ok, ex, torch.zeros_like(ex)).sum(0) * features["grid_weights"]).sum()


def test_create_graph_parameter_gradients_match_finite_differences(pbe_hf):
    mf, setup, _ = pbe_hf
    model = _TinyGGA()
    fn = TorchFunctional(model)
    nocc = setup.nocc
    nvir = mf.mo_coeff.shape[1] - nocc
    rng = np.random.default_rng(11)
    k0 = rng.standard_normal((nvir, nocc))
    C = rotate(torch.tensor(mf.mo_coeff), nocc, torch.tensor(0.05 * k0 / np.linalg.norm(k0)))
    probes = rng.standard_normal((2, nvir, nocc))
    probes = torch.tensor(probes / np.linalg.norm(probes, axis=(1, 2), keepdims=True))
    fixed = fixed_terms(setup, C, nocc, probes)
    g_ref = torch.tensor(rng.standard_normal((nvir, nocc))) * 0.1
    hv_ref = torch.tensor(rng.standard_normal((2, nvir, nocc)))
    e_ref = float(energy_at(fn, setup, C, nocc)) + 0.01

    def loss(create_graph):
        E, g, Hv = energy_gradient_hvp(fn, setup, C, nocc, probes, create_graph=create_graph, fixed=fixed)
        return (E - e_ref) ** 2 + ((g - g_ref) ** 2).sum() + ((Hv - hv_ref) ** 2).sum()

    L = loss(True)
    assert L.requires_grad
    grads = torch.autograd.grad(L, [model.a, model.kappa, model.mu])
    h = 1e-5
    for p, gp in zip([model.a, model.kappa, model.mu], grads):
        with torch.no_grad():
            p += h
            lp = float(loss(False))
            p -= 2 * h
            lm = float(loss(False))
            p += h
        fd = (lp - lm) / (2 * h)
        assert abs(fd - float(gp)) < 1e-6 * max(1.0, abs(fd)), (fd, float(gp))
    # without create_graph nothing carries a graph
    E, g, Hv = energy_gradient_hvp(fn, setup, C, nocc, probes, fixed=fixed)
    assert not (E.requires_grad or g.requires_grad or Hv.requires_grad)


# -- (c) storage ----------------------------------------------------------------------------
def _copy_bundled_record(tmp_path, key="HF"):
    ref = ReferenceSet(pins.BUNDLED_REFERENCE_DIR)
    return ref.load(key), ref.path(ref.entry(key))


def test_record_without_di_writes_bundled_bytes(tmp_path):
    """No DI group: the writer still produces the bundled file byte for byte."""
    rec, path = _copy_bundled_record(tmp_path)
    assert rec.di is None
    out = tmp_path / "HF.h5"
    write_record(rec, out)
    assert out.read_bytes() == path.read_bytes()


def _folder_with(tmp_path, rec):
    from harness.io import sha256_file
    from harness.reference.build import _header
    from harness.reference.store import write_manifest

    root = tmp_path / "ref"
    (root / "geometries").mkdir(parents=True)
    path = root / "geometries" / f"{rec.key}.h5"
    write_record(rec, path)
    mol = rec.molecule
    entry = ManifestEntry(rec.key, rec.name, rec.conformer, rec.split, (), str(path.relative_to(root)),
                          sha256_file(path), mol.formula, len(mol.symbols), rec.nao)
    write_manifest(root, _header(ReferenceSettings(), "t", [entry], rec.di.settings), [entry])
    return root, path


def test_di_storage_roundtrip_and_corruption_detected(tmp_path, b3lyp_targets):
    rec, _ = _copy_bundled_record(tmp_path)
    rec.di = b3lyp_targets
    root, path = _folder_with(tmp_path, rec)
    refset = ReferenceSet(root)
    assert refset.header["di_settings"] == b3lyp_targets.settings.to_dict()
    back = refset.load(rec.key)
    assert isinstance(back.di, DITargets)
    for k in ("kappa", "energy_Eh", "gradient", "probes", "hvp"):
        np.testing.assert_array_equal(getattr(back.di, k), getattr(b3lyp_targets, k))
    assert back.di.settings == b3lyp_targets.settings and back.di.xc == "b3lyp"
    with h5py.File(path, "r") as f:
        assert f["di"].attrs["sigma"] == 0.05 and "expm" in f["di"].attrs["parametrisation"]
    # corrupt one DI number: the manifest checksum refuses the file
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    with h5py.File(bad / "geometries" / "HF.h5", "r+") as f:
        f["di/hvp"][0, 0, 0, 0] += 1e-6
    with pytest.raises(ReferenceDataError, match="checksum mismatch"):
        ReferenceSet(bad).load("HF")
    # a DI group that does not fit the orbitals is refused on read
    with h5py.File(bad / "geometries" / "HF.h5", "r+") as f:
        del f["di/gradient"]
        f["di"].create_dataset("gradient", data=np.zeros((2, 3, 3)))
    with pytest.raises(ReferenceDataError):
        read_record(bad / "geometries" / "HF.h5")


@pytest.mark.slow
def test_build_computes_di_for_train_only(tmp_path):
    from harness.molecules import read_xyz_folder
    from harness.reference.build import build_reference, plan_geometries

    d = tmp_path / "xyz"
    d.mkdir()
    (d / "HF.xyz").write_text("2\n0 1\nH 0 0 0\nF 0 0 0.917\n")  # a train molecule
    (d / "H2O2.xyz").write_text("4\n0 1\nO 0 0.734 -0.053\nO 0 -0.734 -0.053\nH 0.839 0.880 0.422\nH -0.839 -0.880 0.422\n")
    settings = ReferenceSettings(conformers=0)
    planned = plan_geometries(read_xyz_folder(d), settings, di=True)
    assert {p.key: p.di for p in planned} == {"HF": True, "H2O2": False}  # H2O2 is a test molecule
    planned = [p for p in planned if p.key == "HF"]
    report = build_reference(tmp_path / "ref", planned, settings, progress=False,
                             di_settings=DISettings(samples=1, probes=1))
    assert report.ok, report.failed
    rec = ReferenceSet(tmp_path / "ref").load("HF")
    assert rec.di is not None and rec.di.nsamples == 2 and rec.di.nprobes == 1
    assert abs(rec.di.energy_Eh[0] - rec.energy_Eh) < 1e-8
    # a rerun without DI keeps the file; other DI settings are refused
    plain = [p for p in plan_geometries(read_xyz_folder(d), settings) if p.key == "HF"]
    again = build_reference(tmp_path / "ref", plain, settings, progress=False)
    assert again.computed == []
    with pytest.raises(ReferenceDataError, match="DI settings"):
        build_reference(tmp_path / "ref", planned, settings, progress=False, di_settings=DISettings(samples=3))
