"""The four baseline architectures (harness.architectures, PROTOCOL §5).

For every architecture: the contract (finite float64 scalar, documented parameter counts),
exact equality with its physical base functional at initialisation (point by point and SCF
energy on H2O), invariance under rotations/translations/permutations and spin exchange,
numerical safety at vanishing density (finite first and second derivatives), a TDDFT run with
perturbed parameters, and parameter gradients (also of feature gradients, as trainers need).
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from harness.architectures import ARCHITECTURES, build_architecture, count_parameters
from harness.contract import check_feature_names
from harness.functionals import LDA, PBE, TPSS
from harness.integrals import build_setup
from harness.molecules import g2_molecule
from harness.scf import run_scf
from harness.tddft import tddft
from harness.xc import XCEngine

NAMES = sorted(ARCHITECTURES)
BASE_CLASSES = {"lda": LDA, "pbe": PBE, "tpss": TPSS}
_CACHE: dict = {}


@pytest.fixture(autouse=True)
def _one_thread():
    """2-core machine shared with other jobs: one torch thread is faster and polite."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def setup_h2o(level: int = 3):
    key = ("setup", level)
    if key not in _CACHE:
        _CACHE[key] = build_setup(g2_molecule("H2O"), grid_level=level)
    return _CACHE[key]


def base_scf(base: str):
    key = ("scf", base)
    if key not in _CACHE:
        res = run_scf(BASE_CLASSES[base](), setup_h2o())
        assert res.converged
        _CACHE[key] = res
    return _CACHE[key]


def h2o_features(level: int = 3) -> dict[str, torch.Tensor]:
    """All contract features of H2O at the minao guess density (detached)."""
    key = ("features", level)
    if key not in _CACHE:
        setup = setup_h2o(level)
        eng = XCEngine(TPSS(), setup)  # declares density, grad, kin
        feats = {k: v.detach() for k, v in eng.features_of(setup.dm_guess).items()}
        feats.update(setup.static_features())
        _CACHE[key] = feats
    return dict(_CACHE[key])


def perturbed(name: str, scale: float, seed: int = 1, preset: str = "quick"):
    model = build_architecture(name, preset)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def select(model, feats):
    return {n: feats[n] for n in model.features}


# --------------------------------------------------------------------------------------
# registry and contract
# --------------------------------------------------------------------------------------


def test_registry():
    assert set(ARCHITECTURES) == {"xcdiff", "nagai", "nlmp", "egxc"}
    with pytest.raises(KeyError):
        build_architecture("nope")
    with pytest.raises(KeyError):
        build_architecture("xcdiff", preset="huge")
    # deterministic in the seed, and the global RNG is left alone
    state = torch.random.get_rng_state()
    a, b, c = (build_architecture("egxc", seed=s) for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.reshape(-1) for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.name == "egxc-quick" and a.arch == "egxc" and a.preset == "quick" and a.seed == 3


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.parametrize("name", NAMES)
def test_contract_and_parameter_count(name, preset):
    model = build_architecture(name, preset)
    cls = ARCHITECTURES[name]
    n = count_parameters(model)
    assert n == cls.N_PARAMS[preset]
    # the documented figure is the real one (module docstring and package table)
    doc = importlib.import_module(cls.__module__).__doc__
    assert f"**{n:,}**" in doc
    assert f"{n:,}" in importlib.import_module("harness.architectures").__doc__
    if preset == "quick":
        assert 300 <= n <= 5000
    else:
        assert n > 5 * cls.N_PARAMS["quick"]
    check_feature_names(model.features, name)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    E = model.get_exc(select(model, h2o_features()))
    assert isinstance(E, torch.Tensor) and E.dim() == 0 and E.dtype == torch.float64
    E = E.detach()
    assert math.isfinite(float(E)) and -20.0 < float(E) < -1.0
    assert torch.equal(model(select(model, h2o_features())), E)


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.parametrize("name", NAMES)
def test_init_equals_base_pointwise(name, preset):
    """Zero-initialised last layers: e_xc(r) is the base functional's at every grid point."""
    model = build_architecture(name, preset)
    feats = h2o_features()
    base = BASE_CLASSES[model.base]()
    with torch.no_grad():
        e = model.get_exc_density(select(model, feats))
        e0 = base.get_exc_density(feats)
    assert torch.allclose(e, e0, rtol=1e-13, atol=1e-300)


# --------------------------------------------------------------------------------------
# SCF at initialisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_init_scf_equals_base(name):
    model = build_architecture(name)
    ref = base_scf(model.base)
    res = run_scf(model, setup_h2o())
    assert res.converged
    print(f"\n{name}: E={res.energy_Eh:.10f} base {model.base} E={ref.energy_Eh:.10f} "
          f"diff={res.energy_Eh - ref.energy_Eh:.1e} iterations={res.iterations}")
    assert abs(res.energy_Eh - ref.energy_Eh) < 1e-8


# --------------------------------------------------------------------------------------
# symmetry
# --------------------------------------------------------------------------------------


def _random_orthogonal(seed: int, proper: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))
    if (torch.linalg.det(Q) > 0) != proper:
        Q = Q.clone()
        Q[:, 0] = -Q[:, 0]
    return Q


def _transformed(feats, Q, t, atom_perm, grid_perm):
    out = dict(feats)
    out["grid_coords"] = (feats["grid_coords"] @ Q.T + t)[grid_perm]
    out["grid_weights"] = feats["grid_weights"][grid_perm]
    out["density"] = feats["density"][:, grid_perm]
    out["kin"] = feats["kin"][:, grid_perm]
    out["grad"] = torch.einsum("ij,sjg->sig", Q, feats["grad"])[:, :, grid_perm]
    out["atomic_coords"] = (feats["atomic_coords"] @ Q.T + t)[atom_perm]
    out["atomic_numbers"] = feats["atomic_numbers"][atom_perm]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_rotation_translation_permutation_invariance(name):
    """E_xc at a fixed density is unchanged when the molecule, its grid and the density
    (gradients rotate as vectors) are rotated/reflected and translated, and atoms and grid
    points are reordered. Parameters are perturbed so this is not just the base functional."""
    model = perturbed(name, 0.05)
    feats = h2o_features()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        E = model.get_exc(select(model, feats))
        E_base = BASE_CLASSES[model.base]().get_exc(feats)
        assert abs(float(E - E_base)) > 1e-4  # the perturbation matters
        for k, proper in enumerate([True, True, False]):
            Q = _random_orthogonal(11 + k, proper)
            t = torch.randn(3, generator=g, dtype=torch.float64) * 3.0
            atom_perm = torch.randperm(feats["atomic_coords"].shape[0], generator=g)
            grid_perm = torch.randperm(feats["grid_weights"].shape[0], generator=g)
            E2 = model.get_exc(select(model, _transformed(feats, Q, t, atom_perm, grid_perm)))
            assert abs(float(E2 - E)) <= 1e-10 * abs(float(E)), (k, float(E2 - E))


@pytest.mark.parametrize("name", NAMES)
def test_spin_exchange_symmetry(name):
    """A spin-polarised density and its alpha<->beta mirror give the same E_xc."""
    model = perturbed(name, 0.05)
    feats = h2o_features()
    pol = dict(feats)
    pol["density"] = feats["density"] * torch.tensor([[1.3], [0.7]], dtype=torch.float64)
    pol["grad"] = feats["grad"] * torch.tensor([1.3, 0.7], dtype=torch.float64)[:, None, None]
    pol["kin"] = feats["kin"] * torch.tensor([[1.2], [0.8]], dtype=torch.float64)
    swap = dict(pol)
    for k in ("density", "grad", "kin"):
        swap[k] = pol[k].flip(0)
    with torch.no_grad():
        E1 = model.get_exc(select(model, pol))
        E2 = model.get_exc(select(model, swap))
    assert math.isfinite(float(E1))
    assert abs(float(E1 - E2)) <= 1e-12 * abs(float(E1))


# --------------------------------------------------------------------------------------
# numerical safety and derivatives
# --------------------------------------------------------------------------------------


def _sparse_features_with_vacuum():
    """Every 97th H2O grid point, with some points set to zero / tiny density and gradient."""
    feats = h2o_features()
    idx = torch.arange(0, feats["grid_weights"].shape[0], 97)
    f = {k: feats[k] for k in ("atomic_coords", "atomic_numbers")}
    f["grid_coords"] = feats["grid_coords"][idx]
    f["grid_weights"] = feats["grid_weights"][idx]
    f["density"] = feats["density"][:, idx].clone()
    f["grad"] = feats["grad"][:, :, idx].clone()
    f["kin"] = feats["kin"][:, idx].clone()
    # exact zeros (everything), a tiny density with zero gradient and kin, a tiny one with a
    # relatively huge gradient, one spin channel empty
    f["density"][:, :5] = 0.0
    f["grad"][:, :, :5] = 0.0
    f["kin"][:, :5] = 0.0
    f["density"][:, 5:8] = 1e-20
    f["grad"][:, :, 5:8] = 0.0
    f["kin"][:, 5:8] = 0.0
    f["density"][:, 8:10] = 1e-17
    f["grad"][:, :, 8:10] = 1e-9
    f["kin"][:, 8:10] = 1e-12
    f["density"][1, 10:12] = 0.0
    f["grad"][1, :, 10:12] = 0.0
    f["kin"][1, 10:12] = 0.0
    return f


@pytest.mark.parametrize("name", NAMES)
def test_safe_at_vanishing_density(name):
    """Finite E, finite first derivatives and finite Hessian-vector products with zero and
    tiny densities on the grid (perturbed parameters)."""
    model = perturbed(name, 0.05)
    f = _sparse_features_with_vacuum()
    leaves = {k: f[k].clone().requires_grad_(True) for k in ("density", "grad", "kin")}
    call = {**f, **leaves}
    E = model.get_exc(select(model, call))
    assert math.isfinite(float(E.detach()))
    names = [k for k in leaves if k in model.features]
    grads = torch.autograd.grad(E, [leaves[k] for k in names], create_graph=True)
    for k, g in zip(names, grads):
        assert bool(torch.isfinite(g).all()), k
        if name in ("xcdiff", "nagai"):  # local: vacuum points do not contribute at all
            assert float(g[..., :5].abs().max()) == 0.0, k
    g_ = torch.Generator().manual_seed(3)
    vs = [torch.randn(g.shape, generator=g_, dtype=g.dtype) for g in grads]
    hv = torch.autograd.grad(grads, [leaves[k] for k in names], grad_outputs=vs, allow_unused=True)
    for k, h in zip(names, hv):
        assert h is None or bool(torch.isfinite(h).all()), k


@pytest.mark.parametrize("name", NAMES)
def test_parameter_gradients(name):
    """backward of get_exc reaches every parameter (finite), at initialisation and perturbed;
    so does the parameter gradient of a feature-gradient contraction (what a trainer uses
    for potential / Hessian-vector-product losses)."""
    f = _sparse_features_with_vacuum()
    for model in (build_architecture(name), perturbed(name, 0.05)):
        params = dict(model.named_parameters())
        E = model.get_exc(select(model, f))
        grads = torch.autograd.grad(E, list(params.values()), allow_unused=True)
        for (k, p), g in zip(params.items(), grads):
            assert g is not None, k
            assert bool(torch.isfinite(g).all()), k
        rho = f["density"].clone().requires_grad_(True)
        E = model.get_exc(select(model, {**f, "density": rho}))
        (gr,) = torch.autograd.grad(E, rho, create_graph=True)
        v = torch.linspace(-1.0, 1.0, rho.numel(), dtype=rho.dtype).reshape(rho.shape)
        mixed = torch.autograd.grad((gr * v).sum(), list(params.values()), allow_unused=True)
        assert all(g is None or bool(torch.isfinite(g).all()) for g in mixed)
        assert sum(g is not None for g in mixed) >= len(params) - 2
    # perturbed: the gradient is genuinely non-zero for the output layer
    assert any(float(g.abs().max()) > 0 for g in grads)


# --------------------------------------------------------------------------------------
# TDDFT with perturbed parameters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tddft_runs_with_perturbed_parameters(name):
    setup = setup_h2o(level=1)
    model = perturbed(name, 0.02)
    res = run_scf(model, setup)
    assert res.converged
    r = tddft(model, res, setup, nstates=2)
    e = r.excitation_energies_eV
    print(f"\n{name}: H2O excitations {e.tolist()} eV, iterations={r.iterations}, wall={r.wall_s:.1f}s")
    assert bool(r.converged.all())
    assert bool(torch.isfinite(e).all()) and bool((e > 1.0).all()) and bool((e < 30.0).all())
    assert bool(torch.isfinite(r.oscillator_strengths).all())
