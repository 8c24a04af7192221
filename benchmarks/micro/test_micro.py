"""pytest-benchmark micro-benchmarks of the XC hot path (outside tests/: the normal test
run, whose testpaths is ["tests"], does not collect them).

One molecule (default ethanol, CH3CH2OH; override with XC_MICRO_MOLECULE=H2O etc.),
def2-SVP, grid level 3, at the converged torch-PBE density (computed once per session).

    pytest benchmarks/micro --benchmark-save=baseline
    pytest benchmarks/micro --benchmark-compare=0001 --benchmark-compare-fail=mean:10%

Saved runs go to .benchmarks/ (git-ignored), numbered 0001, 0002, ... per machine.
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.features import build_features, contract_features
from harness.functionals import TORCH_FUNCTIONALS
from harness.integrals import build_setup
from harness.molecules import resolve_molecule
from harness.scf import run_scf
from harness.xc import XCEngine

MOLECULE = os.environ.get("XC_MICRO_MOLECULE", "CH3CH2OH")


@pytest.fixture(scope="session")
def ground():
    """(setup, SCF result, torch PBE) of MOLECULE."""
    setup = build_setup(resolve_molecule(MOLECULE))
    fn = TORCH_FUNCTIONALS["pbe"]()
    res = run_scf(fn, setup, exact_j=False)
    assert res.converged
    return setup, res, fn


@pytest.fixture(scope="session")
def c_occ(ground):
    setup, res, _ = ground
    return res.mo_coeff[:, : setup.nocc].contiguous()


@pytest.fixture(scope="session")
def pbe_inputs(ground):
    """The standard feature dict at the converged P, split into the differentiated ones
    (density, grad: what PBE depends on) and the rest (kin and the static features; the
    jax adapter requires every standard feature, the torch module ignores the extra ones)."""
    setup, res, _ = ground
    feats = {k: v.detach() for k, v in build_features(setup, res.dm).items()}
    rest = {"kin": feats.pop("kin"), **setup.static_features()}
    return feats, rest


def _exc_and_grad(fn, feats, static):
    leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    e = fn.get_exc({**leaves, **static})
    grads = torch.autograd.grad(e, list(leaves.values()))
    return e, dict(zip(leaves, grads))


@pytest.mark.benchmark(group="features")
@pytest.mark.parametrize("path", ["C_occ", "P"])
def test_build_features(benchmark, ground, c_occ, path):
    """All density features (density, grad, kin); orbital route (SCF) or general-P route."""
    setup, res, _ = ground
    kw = {"C_occ": c_occ} if path == "C_occ" else {}
    feats = benchmark(build_features, setup, res.dm, **kw)
    assert feats["density"].shape[-1] == setup.ngrid


@pytest.mark.benchmark(group="xc-build")
@pytest.mark.parametrize("path", ["C_occ", "P"])
def test_exc_vxc(benchmark, ground, c_occ, path):
    """One SCF iteration's XC build: features + PBE + autograd + contraction."""
    setup, res, fn = ground
    eng = XCEngine(fn, setup)
    kw = {"C_occ": c_occ} if path == "C_occ" else {}
    e, V = benchmark(eng.exc_vxc, res.dm, **kw)
    assert V.shape == (setup.nao, setup.nao)


@pytest.mark.benchmark(group="xc-build")
def test_contract_features(benchmark, ground, pbe_inputs):
    """∂E/∂features (PBE at the converged density) → V_xc."""
    setup, _, fn = ground
    _, dE = _exc_and_grad(fn, *pbe_inputs)
    V = benchmark(contract_features, setup, dE)
    assert V.shape == (setup.nao, setup.nao)


@pytest.fixture(scope="session")
def functionals():
    out = {"torch": TORCH_FUNCTIONALS["pbe"]()}
    try:
        from harness.adapter import as_functional
        from harness.functionals.jax_classic import make_pbe

        out["jax"] = as_functional(make_pbe(), name="pbe-jax")
    except ImportError:  # jax is an optional dependency
        pass
    return out


@pytest.mark.benchmark(group="functional-call")
@pytest.mark.parametrize("impl", ["torch", "jax"])
def test_functional_exc_and_grad(benchmark, functionals, pbe_inputs, impl):
    """PBE energy + ∂E/∂features: torch module vs the jax PBE behind the adapter."""
    if impl not in functionals:
        pytest.skip("jax is not installed")
    fn = functionals[impl]
    _exc_and_grad(fn, *pbe_inputs)  # jit compilation / first-call initialisation
    e, dE = benchmark(_exc_and_grad, fn, *pbe_inputs)
    assert set(dE) == {"density", "grad"}


@pytest.mark.benchmark(group="tddft")
def test_davidson_matvec(benchmark, ground, c_occ):
    """One block of 5 response products of the TDDFT Davidson (as in harness.tddft):
    δP from 5 trial vectors, DF-J + XC kernel (double backward) + projection."""
    tddft = pytest.importorskip("harness.tddft")
    if not hasattr(tddft, "XCKernel"):
        pytest.skip("harness.tddft.XCKernel is gone")
    setup, res, fn = ground
    nocc = setup.nocc
    Co, Cv = res.mo_coeff[:, :nocc], res.mo_coeff[:, nocc:]
    kernel = tddft.XCKernel(fn, setup, 2.0 * Co @ Co.T, batched=False)
    x = torch.randn(5, Cv.shape[1], nocc, dtype=Co.dtype, generator=torch.Generator().manual_seed(0))

    def response():
        T = Cv @ x @ Co.T
        dP = T + T.transpose(-1, -2)
        dF = setup.coulomb_df(dP) + kernel.apply(dP)
        return Cv.T @ dF @ Co

    out = benchmark(response)
    assert out.shape == x.shape
