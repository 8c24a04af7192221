"""Feature builder: AO values on the grid and a closed-shell density matrix → contract features.

For a total (closed-shell) density matrix P, with φ the AOs and ∂_k φ their derivatives,

    ρ     = Σ_mn P_mn φ_m φ_n                        = Σ_n X_n φ_n,          X = φ P
    ∇_k ρ = Σ_mn P_mn (∂_k φ_m φ_n + φ_m ∂_k φ_n)    = 2 Σ_n X_n ∂_k φ_n      (P symmetric)
    τ     = ½ Σ_k Σ_mn P_mn ∂_k φ_m ∂_k φ_n          = ½ Σ_k Σ_n Z_kn ∂_k φ_n, Z_k = ∂_k φ P

and each spin channel gets half: ``density`` = (ρ/2, ρ/2), ``grad`` = (∇ρ/2, ∇ρ/2),
``kin`` = (τ/2, τ/2) with τ_σ = ½ Σ_i |∇φ_iσ|².

The map P → features is linear, so the same routine gives the linearised features of
perturbations dP. Every routine accepts a leading batch axis: P of shape (nao, nao) or
(n, nao, nao) gives features with the same leading axis ((2, G) or (n, 2, G), …).
P is symmetrised first (only its symmetric part enters ρ, ∇ρ and τ).

`contract_features` is the adjoint: given ∂E/∂features it returns ∂E/∂P_mn,

    V_mn = Σ_g [ a φ_m φ_n + Σ_k b_k (∂_k φ_m φ_n + φ_m ∂_k φ_n) + c Σ_k ∂_k φ_m ∂_k φ_n ]

    a = (∂E/∂ρ_α + ∂E/∂ρ_β)/2,  b_k = (∂E/∂∇_kρ_α + ∂E/∂∇_kρ_β)/2,  c = (∂E/∂τ_α + ∂E/∂τ_β)/4.

Both sweep the grid in the blocks of `MoleculeSetup.ao_blocks` (one matmul with the AO
block per sweep, a few elementwise products), so no G×nao² array is ever formed.
"""

from __future__ import annotations

import torch

from harness.integrals import MoleculeSetup

#: density-dependent feature names this module builds
DENSITY_FEATURE_NAMES = ("density", "grad", "kin")


def _flatten_batch(P: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    if P.dim() < 2 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"density matrix must be (..., nao, nao), got {tuple(P.shape)}")
    lead = tuple(P.shape[:-2])
    return P.reshape((-1,) + tuple(P.shape[-2:])), lead


def _totals(rho, grad, tau) -> dict[str, torch.Tensor]:
    """The totals dict of the features that were built (grad/tau None when not asked for)."""
    out = {"rho": rho}
    if grad is not None:
        out["grad_rho"] = grad
    if tau is not None:
        out["tau"] = tau
    return out


def _needs(names) -> tuple[bool, bool]:
    names = set(names)
    return ("grad" in names), ("kin" in names)


class _Workspace:
    """Reusable per-sweep scratch tensors: every block's temporaries are views of a few
    buffers sized for the largest block, so the sweep does not fault in fresh pages per block
    (on CPU that costs as much as the arithmetic for the larger temporaries)."""

    def __init__(self, device, dtype):
        self.device, self.dtype = device, dtype
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, device=self.device, dtype=self.dtype)
            self._bufs[key] = buf
        return buf[:n].view(shape)


@torch.no_grad()
def orbital_features(setup: MoleculeSetup, C_occ: torch.Tensor, names=DENSITY_FEATURE_NAMES) -> dict[str, torch.Tensor]:
    """Total-density features of P = 2 C_occ C_occᵀ from the occupied orbitals (nao, nocc).

    Same result as `total_features` (batch axis of 1). Per block one matmul gives the
    orbitals and their gradients, ψ_ci(g) = Σ_n C_ni ∂_cφ_n(g) (c = value, ∂x, ∂y, ∂z), as
    Cᵀ·φ_c so that the short nocc axis is the matmul's row count; then
    ρ = 2 Σ_i ψ_0i², ∇_kρ = 4 Σ_i ψ_0i ψ_ki, τ = Σ_k Σ_i ψ_ki².
    """
    want_grad, want_tau = _needs(names)
    if (want_grad or want_tau) and setup.ao_deriv < 1:
        raise ValueError(f"{setup.name}: the setup holds no AO derivatives (built for LDA only)")
    dev, dt = setup.device, setup.dtype
    Ct = C_occ.to(device=dev, dtype=dt).T.contiguous()  # (nocc, nao)
    nocc = Ct.shape[0]
    G = setup.ngrid
    nc = 4 if (want_grad or want_tau) else 1
    ws = _Workspace(dev, dt)
    S = torch.empty(nc, G, device=dev, dtype=dt)  # S[c, g] = Σ_i ψ_0i ψ_ci: ρ/2 and ∇ρ/4
    tau = torch.empty(G, device=dev, dtype=dt) if want_tau else None
    for blk in setup.ao_blocks:
        ao = blk.ao[:nc]  # (nc, nb, Gb)
        _, nb, Gb = ao.shape
        sl = slice(blk.start, blk.stop)
        Cb = Ct if blk.idx is None else Ct.index_select(1, blk.idx)
        psi = torch.matmul(Cb, ao, out=ws.get("psi", (nc, nocc, Gb)))
        prod = torch.mul(psi, psi[0], out=ws.get("prod", (nc, nocc, Gb)))
        torch.sum(prod, dim=1, out=S[:, sl])
        if want_tau:
            d = psi[1:]
            torch.sum(torch.mul(d, d, out=prod[1:]), dim=(0, 1), out=tau[sl])
    rho = (2.0 * S[0]).unsqueeze(0)
    grad = (4.0 * S[1:]).unsqueeze(0) if want_grad else None
    return _totals(rho, grad, tau.unsqueeze(0) if want_tau else None)


@torch.no_grad()
def total_features(setup: MoleculeSetup, P: torch.Tensor, names=DENSITY_FEATURE_NAMES) -> dict[str, torch.Tensor]:
    """Total-density features (ρ, ∇ρ, τ) of P: ``rho`` (B, G), ``grad_rho`` (B, 3, G),
    ``tau`` (B, G) with B the flattened batch (1 for a single matrix). Only those needed by
    ``names`` (``density`` is always built).

    Per block: one matmul X_b = P_b φ (all B matrices stacked), then products with
    (φ, ∂xφ, ∂yφ, ∂zφ) summed over the AOs, vectorised along the grid; τ needs
    Z_k = P ∂_kφ too (three more matmuls).
    """
    Pf, _ = _flatten_batch(P)
    Pf = 0.5 * (Pf + Pf.transpose(-1, -2))
    want_grad, want_tau = _needs(names)
    if (want_grad or want_tau) and setup.ao_deriv < 1:
        raise ValueError(f"{setup.name}: the setup holds no AO derivatives (built for LDA only)")
    B = Pf.shape[0]
    G = setup.ngrid
    dev, dt = setup.device, setup.dtype
    Pf = Pf.to(device=dev, dtype=dt)
    ws = _Workspace(dev, dt)
    nc = 4 if want_grad else 1
    # s[c, b, g] = Σ_n ∂_cφ_n X_bn: c = 0 gives ρ, c = k gives ½∇_kρ
    s = torch.empty(nc, B, G, device=dev, dtype=dt)
    tau = torch.zeros(B, G, device=dev, dtype=dt) if want_tau else None
    for blk in setup.ao_blocks:
        ao = blk.ao  # (ncomp, nb, Gb)
        _, nb, Gb = ao.shape
        sl = slice(blk.start, blk.stop)
        Pb = Pf if blk.idx is None else Pf.index_select(1, blk.idx).index_select(2, blk.idx)
        Pb = Pb.reshape(B * nb, nb)
        X = torch.mm(Pb, ao[0], out=ws.get("X", (B * nb, Gb))).view(B, nb, Gb)
        prod = ws.get("prod", (B, nb, Gb))
        for c in range(nc):
            torch.sum(torch.mul(X, ao[c], out=prod), dim=1, out=s[c, :, sl])
        if want_tau:
            for k in range(1, 4):
                Z = torch.mm(Pb, ao[k], out=ws.get("X", (B * nb, Gb))).view(B, nb, Gb)
                tau[:, sl] += 0.5 * torch.mul(Z, ao[k], out=prod).sum(1)
    rho = s[0]
    grad = 2.0 * s[1:].transpose(0, 1) if want_grad else None
    return _totals(rho, grad, tau)


def spin_features(total: dict[str, torch.Tensor], lead: tuple[int, ...], names=DENSITY_FEATURE_NAMES) -> dict[str, torch.Tensor]:
    """Split totals into the contract's (α, β) halves and restore the batch shape ``lead``."""
    out = {}
    names = set(names)
    if "density" in names:
        h = 0.5 * total["rho"]
        out["density"] = torch.stack([h, h], dim=1).reshape(lead + (2, h.shape[-1]))
    if "grad" in names:
        h = 0.5 * total["grad_rho"]
        out["grad"] = torch.stack([h, h], dim=1).reshape(lead + (2, 3, h.shape[-1]))
    if "kin" in names:
        h = 0.5 * total["tau"]
        out["kin"] = torch.stack([h, h], dim=1).reshape(lead + (2, h.shape[-1]))
    return out


def build_features(setup: MoleculeSetup, P: torch.Tensor, names=DENSITY_FEATURE_NAMES,
                   C_occ: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Contract features (``density``, ``grad``, ``kin`` — those in ``names``) of P (…, nao, nao).

    ``C_occ``: optional occupied orbitals with P = 2 C_occ C_occᵀ (single P only); when
    given, the cheaper `orbital_features` path is used (P itself is then not read).
    """
    names = [n for n in names if n in DENSITY_FEATURE_NAMES]
    if C_occ is not None:
        return spin_features(orbital_features(setup, C_occ, names), (), names)
    _, lead = _flatten_batch(P)
    tot = total_features(setup, P, names)
    return spin_features(tot, lead, names)


def feature_coefficients(setup: MoleculeSetup, dE: dict[str, torch.Tensor]) -> tuple:
    """∂E/∂features (contract shapes, optional batch axis) → per-point coefficients
    (a (B,G), b (B,3,G) or None, c (B,G) or None, lead)."""
    a = b = c = None
    lead = None
    if dE.get("density") is not None:
        d = dE["density"]
        lead = tuple(d.shape[:-2])
        a = (0.5 * (d[..., 0, :] + d[..., 1, :])).reshape(-1, d.shape[-1])
    if dE.get("grad") is not None:
        d = dE["grad"]
        lead = tuple(d.shape[:-3])
        b = (0.5 * (d[..., 0, :, :] + d[..., 1, :, :])).reshape(-1, 3, d.shape[-1])
    if dE.get("kin") is not None:
        d = dE["kin"]
        lead = tuple(d.shape[:-2])
        c = (0.25 * (d[..., 0, :] + d[..., 1, :])).reshape(-1, d.shape[-1])
    if lead is None:
        raise ValueError("no density-dependent feature derivative given")
    return a, b, c, lead


@torch.no_grad()
def contract_coefficients(setup: MoleculeSetup, a, b=None, c=None) -> torch.Tensor:
    """V (B, nao, nao) from per-point coefficients a (B, G), b (B, 3, G), c (B, G) (see module doc).

    Per block: W_b = ½a_b φ + Σ_k b_bk ∂_kφ (products along the grid), one matmul
    M = φ [W_1 … W_B]ᵀ, and with c three more, ∂_kφ [½c_b ∂_kφ]ᵀ; V = M + Mᵀ.
    """
    ref = a if a is not None else (b if b is not None else c)
    B = ref.shape[0]
    if (b is not None or c is not None) and setup.ao_deriv < 1:
        raise ValueError(f"{setup.name}: the setup holds no AO derivatives (built for LDA only)")
    nao = setup.nao
    dev, dt = setup.device, setup.dtype
    G = setup.ngrid
    # per-point coefficients of (φ, ∂xφ, ∂yφ, ∂zφ) in W: (ncoef, B, G)
    ncoef = 4 if b is not None else 1
    coef = torch.zeros(ncoef, B, G, device=dev, dtype=dt)
    if a is not None:
        coef[0] = 0.5 * a.to(dev, dt)
    if b is not None:
        coef[1:] = b.to(dev, dt).transpose(0, 1)
    half_c = None if c is None else (0.5 * c).to(dev, dt)  # (B, G)
    V = torch.zeros(B, nao, nao, device=dev, dtype=dt)
    Vflat = V.view(B, nao * nao)
    ws = _Workspace(dev, dt)
    for blk in setup.ao_blocks:
        ao = blk.ao  # (ncomp, nb, Gb)
        _, nb, Gb = ao.shape
        sl = slice(blk.start, blk.stop)
        W = ws.get("W", (B, nb, Gb))
        torch.mul(ao[0], coef[0, :, sl].unsqueeze(1), out=W)
        for k in range(1, ncoef):
            W.addcmul_(ao[k], coef[k, :, sl].unsqueeze(1))
        M = torch.mm(ao[0], W.view(B * nb, Gb).T, out=ws.get("M", (nb, B * nb)))
        if half_c is not None:
            for k in range(1, 4):
                Y = torch.mul(ao[k], half_c[:, sl].unsqueeze(1), out=W)  # ½c ∂_kφ
                M.addmm_(ao[k], Y.view(B * nb, Gb).T)
        if B == 1:
            if blk.idx is None:
                V[0] += M
            else:
                Vflat[0].index_add_(0, blk.pairs(nao), M.reshape(-1))
            continue
        M = M.view(nb, B, nb).transpose(0, 1)  # (B, nb, nb)
        if blk.idx is None:
            V += M
        else:
            Vflat.index_add_(1, blk.pairs(nao), M.reshape(B, nb * nb))
    return V + V.transpose(-1, -2)


def contract_features(setup: MoleculeSetup, dE: dict[str, torch.Tensor]) -> torch.Tensor:
    """Adjoint of `build_features`: ∂E/∂features → ∂E/∂P (…, nao, nao), same batch axis."""
    a, b, c, lead = feature_coefficients(setup, dE)
    V = contract_coefficients(setup, a, b, c)
    return V.reshape(lead + (setup.nao, setup.nao))
