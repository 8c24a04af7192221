"""Parameter gradients of the training losses (harness.losses) against central finite
differences that re-run the model SCF at θ ± h.

Tiny model: PBE with its exchange and correlation scaled by two parameters (a, b); tiny
molecule: H2O on a level-1 grid, references from the bundled tiny set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.functionals.torch_classic import pbe_c, pbe_x
from harness.losses import (
    DITargets,
    LossWeights,
    SolverOptions,
    conjugate_gradient,
    di_terms,
    ed_loss,
    prepare_geometry,
)
from harness.reference.store import ReferenceSet


class ScaledPBE(nn.Module):
    """E_xc = a E_x^PBE + b E_c^PBE (two parameters)."""

    features = ["density", "grad", "grid_weights"]

    def __init__(self, a: float = 1.0, b: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([a, b], dtype=torch.float64))

    def get_exc(self, f):
        w = f["grid_weights"]
        return self.scale[0] * (pbe_x(f) * w).sum() + self.scale[1] * (pbe_c(f) * w).sum()


TIGHT = SolverOptions(scf_conv_tol_grad=1e-9, scf_conv_tol_energy=1e-12, cg_tol=1e-10, cg_max_iter=100)


@pytest.fixture(scope="module")
def geom():
    torch.set_num_threads(1)
    rec = ReferenceSet("reference_data/g2-b3lyp-svp-v1").load("H2O")
    return prepare_geometry(rec, ScaledPBE(), grid_level=1)


def _grad_and_fd(model, fn, h=1e-4):
    model.zero_grad()
    out = fn(backward=True)
    analytic = model.scale.grad.detach().clone()
    fd = []
    for i in range(model.scale.numel()):
        vals = []
        for sgn in (1.0, -1.0):
            with torch.no_grad():
                model.scale[i] += sgn * h
            vals.append(fn(backward=False).loss)
            with torch.no_grad():
                model.scale[i] -= sgn * h
        fd.append((vals[0] - vals[1]) / (2 * h))
    return out, analytic, torch.tensor(fd, dtype=torch.float64)


@pytest.mark.parametrize("term", ["energy", "density"])
def test_ed_term_gradient_matches_finite_differences(geom, term):
    weights = LossWeights(energy=1.0 if term == "energy" else 0.0, density=1.0 if term == "density" else 0.0)
    model = ScaledPBE(1.02, 0.97)
    out, analytic, fd = _grad_and_fd(model, lambda backward: ed_loss(model, geom, weights, TIGHT, backward=backward))
    assert out.metrics["scf_converged"] == 1.0
    assert out.metrics["cg_residual"] < 1e-8
    assert out.terms[term] > 0
    torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-6 * float(fd.abs().max()))


def test_ed_combined_gradient_is_sum_of_terms(geom):
    model = ScaledPBE(1.01, 0.99)
    grads = []
    for w in (LossWeights(1, 0, 0, 0), LossWeights(0, 1, 0, 0), LossWeights(1, 1, 0, 0)):
        model.zero_grad()
        ed_loss(model, geom, w, TIGHT)
        grads.append(model.scale.grad.clone())
    torch.testing.assert_close(grads[0] + grads[1], grads[2], rtol=1e-8, atol=1e-8)


def _synthetic_di(geom, teacher):
    """DI targets of ``teacher`` (not B3LYP: no PySCF needed) at κ = 0 and one perturbed point."""
    from harness.grassmann import energy_gradient_hvp, rotate

    nocc = geom.nocc
    nvir = geom.mo_coeff_ref.shape[1] - nocc
    gen = torch.Generator().manual_seed(0)
    kappa = torch.zeros(2, nvir, nocc, dtype=torch.float64)
    kappa[1] = torch.randn(nvir, nocc, generator=gen, dtype=torch.float64)
    kappa[1] *= 0.05 / kappa[1].norm()
    probes = torch.randn(2, 2, nvir, nocc, generator=gen, dtype=torch.float64)
    probes /= probes.flatten(2).norm(dim=-1)[..., None, None]
    E, G, HV = [], [], []
    for s in range(2):
        e, g, hv = energy_gradient_hvp(teacher, geom.setup, rotate(geom.mo_coeff_ref, nocc, kappa[s]), nocc, probes[s])
        E.append(e)
        G.append(g)
        HV.append(hv)
    return DITargets(kappa, torch.stack(E), torch.stack(G), probes, torch.stack(HV))


@pytest.mark.parametrize("term", ["gradient", "hvp"])
def test_di_term_gradient_matches_finite_differences(geom, term):
    import dataclasses

    g = dataclasses.replace(geom, di=_synthetic_di(geom, ScaledPBE(0.95, 1.1)), cache={})
    weights = LossWeights(energy=0.0, density=0.0, gradient=1.0 if term == "gradient" else 0.0,
                          hvp=1.0 if term == "hvp" else 0.0)
    model = ScaledPBE(1.02, 0.97)
    out, analytic, fd = _grad_and_fd(model, lambda backward: di_terms(model, g, weights, backward=backward), h=1e-5)
    assert out.terms[term] > 0
    torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-7 * float(fd.abs().max()))


def test_di_terms_vanish_for_the_teacher(geom):
    import dataclasses

    g = dataclasses.replace(geom, di=_synthetic_di(geom, ScaledPBE(0.95, 1.1)), cache={})
    out = di_terms(ScaledPBE(0.95, 1.1), g, LossWeights(0, 0, 1, 1), backward=False)
    assert out.loss < 1e-16


def test_orbital_hessian_matches_grassmann_hvp(geom):
    """The CG's Hessian (TDDFT machinery, DF-J like the SCF whose fixed point it differentiates)
    equals grassmann's exact-J H·v once the Coulomb parts are swapped to DF-J (the DF error of
    J is ~1% in high virtual blocks, so it is swapped rather than tolerated)."""
    from harness.grassmann import delta_density, energy_gradient_hvp
    from harness.integrals import exact_coulomb_matrix
    from harness.losses import OrbitalHessian
    from harness.scf import run_scf

    model = ScaledPBE()
    setup = geom.setup
    scf = run_scf(model, setup, dm0=geom.dm_ref, conv_tol_grad=1e-9, exact_j=False)
    nocc = geom.nocc
    C = scf.mo_coeff
    Co, Cv = C[:, :nocc], C[:, nocc:]
    H = OrbitalHessian(model, setup, C, scf.mo_energy, nocc)
    v = torch.randn(2, C.shape[1] - nocc, nocc, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, g, hv = energy_gradient_hvp(model, setup, C, nocc, v)
    assert float(g.norm()) < 1e-2  # exact-J gradient at the DF-J solution: DF error only
    # swap exact J for DF-J: response part and generalised-Fock part
    dP = delta_density(C, nocc, v)
    dJ = torch.stack([setup.coulomb_df(x) - exact_coulomb_matrix(setup, x) for x in dP])
    P0 = 2.0 * Co @ Co.T
    dJ0 = setup.coulomb_df(P0) - exact_coulomb_matrix(setup, P0)
    hv_df = hv + 4.0 * (Cv.T @ dJ @ Co) + 4.0 * ((Cv.T @ dJ0 @ Cv) @ v - v @ (Co.T @ dJ0 @ Co))
    torch.testing.assert_close(H(v), hv_df, rtol=1e-6, atol=1e-6 * float(hv.abs().max()))


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    A = A @ A.T + 12 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=gen, dtype=torch.float64)
    x, it, rel, _ = conjugate_gradient(lambda v: A @ v, b, precond=A.diagonal(), tol=1e-12, max_iter=50)
    assert rel < 1e-12
    torch.testing.assert_close(A @ x, b)


def test_conjugate_gradient_starts_from_a_guess_only_when_it_helps():
    gen = torch.Generator().manual_seed(1)
    n = 200  # condition number 1e2: CG needs tens of iterations from 0
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    A = Q @ torch.diag(torch.logspace(0, 2, n, dtype=torch.float64)) @ Q.T
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    exact = torch.linalg.solve(A, b)

    def solve(x0=None, tol=1e-10):
        return conjugate_gradient(lambda v: A @ v, b, tol=tol, max_iter=500, x0=x0)

    cold = solve()
    near = solve(exact + 1e-8 * torch.randn(n, generator=gen, dtype=torch.float64))
    assert cold.residual < 1e-10 and near.residual < 1e-10
    assert near.iterations < cold.iterations / 2
    torch.testing.assert_close(near.x, exact, rtol=1e-8, atol=1e-10)
    # the start is rescaled to its best multiple: a rescaled solution is as good as the solution
    flipped = solve(-100 * exact, tol=1e-6)
    assert flipped.iterations == 1 and flipped.residual < 1e-6
    # and it is never worse than 0 in the H-norm, whatever the direction
    for _ in range(3):
        x0 = torch.randn(n, generator=gen, dtype=torch.float64)
        one = conjugate_gradient(lambda v: A @ v, b, tol=1e-10, max_iter=1, x0=x0)  # just the scaled start
        err = one.x - exact
        assert float(err @ A @ err) <= float(exact @ A @ exact)
    done = solve(exact, tol=1e-6)
    assert done.iterations == 1 and done.residual < 1e-6


def test_warm_started_scf_and_cg_give_the_cold_gradient(geom, monkeypatch):
    """A training step's SCF and adjoint CG started from the previous step's solution (the
    model moved by a step) give the cold-started parameter gradient to 1e-8 relative; the SCF
    takes fewer iterations, and the CG starts from the stored λ carried into the new orbitals,
    which is close to the new solution."""
    import dataclasses

    import harness.losses as L
    from harness.losses import WarmStart

    starts = []
    real_cg = L.conjugate_gradient

    def recording_cg(*args, **kw):
        res = real_cg(*args, **kw)
        x0 = kw.get("x0")
        starts.append(None if x0 is None else float(torch.linalg.norm(x0 - res.x) / torch.linalg.norm(res.x)))
        return res

    monkeypatch.setattr(L, "conjugate_gradient", recording_cg)

    weights = LossWeights(energy=1.0, density=1.0)
    prev = ScaledPBE(1.02, 0.97)
    before = ed_loss(prev, geom, weights, TIGHT, backward=True)
    assert isinstance(before.warm, WarmStart) and before.warm.lam_ao is not None

    model = ScaledPBE(1.0201, 0.9699)  # the model one step later
    model.zero_grad()
    cold = ed_loss(model, geom, weights, TIGHT, backward=True)
    g_cold = model.scale.grad.detach().clone()
    model.zero_grad()
    warm = ed_loss(model, geom, weights, dataclasses.replace(TIGHT, cg_warm_start=True), backward=True,
                   warm=before.warm)
    g_warm = model.scale.grad.detach().clone()

    assert float(torch.linalg.norm(g_warm - g_cold)) <= 1e-8 * float(torch.linalg.norm(g_cold))
    assert abs(warm.loss - cold.loss) <= 1e-8 * abs(cold.loss)
    assert warm.metrics["scf_iterations"] < cold.metrics["scf_iterations"]
    assert warm.metrics["cg_iterations"] <= cold.metrics["cg_iterations"]
    assert starts[:2] == [None, None] and starts[2] < 0.05  # the carried λ is near the new one
    # SolverOptions(warm_start=False) ignores the start
    model.zero_grad()
    off = ed_loss(model, geom, weights, dataclasses.replace(TIGHT, warm_start=False), backward=True,
                  warm=before.warm)
    assert off.metrics["scf_iterations"] == cold.metrics["scf_iterations"]
    assert off.metrics["cg_iterations"] == cold.metrics["cg_iterations"] and starts[3] is None

    # λ in AO form re-expressed in the orbitals it was solved in is λ itself, whatever their signs
    C = torch.linalg.eigh(geom.setup.S)[1]  # any S-orthonormal orbitals
    X = C / torch.sqrt(torch.diagonal(C.T @ geom.setup.S @ C))
    L = torch.linalg.cholesky(geom.setup.S)
    Corth = torch.linalg.inv(L.T) @ torch.linalg.qr(X)[0]
    nocc = geom.nocc
    Co, Cv = Corth[:, :nocc], Corth[:, nocc:]
    lam = torch.randn(Cv.shape[1], nocc, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    w = WarmStart(geom.dm_ref, Cv @ lam @ Co.T)
    torch.testing.assert_close(w.kappa_in(geom.setup.S, Co, Cv), lam, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w.kappa_in(geom.setup.S, -Co, Cv), -lam, rtol=1e-10, atol=1e-10)
