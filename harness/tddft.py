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

from harness.errors import HarnessError
from harness.integrals import MoleculeSetup
from harness.xc import XCHessian

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
    #: (nstates,) bool: ω² < 0 (an unstable ground state; ω is then reported as 0), full TDDFT only
    unstable: torch.Tensor | None = None


#: The XC kernel at a ground state: the shared engine's Hessian-vector products.
XCKernel = XCHessian


# ---------------------------------------------------------------------------------------------
# Fast response in the MO pair basis
#
# For a trial amplitude x (nvir, nocc), δP = C_v x C_oᵀ + C_o xᵀ C_vᵀ, so every density
# feature of δP is a sum over occupied–virtual pairs of MO values on the grid:
#     δρ   = 2 Σ_ai ψ_a x_ai ψ_i
#     δ∇ρ  = 2 Σ_ai x_ai (∇ψ_a ψ_i + ψ_a ∇ψ_i)
#     δτ   =   Σ_ai x_ai ∇ψ_a·∇ψ_i
# and the XC response block is, with per-point coefficients a = ∂E/∂ρ, b = ∂E/∂∇ρ,
# c = ½ ∂E/∂τ of the kernel-contracted perturbation,
#     (C_vᵀ K_xc C_o)_ai = Σ_g a ψ_a ψ_i + b·(∇ψ_a ψ_i + ψ_a ∇ψ_i) + c ∇ψ_a·∇ψ_i.
# With Y_c = ∂_cψ_v x (one GEMM over all trial vectors) both directions reduce to per-point
# 4×4 products against ∂_cψ_o, so the elementwise work scales with nocc, not nao.
#
# Singlet total-density variables q = (ρ, ∂xρ, ∂yρ, ∂zρ, τ) (those the functional uses).
# For a point-local functional the kernel is a per-point (nq × nq) matrix f = ∂²E/∂q∂q,
# obtained from nq Hessian-vector products with constant tangents, then checked against exact
# Hessian-vector products for two random ov perturbations (compared in the ov block); a
# functional that fails the check (non-local) gets an exact product per trial vector instead.
# ---------------------------------------------------------------------------------------------

#: relative deviation above which the per-point kernel is rejected (non-local functional)
LOCALITY_RTOL = 1e-9


def _apply_point_kernel(f: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-point kernel f (nq, nq, G) applied to q (nq, n, G) → (nq, n, G)."""
    return torch.einsum("ijg,jng->ing", f, q)


class MOResponse:
    """XC response products C_vᵀ K_xc[δP(x)] C_o for trial amplitudes x (n, nvir, nocc)."""

    def __init__(self, kernel: XCKernel, setup: MoleculeSetup, Co: torch.Tensor, Cv: torch.Tensor,
                 chunk_elements: int = 4_000_000, local: bool | None = None):
        self.kernel = kernel
        self.setup = setup
        names = [kernel.names[j] for j in kernel.active]
        self.use_grad = "grad" in names
        self.use_tau = "kin" in names
        self.nq = 1 + 3 * self.use_grad + self.use_tau
        self.ncomp = 4 if (self.use_grad or self.use_tau) else 1
        self.nocc, self.nvir = Co.shape[1], Cv.shape[1]
        self.chunk_elements = chunk_elements
        t0 = time.perf_counter()
        self.psi_o, self.psi_v = self._mo_values(setup, Co, Cv)
        self.mo_values_s = time.perf_counter() - t0
        self.f = None  # (nq, nq, G) per-point kernel when local
        self.local_error = None
        t0 = time.perf_counter()
        if kernel.grads and local is not False:
            self._build_local_kernel(force=bool(local))
        self.kernel_s = time.perf_counter() - t0

    # -- MO values (point-major: one point's components and orbitals are contiguous) -----
    def _mo_values(self, setup, Co, Cv):
        """ψ_o (G, nc, nocc) and ψ_v (G, nc, nvir): MO values (and gradients) on the grid."""
        nc = self.ncomp
        G = setup.ngrid
        dev, dt = setup.device, setup.dtype
        psi_o = torch.empty(G, nc, self.nocc, device=dev, dtype=dt)
        psi_v = torch.empty(G, nc, self.nvir, device=dev, dtype=dt)
        Ct = torch.cat([Co, Cv], dim=1).T.contiguous()  # (nmo, nao)
        for blk in setup.ao_blocks:
            ao = blk.ao[:nc]  # (nc, nb, Gb)
            Cb = Ct if blk.idx is None else Ct.index_select(1, blk.idx)
            psi = torch.matmul(Cb, ao).permute(2, 0, 1)  # (Gb, nc, nmo)
            psi_o[blk.start:blk.stop] = psi[..., :self.nocc]
            psi_v[blk.start:blk.stop] = psi[..., self.nocc:]
        self.psi_oT = psi_o.transpose(1, 2).contiguous()  # (G, nocc, nc)
        return psi_o, psi_v

    def _chunks(self, n: int):
        G = self.setup.ngrid
        step = max(256, self.chunk_elements // max(1, self.ncomp * n * max(self.nocc, 1)))
        for s in range(0, G, step):
            yield slice(s, min(G, s + step))

    # -- δq from x ---------------------------------------------------------------------------
    def density_response(self, X: torch.Tensor) -> torch.Tensor:
        """q (nq, n, G): total-density variables of δP(x) for X (n, nvir, nocc)."""
        n = X.shape[0]
        nc, no, nv = self.ncomp, self.nocc, self.nvir
        Xcat = X.permute(1, 0, 2).reshape(nv, n * no)
        q = torch.empty(self.nq, n, self.setup.ngrid, device=X.device, dtype=X.dtype)
        for sl in self._chunks(n):
            pv = self.psi_v[sl]  # (Gc, nc, nv)
            Gc = pv.shape[0]
            Y = (pv.reshape(Gc * nc, nv) @ Xcat).view(Gc, nc * n, no)  # Y_c1(g, n, i)
            # S[g, c1, n, c2] = Σ_i Y_c1(g, n, i) ∂_c2ψ_i(g)
            S = torch.bmm(Y, self.psi_oT[sl]).view(Gc, nc, n, nc)
            q[0, :, sl] = 2.0 * S[:, 0, :, 0].T
            k = 1
            if self.use_grad:
                for d in range(1, 4):
                    q[k, :, sl] = 2.0 * (S[:, d, :, 0] + S[:, 0, :, d]).T
                    k += 1
            if self.use_tau:
                q[k, :, sl] = (S[:, 1, :, 1] + S[:, 2, :, 2] + S[:, 3, :, 3]).T
        return q

    # -- back to the ov block ----------------------------------------------------------------
    def potential_response(self, dEq: torch.Tensor) -> torch.Tensor:
        """(n, nvir, nocc) ov block of the potential with per-point derivatives dEq (nq, n, G)."""
        n = dEq.shape[1]
        nc, no, nv = self.ncomp, self.nocc, self.nvir
        out = torch.zeros(nv, n * no, device=dEq.device, dtype=dEq.dtype)
        for sl in self._chunks(n):
            po = self.psi_o[sl]  # (Gc, nc, no)
            Gc = po.shape[0]
            # M[g, c1, n, c2]: coefficient of ∂_c1ψ_a ∂_c2ψ_i
            M = torch.zeros(Gc, nc, n, nc, device=dEq.device, dtype=dEq.dtype)
            M[:, 0, :, 0] = dEq[0, :, sl].T
            k = 1
            if self.use_grad:
                for d in range(1, 4):
                    b = dEq[k, :, sl].T
                    M[:, 0, :, d] = b
                    M[:, d, :, 0] = b
                    k += 1
            if self.use_tau:
                c = 0.5 * dEq[k, :, sl].T
                for d in range(1, 4):
                    M[:, d, :, d] = c
            W = torch.bmm(M.view(Gc, nc * n, nc), po)  # (Gc, nc*n, no) = rows (g, c1), cols (n, i)
            out += self.psi_v[sl].reshape(Gc * nc, nv).T @ W.view(Gc * nc, n * no)
        return out.view(nv, n, no).permute(1, 0, 2)

    # -- kernel in q space ---------------------------------------------------------------------
    def _q_to_features(self, q: torch.Tensor) -> list[torch.Tensor]:
        """Contract-feature tangents (α = β = ½ total) for the kernel's active leaves."""
        out = []
        k = 1
        for j in self.kernel.active:
            name = self.kernel.names[j]
            if name == "density":
                t = 0.5 * q[0]
                out.append(torch.stack([t, t], dim=-2))
            elif name == "grad":
                t = 0.5 * q[1:4].transpose(0, 1)  # (n, 3, G)
                out.append(torch.stack([t, t], dim=-3))
            elif name == "kin":
                t = 0.5 * q[1 + 3 * self.use_grad]
                out.append(torch.stack([t, t], dim=-2))
        return out

    def _features_to_q(self, hv: list, n: int) -> torch.Tensor:
        """Spin-summed ½(∂/∂f_α + ∂/∂f_β) of Hessian-vector products → ∂(·)/∂q (nq, n, G)."""
        G = self.setup.ngrid
        dEq = torch.zeros(self.nq, n, G, device=self.psi_o.device, dtype=self.psi_o.dtype)
        for name, h in zip(self.kernel.names, hv):
            if h is None:
                continue
            if name == "density":
                dEq[0] = 0.5 * (h[..., 0, :] + h[..., 1, :]).reshape(n, G)
            elif name == "grad":
                dEq[1:4] = 0.5 * (h[..., 0, :, :] + h[..., 1, :, :]).reshape(n, 3, G).transpose(0, 1)
            elif name == "kin":
                dEq[1 + 3 * self.use_grad] = 0.5 * (h[..., 0, :] + h[..., 1, :]).reshape(n, G)
        return dEq

    def exact_kernel(self, q: torch.Tensor) -> torch.Tensor:
        """∂E/∂q of the kernel applied to q (nq, n, G) by Hessian-vector products."""
        n = q.shape[1]
        hv = self.kernel.hvp(self._q_to_features(q))
        return self._features_to_q(hv, n)

    def local_kernel(self, q: torch.Tensor) -> torch.Tensor:
        return _apply_point_kernel(self.f, q)

    def _couples_points(self) -> float | None:
        """One exact product along a random tangent on a random half of the points: a
        point-local kernel gives exactly zero on the other half. Returns that part's relative
        size when it is not zero (a non-local functional: no per-point kernel to build), else
        None. Costs one product instead of the nq + 2 of the full check."""
        G = self.setup.ngrid
        dev, dt = self.psi_o.device, self.psi_o.dtype
        gen = torch.Generator(device="cpu").manual_seed(4321)
        mask = (torch.rand(G, generator=gen) < 0.5).to(dev)
        q = torch.randn(self.nq, 1, G, generator=gen, dtype=dt).to(dev) * mask
        h = self.exact_kernel(q)
        outside = float(torch.linalg.norm(h[..., ~mask]))
        total = float(torch.linalg.norm(h))
        ratio = outside / max(total, 1e-300)
        return ratio if ratio > LOCALITY_RTOL else None

    def _build_local_kernel(self, force: bool = False) -> None:
        G = self.setup.ngrid
        dev, dt = self.psi_o.device, self.psi_o.dtype
        if not force:
            coupling = self._couples_points()
            if coupling is not None:
                self.local_error = coupling
                return
        eye = torch.zeros(self.nq, self.nq, G, device=dev, dtype=dt)
        for j in range(self.nq):
            eye[j, j] = 1.0
        cols = self.exact_kernel(eye)  # (nq [output i], nq [probe j], G)
        f = 0.5 * (cols + cols.transpose(0, 1))
        # check on physically shaped perturbations (random ov amplitudes), compared where
        # they matter: in the ov block of the response (a constant-tangent kernel absorbs any
        # coupling between points, which shows up here)
        gen = torch.Generator(device="cpu").manual_seed(1234)
        X = torch.randn(2, self.nvir, self.nocc, generator=gen, dtype=dt).to(dev)
        q = self.density_response(X)
        exact = self.potential_response(self.exact_kernel(q))
        approx = self.potential_response(_apply_point_kernel(f, q))
        err = float(torch.linalg.norm(exact - approx) / torch.linalg.norm(exact).clamp(min=1e-300))
        self.local_error = err
        if force or err <= LOCALITY_RTOL:
            self.f = f

    @property
    def local(self) -> bool:
        return self.f is not None

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """(n, nvir, nocc) XC part of C_vᵀ δF C_o."""
        if not self.kernel.grads:
            return torch.zeros_like(X)
        q = self.density_response(X)
        dEq = self.local_kernel(q) if self.local else self.exact_kernel(q)
        return self.potential_response(dEq)


#: relative size of the random admixture in the Davidson guess vectors
GUESS_NOISE = 1e-4
#: Ritz pairs carried beyond the requested ones
EXTRA_ROOTS = 3
#: guess unit vectors per requested root
GUESS_FACTOR = 2
#: iterations allowed to the search with the random admixture before the noise-free retry
NOISY_MAX_CYCLE = 30


def _davidson(matvec, diag: torch.Tensor, nroots: int, conv_tol: float, max_cycle: int,
              max_space: int | None = None, noise: float | None = None):
    """Lowest ``nroots`` eigenpairs of a symmetric operator (vectors as rows).

    Returns (eigenvalues, eigenvectors (nroots, N), converged (nroots,), iterations).

    The search carries ``nroots + EXTRA_ROOTS`` Ritz pairs and expands the space with the
    residuals of all of them, so a state whose first approximation ranks just above the
    ``nroots`` lowest is still refined instead of being missed; the guess unit vectors (the
    lowest diagonal elements, extended over ties |Δ| < 1e-5 relative so degenerate sets are
    never split) carry a small seeded random admixture (``GUESS_NOISE``) so that no symmetry
    block is unreachable. Both were needed for benzene's 4th/5th PBE singlets (a degenerate
    pair at 7.2019 eV that plain unit-vector Davidson skipped). ``noise`` overrides
    ``GUESS_NOISE`` (`tddft` retries with 0 when a noisy search does not converge)."""
    N = diag.shape[0]
    nroots = min(nroots, N)
    nwork = min(N, nroots + EXTRA_ROOTS)
    order = torch.argsort(diag)
    nguess = min(N, max(nwork + 2, GUESS_FACTOR * nroots))
    sd = diag[order]
    while nguess < N and float(sd[nguess] - sd[nguess - 1]) <= 1e-5 * max(1.0, abs(float(sd[nguess - 1]))):
        nguess += 1
    max_space = max_space or min(N, max(40, 12 * nwork, nguess + 2 * nwork))
    V = torch.zeros(nguess, N, dtype=diag.dtype, device=diag.device)
    V[torch.arange(nguess), order[:nguess]] = 1.0
    # a small seeded admixture of every amplitude: unit vectors of a symmetric molecule can
    # be orthogonal to a whole symmetry block, which a Davidson search then never reaches
    # (seen for benzene's 4th/5th PBE singlets); the noise gives every block a foothold
    gen = torch.Generator(device="cpu").manual_seed(20261122)
    noise = GUESS_NOISE if noise is None else noise
    V = V + noise * torch.randn(nguess, N, generator=gen, dtype=diag.dtype).to(diag.device) / N ** 0.5
    V = torch.linalg.qr(V.T).Q.T.contiguous()
    AV = matvec(V)
    conv = torch.zeros(nroots, dtype=torch.bool)
    e = x = None
    it = 0
    for it in range(1, max_cycle + 1):
        H = V @ AV.T
        H = 0.5 * (H + H.T)
        w, u = torch.linalg.eigh(H)
        nw = min(nwork, w.shape[0])
        e = w[:nw]
        uk = u[:, :nw].T  # (nw, m)
        x = uk @ V
        Ax = uk @ AV
        R = Ax - e[:, None] * x
        rnorm = torch.linalg.norm(R, dim=1)
        conv_w = rnorm < conv_tol
        conv = conv_w[:nroots]
        if bool(conv.all()) or V.shape[0] >= N:
            conv = conv | (V.shape[0] >= N)
            break
        denom = e[:, None] - diag[None, :]
        denom = torch.where(denom.abs() < 1e-8, torch.full_like(denom, 1e-8), denom)
        T = (R / denom)[~conv_w]
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
    return e[:nroots], x[:nroots], conv, it


def tddft(functional, scf_result, setup: MoleculeSetup, nstates: int = 5, tda: bool = False,
          conv_tol: float = 1e-6, max_cycle: int = 100, batched: bool | None = None,
          xc_response: str = "mo") -> TDDFTResult:
    """Singlet TDDFT (``tda=False``: Casida/RPA; ``tda=True``: Tamm–Dancoff) excitations.

    ``functional`` must be the one of ``scf_result`` and have no exact exchange.
    ``conv_tol``: Davidson residual norm (on the Hermitian problem; ω² units for RPA).
    ``batched``: Hessian-vector products of a Davidson iteration in one batched pass or a loop;
    None (default) = the shared engine's policy (`harness.xc.default_batched`).
    ``xc_response``: "mo" (default) builds the XC response in the occupied–virtual pair basis
    with a per-point kernel when the functional is point-local (`MOResponse`); "ao" uses the
    AO-basis feature build and one Hessian-vector product per trial vector (`XCKernel.apply`).
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
    kernel = XCHessian(functional, setup, P0, batched=batched)
    if xc_response not in ("mo", "ao"):
        raise ValueError(f"xc_response must be 'mo' or 'ao', got {xc_response!r}")
    mo_xc = MOResponse(kernel, setup, Co, Cv) if xc_response == "mo" else None
    t_kernel = time.perf_counter() - t0
    de = (eps[nocc:, None] - eps[None, :nocc])  # (nvir, nocc)
    de_flat = de.reshape(-1)
    counter = {"products": 0, "xc_response_s": 0.0}

    def response(x: torch.Tensor) -> torch.Tensor:
        """C_vᵀ δF[δP(x)] C_o for rows x (n, nvir*nocc) → (n, nvir*nocc)."""
        n = x.shape[0]
        X = x.reshape(n, nvir, nocc)
        T = Cv @ X @ Co.T
        dP = T + T.transpose(-1, -2)
        counter["products"] += n
        if mo_xc is None:
            dF = setup.coulomb_df(dP) + kernel.apply(dP)
            return (Cv.T @ dF @ Co).reshape(n, -1)
        t1 = time.perf_counter()
        out = Cv.T @ setup.coulomb_df(dP) @ Co + mo_xc(X)
        counter["xc_response_s"] += time.perf_counter() - t1
        return out.reshape(n, -1)

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

    # the noisy search gets NOISY_MAX_CYCLE iterations, then a noise-free one the full budget
    w, vecs, conv, iters = _davidson(matvec, diag, nstates, conv_tol,
                                     min(max_cycle, NOISY_MAX_CYCLE) if GUESS_NOISE > 0 else max_cycle)
    retried = False
    if not bool(conv.all()) and GUESS_NOISE > 0:
        # the random admixture can stall a root (seen for HCN and CS2 with a trained meta-GGA);
        # a second search from plain unit vectors then converges
        w2, vecs2, conv2, iters2 = _davidson(matvec, diag, nstates, conv_tol, max_cycle, noise=0.0)
        retried = True
        if bool(conv2.all()) or int(conv2.sum()) > int(conv.sum()):
            w, vecs, conv = w2, vecs2, conv2
        iters += iters2
    unstable = None
    if tda:
        omega = w
        xpy = vecs
    else:
        unstable = (w < 0).cpu()
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
        iterations=iters, excitation_energies_Eh=omega, xpy=xpy.reshape(-1, nvir, nocc), tda=tda, unstable=unstable,
        wall_s=time.perf_counter() - t_all,
        timings={"kernel_setup_s": t_kernel, "hvp_s": kernel.hvp_s, "products": counter["products"],
                 "hvp_batched": kernel.batched, "hvp_calls": kernel.products, "xc_response": xc_response, "guess_retry": retried,
                 "response_s": counter["xc_response_s"],
                 "local_kernel": None if mo_xc is None else mo_xc.local,
                 "locality_error": None if mo_xc is None else mo_xc.local_error},
    )


class TDDFTError(HarnessError, RuntimeError):
    """The Davidson solver did not converge (the message names the molecule and the states)."""


#: Settings of metric 6 (PROTOCOL §3): full Casida TDDFT, singlets, Davidson residual tolerance.
EXCITATION_METRIC_SETTINGS = {"method": "singlet TDDFT (full Casida, not TDA), harness driver",
                              "conv_tol": 1e-6, "max_cycle": 100}


def excitations_hook(functional, setup: MoleculeSetup, scf_result, record) -> list[float] | None:
    """Metric-6 stage for `harness.evaluate`: the model's lowest singlet excitation energies (eV)
    at its own SCF solution, as many states as the reference holds; None when the reference
    geometry has no excitations (distorted conformers). Raises `TDDFTError` when Davidson does
    not converge or a state is unstable (ω² < 0)."""
    ref = getattr(record, "excitation_energies_eV", None)
    if ref is None or len(ref) == 0:
        return None
    nstates = len(ref)
    r = tddft(functional, scf_result, setup, nstates=nstates, tda=False,
              conv_tol=EXCITATION_METRIC_SETTINGS["conv_tol"], max_cycle=EXCITATION_METRIC_SETTINGS["max_cycle"])
    if not bool(r.converged.all()):
        bad = [i + 1 for i, c in enumerate(r.converged.tolist()) if not c]
        raise TDDFTError(f"{setup.name}: TDDFT (Davidson) did not converge for state(s) {bad} within "
                         f"{EXCITATION_METRIC_SETTINGS['max_cycle']} iterations "
                         f"(residual tolerance {EXCITATION_METRIC_SETTINGS['conv_tol']:g})")
    if r.unstable is not None and bool(r.unstable.any()):
        bad = [i + 1 for i, u in enumerate(r.unstable.tolist()) if u]
        raise TDDFTError(f"{setup.name}: unstable TDDFT: omega^2 < 0 for state(s) {bad} (the model's ground state "
                         "is not a minimum); no excitation energies are reported")
    return [float(e) for e in r.excitation_energies_eV.cpu()]


#: recorded in summary.json provenance by `harness.evaluate`
excitations_hook.settings = EXCITATION_METRIC_SETTINGS


__all__ = ["EXCITATION_METRIC_SETTINGS", "HARTREE_EV", "MOResponse", "TDDFTError", "TDDFTResult", "XCKernel",
           "excitations_hook", "tddft"]
