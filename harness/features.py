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


def _block_matrix(P: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """(B, nao, nao) → (nb, B*nb): the block's sub-matrices side by side."""
    if idx is not None:
        P = P.index_select(1, idx).index_select(2, idx)
    B, nb, _ = P.shape
    if B == 1:
        return P[0]
    return P.transpose(0, 1).reshape(nb, B * nb)


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


@torch.no_grad()
def orbital_features(setup: MoleculeSetup, C_occ: torch.Tensor, names=DENSITY_FEATURE_NAMES) -> dict[str, torch.Tensor]:
    """Total-density features of P = 2 C_occ C_occᵀ from the occupied orbitals (nao, nocc).

    Same result as `total_features` (batch axis of 1) but cheaper when nocc < nao: one
    matmul ψ_c = ∂_cφ C_occ per block (c = value, ∂x, ∂y, ∂z) and one batched product of
    the small per-point (ncomp, nocc) arrays: S_cd = Σ_i ψ_ci ψ_di, then
    ρ = 2 S_00, ∇_kρ = 4 S_0k, τ = Σ_k S_kk.
    """
    want_grad, want_tau = _needs(names)
    if (want_grad or want_tau) and setup.ao_deriv < 1:
        raise ValueError(f"{setup.name}: the setup holds no AO derivatives (built for LDA only)")
    dev, dt = setup.device, setup.dtype
    C = C_occ.to(device=dev, dtype=dt)
    G = setup.ngrid
    nc = 4 if (want_grad or want_tau) else 1
    # S[g, c, d]: d = 0 only unless τ is wanted
    nd = nc if want_tau else 1
    S = torch.empty(G, nc, nd, device=dev, dtype=dt)
    for blk in setup.ao_blocks:
        ao = blk.ao
        Gb, _, nb = ao.shape
        Cb = C if blk.idx is None else C.index_select(0, blk.idx)
        if nc == 4:
            psi = (ao.view(Gb * 4, nb) @ Cb).view(Gb, 4, -1)
        else:
            psi = (ao[:, 0, :] @ Cb).unsqueeze(1)
        rhs = psi.transpose(1, 2) if want_tau else psi[:, 0, :].unsqueeze(-1)
        torch.bmm(psi, rhs, out=S[blk.start:blk.stop])
    rho = (2.0 * S[:, 0, 0]).unsqueeze(0)
    grad = (4.0 * S[:, 1:, 0].T).unsqueeze(0) if want_grad else None
    tau = S[:, 1:, 1:].diagonal(dim1=1, dim2=2).sum(-1).unsqueeze(0) if want_tau else None
    return _totals(rho, grad, tau)


@torch.no_grad()
def total_features(setup: MoleculeSetup, P: torch.Tensor, names=DENSITY_FEATURE_NAMES) -> dict[str, torch.Tensor]:
    """Total-density features (ρ, ∇ρ, τ) of P: ``rho`` (B, G), ``grad_rho`` (B, 3, G),
    ``tau`` (B, G) with B the flattened batch (1 for a single matrix). Only those needed by
    ``names`` (``density`` is always built)."""
    Pf, _ = _flatten_batch(P)
    Pf = 0.5 * (Pf + Pf.transpose(-1, -2))
    want_grad, want_tau = _needs(names)
    if (want_grad or want_tau) and setup.ao_deriv < 1:
        raise ValueError(f"{setup.name}: the setup holds no AO derivatives (built for LDA only)")
    B = Pf.shape[0]
    G = setup.ngrid
    dev, dt = setup.device, setup.dtype
    Pf = Pf.to(device=dev, dtype=dt)
    nc = 4 if want_grad else 1
    # s[g, c, b] = Σ_n ∂_cφ_n X_bn with X_b = φ P_b: c = 0 gives ρ, c = k gives ½∇_kρ
    s = torch.empty(G, nc, B, device=dev, dtype=dt)
    tau = torch.zeros(B, G, device=dev, dtype=dt) if want_tau else None
    for blk in setup.ao_blocks:
        ao = blk.ao  # (Gb, c, nb)
        Gb, c, nb = ao.shape
        Pb = _block_matrix(Pf, blk.idx)  # (nb, B*nb)
        sl = slice(blk.start, blk.stop)
        if want_tau:
            XX = (ao.view(Gb * c, nb) @ Pb).view(Gb, c, B, nb)
            X = XX[:, 0]
        else:
            X = (ao[:, 0, :] @ Pb).view(Gb, B, nb)
        torch.bmm(ao[:, :nc, :], X.transpose(1, 2), out=s[sl])
        if want_tau:
            t = (ao[:, 1:].unsqueeze(2) * XX[:, 1:]).sum(-1).sum(1)  # (Gb, B)
            tau[:, sl] = 0.5 * t.T
    rho = s[:, 0, :].T
    grad = 2.0 * s[:, 1:, :].permute(2, 1, 0) if want_grad else None
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


def _pair_points(coef: torch.Tensor) -> torch.Tensor:
    """(G, B, 4) per-point coefficients → (G//2, 2B, 8): for each pair of consecutive points
    the block-diagonal matrix diag(coef_g, coef_g+1) (zeros elsewhere; a trailing odd point is
    dropped, callers fall back to the per-point product there).

    Why: for a (B × 4)·(4 × nb) product per point, torch's CPU ``bmm`` takes an unblocked
    loop (≈3× slower than streaming the AO data); pairing points doubles the per-item size,
    which selects the BLAS batched path. The extra zeros cost nothing measurable.
    """
    G, B, n4 = coef.shape
    h = G // 2
    out = coef.new_zeros(h, 2, B, 2, n4)
    c = coef[: 2 * h].view(h, 2, B, n4)
    out[:, 0, :, 0] = c[:, 0]
    out[:, 1, :, 1] = c[:, 1]
    return out.view(h, 2 * B, 2 * n4)


@torch.no_grad()
def contract_coefficients(setup: MoleculeSetup, a, b=None, c=None) -> torch.Tensor:
    """V (B, nao, nao) from per-point coefficients a (B, G), b (B, 3, G), c (B, G) (see module doc).

    Per block: W = ½a φ + Σ_k b_k ∂_kφ as one batched (1 × 4)·(4 × nb) product per point,
    then one matmul φᵀ W (and, with c, the ∂_kφᵀ (½c ∂_kφ) terms in the same matmul);
    V = M + Mᵀ.
    """
    ref = a if a is not None else (b if b is not None else c)
    B = ref.shape[0]
    if (b is not None or c is not None) and setup.ao_deriv < 1:
        raise ValueError(f"{setup.name}: the setup holds no AO derivatives (built for LDA only)")
    nao = setup.nao
    dev, dt = setup.device, setup.dtype
    G = setup.ngrid
    # per-point coefficients of (φ, ∂xφ, ∂yφ, ∂zφ) in W: (G, B, ncoef)
    ncoef = 4 if b is not None else 1
    coef = torch.zeros(G, B, ncoef, device=dev, dtype=dt)
    if a is not None:
        coef[:, :, 0] = 0.5 * a.to(dev, dt).T
    if b is not None:
        coef[:, :, 1:] = b.to(dev, dt).permute(2, 0, 1)
        coef2 = _pair_points(coef)
    cT = None if c is None else (0.5 * c).to(dev, dt).T.contiguous()  # (G, B)
    V = torch.zeros(B, nao, nao, device=dev, dtype=dt)
    Vflat = V.view(B, nao * nao)
    for blk in setup.ao_blocks:
        ao = blk.ao  # (Gb, nc, nb)
        Gb, nc, nb = ao.shape
        sl = slice(blk.start, blk.stop)
        if ncoef == 4 and Gb % 2 == 0 and blk.start % 2 == 0:
            # two points per batched product: (2B × 8)·(8 × nb), block-diagonal left factor
            W0 = torch.bmm(coef2[blk.start // 2:blk.stop // 2], ao.view(Gb // 2, 8, nb)).view(Gb, B, nb)
        elif ncoef == 4:
            W0 = torch.bmm(coef[sl], ao)  # (Gb, B, nb)
        else:
            W0 = coef[sl] * ao[:, 0, :].unsqueeze(1)
        if cT is not None:
            W = torch.empty(Gb, 4, B, nb, device=dev, dtype=dt)
            W[:, 0] = W0
            torch.mul(cT[sl].view(Gb, 1, B, 1), ao[:, 1:].unsqueeze(2), out=W[:, 1:])  # ½c ∂_kφ
            M = ao.view(Gb * nc, nb).T @ W.view(Gb * 4, B * nb)  # (nb, B*nb)
        else:
            M = ao[:, 0, :].T @ W0.view(Gb, B * nb)
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
