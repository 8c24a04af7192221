"""Closed-shell singlet linear-response TDDFT (RPA / Casida and TDA) at a harness SCF solution.

Scope: functionals WITHOUT exact exchange (LDA, GGA, meta-GGA in the harness contract).
Coulomb response from the setup's density-fitting factor (DF-J, as in the SCF), XC kernel
by automatic differentiation:

    K_xc[δP] = ∂V_xc/∂P · δP = contract( H_f · f(δP) ),

with f the (linear) map P → density features and H_f = ∂²E_xc/∂f² at the ground state.
H_f·δf is a double-backward Hessian-vector product through ONE ``get_exc`` graph built per
TDDFT solve and reused for every product (batched with ``is_grads_batched`` where the
functional supports vmap, a loop otherwise).

Singlet spin adaptation, amplitudes x (nvir, nocc):

    δP(x)   = C_v x C_oᵀ + C_o xᵀ C_vᵀ          (total-density perturbation)
    δF(x)   = J_DF[δP] + K_xc[δP]
    A x     = Δε∘x +   C_vᵀ δF C_o
    (A+B) x = Δε∘x + 2 C_vᵀ δF C_o,   A−B = diag(Δε)   (no exact exchange)

RPA: (A−B)^½ (A+B) (A−B)^½ Z = ω² Z, X+Y = (A−B)^½ Z / √ω, |Z| = 1.
TDA: A x = ω x, |x| = 1.
Oscillator strength (length gauge): f = ⅔ ω |μ|², μ = √2 Σ_ia (X+Y)_ia ⟨a|r|i⟩.
Both eigenproblems are solved by a Davidson method on the symmetric matrix (block of trial
vectors, diagonal preconditioner, convergence on the residual norm).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.integrals import MoleculeSetup
from harness.xc import XCEngine

HARTREE_EV = 27.211386245988  # CODATA 2018, same value as pyscf.data.nist.HARTREE2EV


@dataclass
class TDDFTResult:
    excitation_energies_eV: torch.Tensor  # (nstates,)
    oscillator_strengths: torch.Tensor  # (nstates,)
    converged: torch.Tensor  # (nstates,) bool
    iterations: int
    excitation_energies_Eh: torch.Tensor | None = None
    xpy: torch.Tensor | None = None  # (nstates, nvir, nocc): X+Y (TDA: X)
    tda: bool = False
    wall_s: float = 0.0
    timings: dict = field(default_factory=dict)


class XCKernel:
    """Hessian-vector products of E_xc at a fixed ground-state density P0."""

    def __init__(self, functional, setup: MoleculeSetup, P0: torch.Tensor, batched: bool = True):
        self.engine = XCEngine(functional, setup)
        self.batched = batched
        feats = self.engine.features_of(P0)
        self.names = list(feats.keys())
        self.leaves = [feats[n].detach().clone().requires_grad_(True) for n in self.names]
        call = dict(zip(self.names, self.leaves))
        call.update(self.engine.static_features())
        with torch.enable_grad():
            e = self.engine._call(call)
            if self.leaves and e.requires_grad:
                grads = torch.autograd.grad(e, self.leaves, create_graph=True, allow_unused=True)
            else:
                grads = [None] * len(self.leaves)
        # a feature E_xc does not depend on (or only linearly) has no second derivative
        self.active = [j for j, g in enumerate(grads) if g is not None and g.requires_grad]
        self.grads = [grads[j] for j in self.active]
        self.hvp_s = 0.0

    def _hvp(self, dfeats: list[torch.Tensor], batched: bool) -> list[torch.Tensor | None]:
        return list(torch.autograd.grad(self.grads, self.leaves, grad_outputs=dfeats, retain_graph=True,
                                        allow_unused=True, is_grads_batched=batched))

    def apply(self, dP: torch.Tensor) -> torch.Tensor:
        """K_xc[dP] for dP (n, nao, nao) → (n, nao, nao)."""
        n = dP.shape[0]
        if not self.grads:
            return torch.zeros_like(dP)
        t0 = time.perf_counter()
        df = self.engine.features_of(dP)  # each (n, ...)
        douts = [df[self.names[j]] for j in self.active]  # pairs with self.grads
        out = None
        with torch.enable_grad():
            if self.batched and n > 1:
                try:
                    out = self._hvp(douts, True)
                except Exception:
                    self.batched = False  # functional not vmap-able: loop from now on
            if out is None:
                per = [self._hvp([d[k] for d in douts], False) for k in range(n)]
                out = [None if per[0][j] is None else torch.stack([p[j] for p in per])
                       for j in range(len(self.leaves))]
        dE = {nm: o.detach() for nm, o in zip(self.names, out) if o is not None}
        self.hvp_s += time.perf_counter() - t0
        if not dE:
            return torch.zeros_like(dP)
        return self.engine.contract(dE)


def _davidson(matvec, diag: torch.Tensor, nroots: int, conv_tol: float, max_cycle: int,
              max_space: int | None = None):
    """Lowest ``nroots`` eigenpairs of a symmetric operator (vectors as rows).

    Returns (eigenvalues, eigenvectors (nroots, N), converged (nroots,), iterations)."""
    N = diag.shape[0]
    nroots = min(nroots, N)
    nguess = min(N, max(nroots + 3, 2 * nroots))
    max_space = max_space or min(N, max(40, 12 * nroots))
    order = torch.argsort(diag)
    V = torch.zeros(nguess, N, dtype=diag.dtype, device=diag.device)
    V[torch.arange(nguess), order[:nguess]] = 1.0
    AV = matvec(V)
    conv = torch.zeros(nroots, dtype=torch.bool)
    e = x = None
    it = 0
    for it in range(1, max_cycle + 1):
        H = V @ AV.T
        H = 0.5 * (H + H.T)
        w, u = torch.linalg.eigh(H)
        e = w[:nroots]
        uk = u[:, :nroots].T  # (nroots, m)
        x = uk @ V
        Ax = uk @ AV
        R = Ax - e[:, None] * x
        rnorm = torch.linalg.norm(R, dim=1)
        conv = rnorm < conv_tol
        if bool(conv.all()) or V.shape[0] >= N:
            conv = conv | (V.shape[0] >= N)
            break
        denom = e[:, None] - diag[None, :]
        denom = torch.where(denom.abs() < 1e-8, torch.full_like(denom, 1e-8), denom)
        T = (R / denom)[~conv]
        if V.shape[0] + T.shape[0] > max_space:  # restart from the current Ritz vectors
            V, AV = x, Ax
        # two passes of Gram-Schmidt against the space, then among themselves
        for _ in range(2):
            T = T - (T @ V.T) @ V
        keep = []
        for k in range(T.shape[0]):
            t = T[k]
            for q in keep:
                t = t - (t @ q) * q
            nt = torch.linalg.norm(t)
            if nt > 1e-10:
                keep.append(t / nt)
        if not keep:
            break
        T = torch.stack(keep)
        T = T - (T @ V.T) @ V
        T = T / torch.linalg.norm(T, dim=1, keepdim=True)
        V = torch.cat([V, T])
        AV = torch.cat([AV, matvec(T)])
    return e, x, conv, it


def tddft(functional, scf_result, setup: MoleculeSetup, nstates: int = 5, tda: bool = False,
          conv_tol: float = 1e-6, max_cycle: int = 100, batched: bool | None = None) -> TDDFTResult:
    """Singlet TDDFT (``tda=False``: Casida/RPA; ``tda=True``: Tamm–Dancoff) excitations.

    ``functional`` must be the one of ``scf_result`` and have no exact exchange.
    ``conv_tol``: Davidson residual norm (on the Hermitian problem; ω² units for RPA).
    ``batched``: Hessian-vector products through ``is_grads_batched`` (vmap) or a Python loop;
    None (default) = loop on CPU (measured ~20% faster there for H2O), vmap on other devices.
    The contract has no exact-exchange feature, so every contract functional qualifies; an
    object carrying a non-zero ``exact_exchange``/``hyb`` attribute is refused."""
    t_all = time.perf_counter()
    if getattr(functional, "exact_exchange", 0) or getattr(functional, "hyb", 0):
        raise NotImplementedError("tddft: functionals with exact exchange are not supported")
    dev, dt = setup.device, setup.dtype
    C = scf_result.mo_coeff.to(dev, dt)
    eps = scf_result.mo_energy.to(dev, dt)
    occ = scf_result.mo_occ.to(dev, dt)
    nocc = int((occ > 0).sum())
    Co, Cv = C[:, :nocc], C[:, nocc:]
    nvir = Cv.shape[1]
    P0 = 2.0 * Co @ Co.T
    t0 = time.perf_counter()
    if batched is None:
        batched = setup.device.type != "cpu"
    kernel = XCKernel(functional, setup, P0, batched=batched)
    t_kernel = time.perf_counter() - t0
    de = (eps[nocc:, None] - eps[None, :nocc])  # (nvir, nocc)
    de_flat = de.reshape(-1)
    counter = {"products": 0}

    def response(x: torch.Tensor) -> torch.Tensor:
        """C_vᵀ δF[δP(x)] C_o for rows x (n, nvir*nocc) → (n, nvir*nocc)."""
        n = x.shape[0]
        X = x.reshape(n, nvir, nocc)
        T = Cv @ X @ Co.T
        dP = T + T.transpose(-1, -2)
        dF = setup.coulomb_df(dP) + kernel.apply(dP)
        counter["products"] += n
        return (Cv.T @ dF @ Co).reshape(n, -1)

    if tda:
        def matvec(x):
            return de_flat * x + response(x)
        diag = de_flat
    else:
        sq = de_flat.sqrt()

        def matvec(z):
            y = sq * z
            return sq * (de_flat * y + 2.0 * response(y))
        diag = de_flat * de_flat

    w, vecs, conv, iters = _davidson(matvec, diag, nstates, conv_tol, max_cycle)
    if tda:
        omega = w
        xpy = vecs
    else:
        omega = w.clamp(min=0).sqrt()
        xpy = (sq * vecs) / omega.clamp(min=1e-12).sqrt()[:, None]
    # transition dipoles in the length gauge (origin irrelevant: ⟨a|i⟩ = 0)
    mol = setup.mol
    charges = mol.atom_charges()
    center = np.einsum("z,zx->x", charges, mol.atom_coords()) / charges.sum()
    with mol.with_common_orig(center):
        r = torch.as_tensor(mol.intor_symmetric("int1e_r", comp=3), dtype=dt, device=dev)
    r_vo = torch.einsum("ma,xmn,ni->xai", Cv, r, Co)
    mu = np.sqrt(2.0) * torch.einsum("kai,xai->kx", xpy.reshape(-1, nvir, nocc), r_vo)
    f = (2.0 / 3.0) * omega * (mu * mu).sum(-1)
    return TDDFTResult(
        excitation_energies_eV=omega * HARTREE_EV, oscillator_strengths=f, converged=conv.cpu(),
        iterations=iters, excitation_energies_Eh=omega, xpy=xpy.reshape(-1, nvir, nocc), tda=tda,
        wall_s=time.perf_counter() - t_all,
        timings={"kernel_setup_s": t_kernel, "hvp_s": kernel.hvp_s, "products": counter["products"],
                 "hvp_batched": kernel.batched},
    )


__all__ = ["TDDFTResult", "XCKernel", "tddft", "HARTREE_EV"]
