"""Model-side DI-Loss quantities (PROTOCOL §4): energy, orbital-rotation gradient and
Hessian-vector products of a harness functional, by autodiff, in the SAME parametrisation as
the reference targets of `harness.reference.di_targets`.

Parametrisation (closed shell, real orbitals). C (nao, nmo) with CᵀSC = 1, the first ``nocc``
columns occupied. A rotation κ (nvir, nocc), nvir = nmo − nocc, acts as

    C(κ) = C · expm(K),   K = [[0, −κᵀ], [κ, 0]]   (occupied block first),
    P(κ) = 2 C_occ(κ) C_occ(κ)ᵀ,

and E(κ) = E_nuc + Tr(h P) + ½ Tr(P J[P]) + E_xc[P] is the total energy with EXACT
(4-centre) Coulomb J. At κ = 0, expanding expm to second order in a direction v,

    P(tv) = P + t δP(v) + t² P₂(v) + O(t³),
    δP(v) = 2 (C_v v C_oᵀ + C_o vᵀ C_vᵀ),
    P₂(v) = 2 (C_v v vᵀ C_vᵀ − C_o vᵀ v C_oᵀ),

so with F = ∂E/∂P = h + J[P] + V_xc[P] (symmetric) and its response
δF[X] = J[X] + K_xc[X] (K_xc = ∂²E_xc/∂P² · X):

    g        = ∂E/∂κ |₀     = 4 C_vᵀ F C_o                              (nvir, nocc)
    (H v)    = ∂²E/∂κ² v |₀ = 4 C_vᵀ δF[δP(v)] C_o + 4 (F_vv v − v F_oo),

F_vv = C_vᵀ F C_v, F_oo = C_oᵀ F C_o. The second term is the generalised-Fock part; it does
not vanish at a non-stationary point (and gives the orbital-energy differences at a
canonical stationary one). These closed forms are exact: no differentiation through
``matrix_exp`` is needed.

Only E_xc depends on the model parameters. Its contributions use the linear feature map
P → features (`harness.features`): E_xc and ∂E_xc/∂features in one ``get_exc`` graph, the
Hessian-vector products ∂²E_xc/∂features² · features(δP(v)) by double backward (all probes
in one batched call where the functional allows it), and V_xc / K_xc by the adjoint
contraction. With ``create_graph=True`` the adjoint contraction is a differentiable
`torch.autograd.Function` (its backward is the feature builder itself), so E, g and Hv carry
a graph to the functional's parameters. For a torch functional that takes third-order
autograd through ``get_exc`` (Hv w.r.t. parameters); jax functionals bridged by
`harness.adapter.JaxFunctional` support E and g this way, not Hv (no third derivatives).

The parameter-independent part (one-electron, exact J, E_nuc) is computed once with PySCF's
exact J and can be reused across training steps with `fixed_terms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.features import build_features, contract_features
from harness.integrals import MoleculeSetup, exact_coulomb_matrix
from harness.xc import XCEngine, default_batched, hessian_vector_products

__all__ = [
    "rotate", "generator", "delta_density", "second_order_density", "density",
    "FixedTerms", "fixed_terms", "energy_gradient_hvp", "energy_at",
]


def _as_tensor(x, like: torch.Tensor | None = None, dtype=None, device=None) -> torch.Tensor:
    if like is not None:
        dtype, device = like.dtype, like.device
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64, device=device)


def generator(kappa: torch.Tensor, nocc: int) -> torch.Tensor:
    """K = [[0, −κᵀ], [κ, 0]] (nmo, nmo) for κ (nvir, nocc) (occupied block first)."""
    nvir = kappa.shape[-2]
    if kappa.shape[-1] != nocc:
        raise ValueError(f"kappa must be (nvir, nocc) with nocc={nocc}, got {tuple(kappa.shape)}")
    nmo = nocc + nvir
    K = kappa.new_zeros(kappa.shape[:-2] + (nmo, nmo))
    K[..., nocc:, :nocc] = kappa
    K[..., :nocc, nocc:] = -kappa.transpose(-1, -2)
    return K


def rotate(C, nocc: int, kappa) -> torch.Tensor:
    """C(κ) = C · expm(K), K = [[0, −κᵀ], [κ, 0]]; C (nao, nmo), κ (nvir, nocc), nvir = nmo − nocc.

    Accepts numpy arrays or tensors (returns a tensor in C's dtype/device; differentiable in
    both C and κ)."""
    C = _as_tensor(C)
    kappa = _as_tensor(kappa, like=C)
    nmo = C.shape[-1]
    if kappa.shape[-2:] != (nmo - nocc, nocc):
        raise ValueError(f"kappa must be (nvir, nocc) = ({nmo - nocc}, {nocc}), got {tuple(kappa.shape)}")
    return C @ torch.linalg.matrix_exp(generator(kappa, nocc))


def density(C: torch.Tensor, nocc: int) -> torch.Tensor:
    """P = 2 C_occ C_occᵀ."""
    Co = C[:, :nocc]
    return 2.0 * Co @ Co.T


def delta_density(C: torch.Tensor, nocc: int, v: torch.Tensor) -> torch.Tensor:
    """First-order δP(v) = 2 (C_v v C_oᵀ + C_o vᵀ C_vᵀ) for v (…, nvir, nocc) → (…, nao, nao)."""
    Co, Cv = C[:, :nocc], C[:, nocc:]
    X = Cv @ v @ Co.T
    return 2.0 * (X + X.transpose(-1, -2))


def second_order_density(C: torch.Tensor, nocc: int, v: torch.Tensor) -> torch.Tensor:
    """P₂(v) = 2 (C_v v vᵀ C_vᵀ − C_o vᵀ v C_oᵀ), the t² coefficient of P(tv)."""
    Co, Cv = C[:, :nocc], C[:, nocc:]
    vt = v.transpose(-1, -2)
    return 2.0 * (Cv @ (v @ vt) @ Cv.T - Co @ (vt @ v) @ Co.T)


def _project(C: torch.Tensor, nocc: int, M: torch.Tensor) -> torch.Tensor:
    """4 C_vᵀ M C_o for M (…, nao, nao) → (…, nvir, nocc)."""
    return 4.0 * (C[:, nocc:].T @ M @ C[:, :nocc])


def _fock_part(C: torch.Tensor, nocc: int, F: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """4 (F_vv v − v F_oo) for every probe (generalised-Fock part of H v)."""
    Co, Cv = C[:, :nocc], C[:, nocc:]
    Fvv = Cv.T @ F @ Cv
    Foo = Co.T @ F @ Co
    return 4.0 * (Fvv @ probes - probes @ Foo)


@dataclass
class FixedTerms:
    """Parameter-independent part of E, g and Hv (E_nuc + one-electron + exact Coulomb) at
    one point C for given probes. Reusable while C and the probes stay the same."""

    energy: torch.Tensor  # ()
    gradient: torch.Tensor  # (nvir, nocc)
    hvp: torch.Tensor  # (nprobe, nvir, nocc)
    probes: torch.Tensor  # (nprobe, nvir, nocc), the probes these were computed for


def _exact_j_batch(setup: MoleculeSetup, Ps: torch.Tensor) -> torch.Tensor:
    return torch.stack([exact_coulomb_matrix(setup, P) for P in Ps]) if Ps.shape[0] else torch.zeros_like(Ps)


def fixed_terms(setup: MoleculeSetup, C, nocc: int, probes) -> FixedTerms:
    """E_nuc + Tr(hP) + ½Tr(P J[P]), its κ-gradient and Hessian-vector products (exact J)."""
    C = _as_tensor(C, dtype=setup.dtype, device=setup.device).detach()
    probes = _as_tensor(probes, like=C).detach()
    P0 = density(C, nocc)
    J0 = exact_coulomb_matrix(setup, P0)
    F = setup.hcore + J0
    energy = setup.energy_nuc + (P0 * setup.hcore).sum() + 0.5 * (P0 * J0).sum()
    grad = _project(C, nocc, F)
    dP = delta_density(C, nocc, probes)
    hvp = _project(C, nocc, _exact_j_batch(setup, dP)) + _fock_part(C, nocc, F, probes)
    return FixedTerms(energy, grad, hvp, probes)


class _Contract(torch.autograd.Function):
    """V = (∂features/∂P)ᵀ d for feature derivatives d; differentiable in d.

    Its adjoint is the (linear) feature map itself: ⟨contract(d), X⟩ = ⟨d, features(X)⟩ for
    symmetric X, so the backward of a gradient gV is features(gV)."""

    @staticmethod
    def forward(ctx, setup, names, *ds):
        ctx.setup, ctx.names = setup, names
        return contract_features(setup, dict(zip(names, ds)))

    @staticmethod
    def backward(ctx, gV):
        feats = build_features(ctx.setup, gV, ctx.names)
        return (None, None) + tuple(feats[n] for n in ctx.names)


def _contract(setup: MoleculeSetup, dE: dict[str, torch.Tensor], differentiable: bool) -> torch.Tensor:
    names = tuple(n for n, d in dE.items() if d is not None)
    ds = [dE[n] for n in names]
    if differentiable and any(d.requires_grad for d in ds):
        return _Contract.apply(setup, names, *ds)
    return contract_features(setup, {n: d.detach() for n, d in zip(names, ds)})


def _xc_terms(functional, setup: MoleculeSetup, C: torch.Tensor, nocc: int, probes: torch.Tensor,
              create_graph: bool, engine: XCEngine | None = None):
    """(E_xc, g_xc, Hv_xc); differentiable w.r.t. the functional's parameters if create_graph."""
    engine = engine or XCEngine(functional, setup)
    n = probes.shape[0]
    P0 = density(C, nocc)
    feats = engine.features_of(P0, C_occ=C[:, :nocc])
    names = list(feats.keys())
    leaves = [feats[k].detach().requires_grad_(True) for k in names]
    zero_ov = C.new_zeros(C.shape[1] - nocc, nocc)
    with torch.enable_grad():
        exc = engine.energy(dict(zip(names, leaves)))
        if not leaves or not exc.requires_grad:
            e = exc if create_graph else exc.detach()
            return e, zero_ov, zero_ov.expand(n, -1, -1).clone()
        d1 = torch.autograd.grad(exc, leaves, create_graph=True, allow_unused=True)
        dE = {k: d for k, d in zip(names, d1) if d is not None}
        bad = [k for k, d in dE.items() if not bool(torch.isfinite(d.detach()).all())]
        if bad:
            raise engine._fail(f"the derivative of E_xc with respect to {bad} is not finite")
        # second derivatives along the features of every probe's δP (the engine's batching policy)
        active = [j for j, d in enumerate(d1) if d is not None and d.requires_grad]
        hd = None
        if active and n:
            dfeat = engine.features_of(delta_density(C, nocc, probes))
            hd, _ = hessian_vector_products([d1[j] for j in active], leaves, [dfeat[names[j]] for j in active], n,
                                            default_batched(functional, setup), create_graph=create_graph)
    V = _contract(setup, dE, create_graph)
    g = _project(C, nocc, V)
    hv = _fock_part(C, nocc, V, probes)
    if hd is not None:
        hdict = {k: h for k, h in zip(names, hd) if h is not None}
        if hdict:
            hv = hv + _project(C, nocc, _contract(setup, hdict, create_graph))
    if not create_graph:
        exc, g, hv = exc.detach(), g.detach(), hv.detach()
    return exc, g, hv


def energy_gradient_hvp(functional, setup: MoleculeSetup, C, nocc: int, probes, create_graph: bool = False,
                        fixed: FixedTerms | None = None):
    """Model total energy E (Eh), gradient g = ∂E/∂κ|₀ (nvir, nocc) and Hessian-vector
    products H·v (nprobe, nvir, nocc) at orbitals C (nao, nmo), for probes (nprobe, nvir, nocc)
    (a single (nvir, nocc) probe is accepted and gives Hv of shape (1, nvir, nocc)).

    E = E_nuc + Tr(hP) + ½Tr(P J_exact[P]) + E_xc,model[P], P = 2 C_occ C_occᵀ (module doc for
    the parametrisation). ``functional``: a harness adapter (`TorchFunctional`/`JaxFunctional`)
    or any object with ``features`` and ``get_exc``. ``create_graph=True``: E, g and Hv are
    differentiable w.r.t. the functional's parameters. ``fixed``: the parameter-independent
    part from `fixed_terms` (same C and probes), to skip the exact-J work on repeated calls.
    """
    dt, dev = setup.dtype, setup.device
    C = _as_tensor(C, dtype=dt, device=dev).detach()
    probes = _as_tensor(probes, like=C).detach()
    if probes.dim() == 2:
        probes = probes.unsqueeze(0)
    nvir = C.shape[1] - nocc
    if probes.shape[-2:] != (nvir, nocc):
        raise ValueError(f"probes must be (nprobe, nvir, nocc) = (n, {nvir}, {nocc}), got {tuple(probes.shape)}")
    if fixed is None:
        fixed = fixed_terms(setup, C, nocc, probes)
    elif fixed.probes.shape != probes.shape or not torch.equal(fixed.probes, probes):
        raise ValueError("fixed terms were computed for other probes")
    exc, g_xc, hv_xc = _xc_terms(functional, setup, C, nocc, probes, create_graph)
    return fixed.energy + exc, fixed.gradient + g_xc, fixed.hvp + hv_xc


def energy_at(functional, setup: MoleculeSetup, C, nocc: int, kappa=None) -> torch.Tensor:
    """Model total energy E(κ) at C(κ) (exact J), detached; κ = None means κ = 0.
    (For finite-difference checks.)"""
    C = _as_tensor(C, dtype=setup.dtype, device=setup.device).detach()
    if kappa is not None:
        C = rotate(C, nocc, kappa)
    P = density(C, nocc)
    J = exact_coulomb_matrix(setup, P)
    e1 = setup.energy_nuc + (P * setup.hcore).sum() + 0.5 * (P * J).sum()
    return e1 + XCEngine(functional, setup).exc(P, C_occ=C[:, :nocc])
