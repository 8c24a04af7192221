"""harness.adapter: validation of torch functionals, and the jax<->torch autograd bridge."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.adapter import JaxFunctional, TorchFunctional, as_functional
from harness.contract import STANDARD_FEATURES, FunctionalError

DTYPE = torch.float64
DIFF = ("density", "grad", "kin")


def make_features(G: int = 300, seed: int = 0, requires_grad: bool = True) -> dict[str, torch.Tensor]:
    """Physically sensible random features: positive spin densities, |∇ρ| ~ ρ, τ > 0."""
    g = torch.Generator().manual_seed(seed)
    rho = torch.rand(2, G, generator=g, dtype=DTYPE) * 0.5 + 0.01
    grad = (torch.rand(2, 3, G, generator=g, dtype=DTYPE) - 0.5) * rho[:, None]
    kin = torch.rand(2, G, generator=g, dtype=DTYPE) * 0.3 + 0.01
    feats = {
        "density": rho,
        "grad": grad,
        "kin": kin,
        "grid_coords": torch.randn(G, 3, generator=g, dtype=DTYPE),
        "grid_weights": torch.rand(G, generator=g, dtype=DTYPE) * 0.1,
        "atomic_coords": torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.4]], dtype=DTYPE),
        "atomic_numbers": torch.tensor([1, 1], dtype=torch.int64),
    }
    if requires_grad:
        for n in DIFF:
            feats[n].requires_grad_(True)
    return feats


# --------------------------------------------------------------------------------------
# A Skala-style torch module: plain nn.Module, nothing inherited from the harness.
# Toy meta-GGA: spin-scaled PBE exchange + a smooth τ term (exercises all three inputs).
# --------------------------------------------------------------------------------------

CX = -0.75 * (3.0 / math.pi) ** (1.0 / 3.0)
KAPPA, MU = 0.804, 0.2195149727645171
S2_DEN = 4.0 * (3.0 * math.pi**2) ** (2.0 / 3.0)


class ToyMGGA(nn.Module):
    features = ["density", "grad", "kin", "grid_weights"]

    def __init__(self):
        super().__init__()
        self.c_tau = nn.Parameter(torch.tensor(0.01, dtype=DTYPE))

    def get_exc(self, features):
        rho, grad, tau, w = (features[n] for n in self.features)
        r2 = 2.0 * rho
        s2 = torch.sum((2.0 * grad) ** 2, dim=1) / (S2_DEN * r2 ** (8.0 / 3.0))
        fx = 1.0 + KAPPA - KAPPA / (1.0 + MU * s2 / KAPPA)
        e = 0.5 * CX * r2 ** (4.0 / 3.0) * fx + self.c_tau * tau * rho ** (1.0 / 3.0)
        return torch.sum(w * e.sum(dim=0))


def jax_toy_mgga(params, f):
    import jax.numpy as jnp

    rho, grad, tau, w = f["density"], f["grad"], f["kin"], f["grid_weights"]
    r2 = 2.0 * rho
    s2 = jnp.sum((2.0 * grad) ** 2, axis=1) / (S2_DEN * r2 ** (8.0 / 3.0))
    fx = 1.0 + params["kappa"] - params["kappa"] / (1.0 + params["mu"] * s2 / params["kappa"])
    e = 0.5 * CX * r2 ** (4.0 / 3.0) * fx + params["c_tau"] * tau * rho ** (1.0 / 3.0)
    # touch the int feature so the standard set (with atomic_numbers) goes through jit
    return jnp.sum(w * e.sum(axis=0)) + 0.0 * jnp.sum(f["atomic_numbers"])


JAX_PARAMS = {"kappa": KAPPA, "mu": MU, "c_tau": 0.01}


class Bad(nn.Module):
    """Returns whatever it is told to."""

    features = ["density"]

    def __init__(self, result=None, exc=None):
        super().__init__()
        self.result, self.exc = result, exc

    def get_exc(self, features):
        if self.exc is not None:
            raise self.exc
        return self.result


# ======================================================================================
# TorchFunctional
# ======================================================================================


def test_skala_style_module_runs_unchanged():
    module = ToyMGGA()
    fn = TorchFunctional(module, name="toy")
    feats = make_features()
    E = fn.get_exc(feats)
    assert E.dim() == 0 and E.dtype == DTYPE
    assert torch.equal(E, module.get_exc(feats))
    g = torch.autograd.grad(E, [feats[n] for n in DIFF])
    assert all(torch.isfinite(x).all() for x in g)
    assert fn.features == ToyMGGA.features
    assert fn.name == "toy"
    assert [p for p in fn.parameters()] == [module.c_tau]
    assert TorchFunctional(ToyMGGA()).name == "ToyMGGA"


@pytest.mark.parametrize(
    "result, problem",
    [
        (torch.tensor(float("nan"), dtype=DTYPE), "returned NaN"),
        (torch.tensor(float("inf"), dtype=DTYPE), "returned inf"),
        (torch.tensor(float("-inf"), dtype=DTYPE), "returned -inf"),
        (torch.zeros(2, dtype=DTYPE), "returned shape (2,)"),
        (torch.tensor(3, dtype=torch.int64), "returned dtype torch.int64"),
        (1.5, "returned float"),
    ],
)
def test_validation_errors_name_functional_molecule_problem(result, problem):
    fn = TorchFunctional(Bad(result), name="badnet")
    fn.molecule = "H2O"
    with pytest.raises(FunctionalError) as info:
        fn.get_exc(make_features())
    msg = str(info.value)
    assert "badnet" in msg and "H2O" in msg and problem in msg


def test_exception_inside_module_is_chained():
    fn = TorchFunctional(Bad(exc=ValueError("density too small")), name="badnet")
    with pytest.raises(FunctionalError) as info:
        fn.get_exc(make_features(), molecule="CH4")
    msg = str(info.value)
    assert "badnet" in msg and "CH4" in msg and "raised ValueError: density too small" in msg
    assert isinstance(info.value.__cause__, ValueError)


def test_molecule_context_kwarg_attribute_and_on():
    fn = TorchFunctional(Bad(torch.tensor(float("nan"))), name="n")
    feats = make_features(requires_grad=False)
    with pytest.raises(FunctionalError, match="unnamed molecule"):
        fn.get_exc(feats)
    with fn.on("NH3"):
        with pytest.raises(FunctionalError, match="'NH3'"):
            fn.get_exc(feats)
        with pytest.raises(FunctionalError, match="'HF'"):  # kwarg wins over the attribute
            fn.get_exc(feats, molecule="HF")
    assert fn.molecule is None


def test_scalar_shapes_accepted_and_squeezed():
    fn = TorchFunctional(Bad(torch.ones(1, 1, dtype=DTYPE)), name="x")
    E = fn.get_exc(make_features())
    assert E.shape == () and E.item() == 1.0


def test_bad_declarations():
    class NoFeatures(nn.Module):
        def get_exc(self, f):
            return f["density"].sum()

    class Unknown(NoFeatures):
        features = ["density", "laplacian"]

    with pytest.raises(FunctionalError, match="features"):
        TorchFunctional(NoFeatures(), name="nf")
    with pytest.raises(FunctionalError, match="laplacian"):
        TorchFunctional(Unknown(), name="uk")
    with pytest.raises(TypeError, match="get_exc"):
        TorchFunctional(nn.Linear(2, 2))


def test_to_passthrough():
    fn = TorchFunctional(ToyMGGA(), name="toy")
    assert fn.to(torch.float32) is fn
    assert fn.module.c_tau.dtype == torch.float32
    fn.to("cpu", torch.float64)
    assert fn.module.c_tau.dtype == torch.float64


def test_as_functional_dispatch():
    fn = as_functional(ToyMGGA(), name="toy")
    assert isinstance(fn, TorchFunctional) and fn.name == "toy"
    assert as_functional(fn) is fn
    with pytest.raises(TypeError, match="cannot adapt"):
        as_functional(42)
    with pytest.raises(TypeError, match="cannot adapt"):
        as_functional((1, 2))


# ======================================================================================
# JaxFunctional
# ======================================================================================


@pytest.fixture(scope="module")
def jf():
    pytest.importorskip("jax")
    return JaxFunctional(jax_toy_mgga, JAX_PARAMS, name="toy-jax")


def _x(feats):
    return [feats[n] for n in DIFF]


def test_jax_value_and_gradient_match_torch(jf):
    assert jf.features == list(STANDARD_FEATURES)
    feats = make_features(seed=1)
    E = jf.get_exc(feats)
    Et = ToyMGGA().get_exc(feats)
    assert E.dim() == 0 and E.dtype == DTYPE
    assert abs(E.item() - Et.item()) <= 1e-12 * max(1.0, abs(Et.item()))
    g = torch.autograd.grad(E, _x(feats))
    gt = torch.autograd.grad(Et, _x(feats))
    for a, b in zip(g, gt):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert jf.transfer_mode == "dlpack"


def test_jax_hvp_double_backward_matches_torch_and_finite_difference(jf):
    feats = make_features(seed=2)
    x = _x(feats)
    g = torch.autograd.grad(jf.get_exc(feats), x, create_graph=True)
    gt = torch.autograd.grad(ToyMGGA().get_exc(feats), x, create_graph=True)
    gen = torch.Generator().manual_seed(5)
    v = [torch.randn(t.shape, generator=gen, dtype=DTYPE) * t.detach() for t in x]
    hv = torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True)
    hvt = torch.autograd.grad(gt, x, grad_outputs=v)
    for a, b in zip(hv, hvt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)

    # central finite difference of the (bridged) gradient along v: (g(x+hv) - g(x-hv)) / 2h
    h = 1e-5

    def grad_at(sign):
        shifted = dict(feats)
        for n, t, d in zip(DIFF, x, v):
            shifted[n] = (t.detach() + sign * h * d).requires_grad_(True)
        return torch.autograd.grad(jf.get_exc(shifted), [shifted[n] for n in DIFF])

    for a, gp, gm in zip(hv, grad_at(+1), grad_at(-1)):
        fd = (gp - gm) / (2 * h)
        scale = a.abs().max().item()
        assert (fd - a).abs().max().item() <= 1e-6 * scale

    # gradients w.r.t. only some outputs (the others' cotangents are zero)
    hv_d = torch.autograd.grad(g[0], x, grad_outputs=v[0], retain_graph=True)
    gt2 = torch.autograd.grad(ToyMGGA().get_exc(feats), x, create_graph=True)
    hv_dt = torch.autograd.grad(gt2[0], x, grad_outputs=v[0])
    for a, b in zip(hv_d, hv_dt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_jax_batched_hvp_and_repeated_calls_reuse_jit(jf):
    feats = make_features(G=257, seed=3)
    x = _x(feats)
    jf.get_exc(feats)  # warm up this shape (no-grad path is a different jit: fine)
    g = torch.autograd.grad(jf.get_exc(feats), x, create_graph=True)
    gt = torch.autograd.grad(ToyMGGA().get_exc(feats), x, create_graph=True)
    B = 3
    gen = torch.Generator().manual_seed(7)
    V = [torch.randn((B,) + tuple(t.shape), generator=gen, dtype=DTYPE) for t in x]
    hb = torch.autograd.grad(g, x, grad_outputs=V, is_grads_batched=True, retain_graph=True)
    hbt = torch.autograd.grad(gt, x, grad_outputs=V, is_grads_batched=True)
    for a, b in zip(hb, hbt):
        assert a.shape[0] == B
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # torch.func.vmap over the second autograd.grad gives the same
    hf = torch.func.vmap(lambda *v: torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True))(*V)
    for a, b in zip(hf, hbt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # the batched result equals a loop of single HVPs
    for k in range(B):
        hk = torch.autograd.grad(g, x, grad_outputs=[t[k] for t in V], retain_graph=True)
        for a, b in zip(hk, hb):
            torch.testing.assert_close(a, b[k], rtol=0, atol=1e-12)

    # second molecule of the same size: new values, no new trace (value+grad and HVP)
    n0 = jf.n_traces
    feats2 = make_features(G=257, seed=4)
    x2 = _x(feats2)
    E2 = jf.get_exc(feats2, molecule="second")
    g2 = torch.autograd.grad(E2, x2, create_graph=True)
    torch.autograd.grad(g2, x2, grad_outputs=[t[0] for t in V])
    assert jf.n_traces == n0
    assert abs(E2.item() - ToyMGGA().get_exc(feats2).item()) < 1e-12 * abs(E2.item())
    # another grid size in the same bucket (padded to 2048 points): no new trace either
    feats3 = make_features(G=100, seed=6)
    x3 = _x(feats3)
    g3 = torch.autograd.grad(jf.get_exc(feats3), x3, create_graph=True)
    torch.autograd.grad(g3, x3, grad_outputs=[torch.ones_like(t) for t in x3])
    assert jf.n_traces == n0
    assert all(t.shape == u.shape for t, u in zip(g3, x3))  # derivatives cut back to the real points
    jf.get_exc(make_features(G=100))  # energy only: its own jitted function, traced once
    n0 = jf.n_traces
    # a grid size in another bucket compiles once more, then is cached too
    jf.get_exc(make_features(G=2700))  # bucket 3008
    n1 = jf.n_traces
    assert n1 > n0
    jf.get_exc(make_features(G=2950, seed=9))
    assert jf.n_traces == n1


def test_jax_no_grad_and_declared_features():
    pytest.importorskip("jax")

    def lda_x(params, f):
        return CX * 2 ** (1 / 3) * (f["grid_weights"] * (f["density"] ** (4 / 3)).sum(axis=0)).sum()

    fn = JaxFunctional(lda_x, None, features=["density", "grid_weights"], name="lda-x")
    feats = make_features(requires_grad=False)
    E = fn.get_exc(feats)
    assert not E.requires_grad
    expected = CX * 2 ** (1 / 3) * (feats["grid_weights"] * (feats["density"] ** (4 / 3)).sum(0)).sum()
    assert abs(E.item() - expected.item()) < 1e-12 * abs(expected.item())
    with torch.no_grad():
        assert not fn.get_exc(make_features()).requires_grad
    # only the declared features are read: others may be absent
    E2 = fn.get_exc({"density": feats["density"], "grid_weights": feats["grid_weights"]})
    assert E2.item() == E.item()
    with pytest.raises(FunctionalError, match="missing feature"):
        fn.get_exc({"density": feats["density"]}, molecule="H2")


def test_jax_errors_are_functional_errors():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def nan_exc(params, f):
        return jnp.sum(jnp.log(-f["density"]))

    def raising(params, f):
        raise ValueError("bad params")

    def vector(params, f):
        return f["density"].sum(axis=1)

    feats = make_features()
    for exc, problem in [(nan_exc, "returned NaN"), (raising, "raised ValueError: bad params"), (vector, "raised")]:
        fn = JaxFunctional(exc, None, features=["density"], name="jbad")
        with pytest.raises(FunctionalError) as info:
            fn.get_exc(feats, molecule="LiH")
        msg = str(info.value)
        assert "jbad" in msg and "LiH" in msg and problem in msg
    fn = JaxFunctional(vector, None, features=["density"], name="jvec")
    with pytest.raises(FunctionalError, match=r"returned shape \(2,\)"):
        fn.get_exc(make_features(requires_grad=False))


def test_as_functional_jax_tuple():
    pytest.importorskip("jax")
    fn = as_functional((jax_toy_mgga, JAX_PARAMS), name="tj")
    assert isinstance(fn, JaxFunctional) and fn.name == "tj"
    assert list(fn.parameters()) == [] and fn.to("cpu", torch.float64) is fn


# --------------------------------------------------------------------------------------
# bundled classic functionals: jax PBE through the bridge == torch PBE
# --------------------------------------------------------------------------------------


def test_jax_pbe_bridge_matches_torch_pbe():
    pytest.importorskip("jax")
    jc = pytest.importorskip("harness.functionals.jax_classic")
    from harness.functionals import PBE

    exc, params = jc.make_pbe()
    fn = JaxFunctional(exc, params, name="pbe-jax")
    tfn = TorchFunctional(PBE(), name="pbe")
    feats = make_features(seed=11)
    x = _x(feats)[:2]
    E, Et = fn.get_exc(feats), tfn.get_exc(feats)
    assert abs(E.item() - Et.item()) <= 1e-12 * max(1.0, abs(Et.item()))
    g = torch.autograd.grad(E, x, create_graph=True)
    gt = torch.autograd.grad(Et, x, create_graph=True)
    for a, b in zip(g, gt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    v = [torch.randn_like(t) * t.detach() for t in x]
    for a, b in zip(torch.autograd.grad(g, x, v), torch.autograd.grad(gt, x, v)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_numpy_fallback_when_dlpack_fails(monkeypatch):
    jax = pytest.importorskip("jax")
    fn = JaxFunctional(jax_toy_mgga, JAX_PARAMS, name="fallback")
    feats = make_features(G=64, seed=12)
    expected = fn.get_exc(feats).item()

    def broken(*args, **kwargs):
        raise TypeError("no dlpack today")

    monkeypatch.setattr(jax.dlpack, "from_dlpack", broken)
    monkeypatch.setattr(torch.utils.dlpack, "from_dlpack", broken)
    with pytest.warns(RuntimeWarning, match="falling back to numpy"):
        E = fn.get_exc(feats)
    g = torch.autograd.grad(E, _x(feats))
    assert E.item() == expected and g[0].dtype == DTYPE
    assert fn.transfer_mode.startswith("numpy-fallback")


def test_float32_inputs_stay_float32(jf):
    feats = make_features(G=64, seed=13, requires_grad=False)
    feats = {k: (v.float() if v.is_floating_point() else v) for k, v in feats.items()}
    for n in DIFF:
        feats[n].requires_grad_(True)
    E = jf.get_exc(feats)
    g = torch.autograd.grad(E, _x(feats))
    assert E.dtype == torch.float32 and all(t.dtype == torch.float32 for t in g)
