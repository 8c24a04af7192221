"""``egxc``: a semi-local base modulated by an equivariant graph network over a nuclei-centred
point-cloud embedding of the density.

Reference: N. Gao, E. Eberhard and S. Günnemann, "Learning equivariant non-local electron
density functionals", ICLR 2025 (EG-XC). That work embeds the electron density into
features on a point cloud centred at the nuclei, processes them with an equivariant graph
neural network and reads the result back to the integration grid as a non-local correction
to a semi-local functional. This module is the harness's own, small implementation of that
idea (scalar and vector, l = 0 and l = 1, features); the details below are ours.

Functional form
---------------
1. Semi-local inputs x_g = (u_ρ, ζ², u_s, u_α) (bounded maps of ρ^{1/3}, ζ², s², α).
2. Point-cloud embedding on the nuclei: with K radial Gaussians b_k(r) (0..4 bohr, smooth
   cutoff 6 bohr) and the unit vector r̂_gA from nucleus A to grid point g, moments of the
   density fields (all linear in the density matrix)

       s_{A,k,f} = Σ_g w_g b_k(|r_g − R_A|) f(r_g),  f ∈ {ρ, τ, ∇ρ·r̂_gA}      (l = 0, invariant)
       v_{A,k,f} = Σ_g w_g b_k(|r_g − R_A|) F(r_g),  F ∈ {ρ r̂_gA, τ r̂_gA, ∇ρ}  (l = 1, equivariant)

   are mixed into C channels (s_c = Σ_f W_cf s_f; v_c = Σ_f U_cf v_f, no bias, so v stays
   equivariant) and squashed: v̄ = v / sqrt(1 + |v|²) (|v̄| < 1, equivariant). Node scalars
   h_A = SiLU(W [asinh s, |v̄|²] + E[Z_A]) (E an element embedding, Z ≤ 36) and J node vectors
   V_A = Σ_{k,c} P_{j,kc} v̄_{A,k,c}. (Linear moments keep the XC kernel of the non-local part
   smooth and low-rank; a density weighting that is non-linear in local features adds kernel
   terms growing like 1/ρ in density tails.)
3. Equivariant message passing (T rounds) over atom pairs with unit vector r̂_AB, edge
   radial basis e(R_AB) (up to 6 bohr) and smooth cutoff f(R_AB) (10 bohr):
       m_AB = SiLU(W_m [h_B, e(R_AB), V_A·r̂_AB, V_B·r̂_AB, V_A·V_B] + b_m)   (invariant)
       h_A ← h_A + SiLU(W_u [h_A, Σ_B f m_AB] + b_u)
       V_A ← V_A + Σ_B f (a(m_AB) r̂_AB + c(m_AB) ⊙ V_B)                   (equivariant)
4. Read-out to the grid (invariant by a proper product of two l = 1 quantities):
       u_{g,j} = Σ_A Σ_k b_k(|r_g − R_A|) [ S_{A,k,j} + T_{A,k,j} · r̂_gA ],
   S = W_s h_A + b_s (scalars), T_{A,k,j} = Σ_i P_{kj,i} V_{A,i} (vectors).
5. e_xc = e_xc^base(r_g) · (1 + λ tanh N([x_g, u_g])), λ = 0.5.

E_xc is invariant under rotations, reflections, translations and atom permutations; every
step is smooth in the density (twice differentiable) and costs O(G x natm) (pair steps are
O(natm²), independent of G).

Initialisation: N's last layer is zero, so the factor is exactly 1 and the model equals its
base functional. Physical base (default): PBE (``harness.functionals.PBE``); ``base`` may
also be "tpss" or "lda".

Parameter counts (float64; C channels, K radial functions, H node scalars, J node vectors,
T rounds, J_o read-out channels, head MLP):
* ``quick``: C=4, K=6, H=8, J=4, T=1, J_o=4, head (8→16→16→1): **1,977**
* ``full``:  C=8, K=12, H=32, J=16, T=2, J_o=16, head (20→64→64→64→1): **39,921**
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import silu

from ._common import (
    MLP,
    SEMILOCAL_FEATURES,
    atom_geometry,
    atom_pairs,
    base_energy_density,
    check_base,
    density_moments,
    semilocal_inputs,
)

__all__ = ["EGXC"]


class _EqRound(nn.Module):
    """One equivariant message-passing round on (scalars h (A, H), vectors V (A, J, 3))."""

    def __init__(self, hidden: int, vectors: int, n_edge: int):
        super().__init__()
        self.msg = nn.Linear(hidden + n_edge + 3 * vectors, hidden)
        self.vcoef = nn.Linear(hidden, 2 * vectors)
        self.upd = nn.Linear(2 * hidden, hidden)
        self.vectors = vectors

    def forward(self, h: Tensor, V: Tensor, e: Tensor, cut: Tensor, rhat: Tensor):
        A, H = h.shape
        J = self.vectors
        va_r = torch.einsum("ajx,abx->abj", V, rhat)  # V_a · r̂_ab
        vb_r = torch.einsum("bjx,abx->abj", V, rhat)  # V_b · r̂_ab
        vv = torch.einsum("ajx,bjx->abj", V, V)  # V_a · V_b
        hb = h.unsqueeze(0).expand(A, A, H)
        m = silu(self.msg(torch.cat([hb, e, va_r, vb_r, vv], dim=-1)))  # (A, A, H), b -> a
        w = cut.unsqueeze(-1)
        coef = self.vcoef(m) * w  # (A, A, 2J)
        a, c = coef[..., :J], coef[..., J:]
        dV = torch.einsum("abj,abx->ajx", a, rhat) + torch.einsum("abj,bjx->ajx", c, V)
        agg = (w * m).sum(1)
        h = h + silu(self.upd(torch.cat([h, agg], dim=-1)))
        return h, V + dV


class EGXC(nn.Module):
    """Base functional × (1 + λ tanh N), N fed by an equivariant nuclei-centred density graph."""

    features = list(SEMILOCAL_FEATURES) + ["grid_coords", "atomic_coords", "atomic_numbers"]
    PRESETS = {
        "quick": dict(channels=4, radial=6, hidden=8, vectors=4, rounds=1, readout=4, head=(16, 16)),
        "full": dict(channels=8, radial=12, hidden=32, vectors=16, rounds=2, readout=16, head=(64, 64, 64)),
    }
    N_PARAMS = {"quick": 1977, "full": 39921}
    MAX_Z = 36

    def __init__(self, channels: int = 4, radial: int = 6, hidden: int = 8, vectors: int = 4, rounds: int = 1,
                 readout: int = 4, head=(16, 16), r_max: float = 4.0, r_cut: float = 6.0, edge_radial: int = 6,
                 edge_r_max: float = 6.0, edge_cut: float = 10.0, bound: float = 0.5, base: str = "pbe"):
        super().__init__()
        self.base = check_base(base)
        self.bound = float(bound)
        self.channels, self.radial, self.vectors, self.readout_dim = channels, radial, vectors, readout
        self.r_max, self.r_cut = float(r_max), float(r_cut)
        self.edge_radial, self.edge_r_max, self.edge_cut = edge_radial, float(edge_r_max), float(edge_cut)
        kc = radial * channels
        self.mix_s = nn.Linear(3, channels, bias=False)
        self.mix_v = nn.Parameter(torch.randn(channels, 3) / math.sqrt(3.0))
        self.embed = nn.Linear(2 * kc, hidden)
        self.z_embed = nn.Embedding(self.MAX_Z + 1, hidden)
        nn.init.normal_(self.z_embed.weight, std=0.1)
        self.vec_mix = nn.Parameter(torch.randn(vectors, kc) / math.sqrt(kc))
        self.rounds = nn.ModuleList(_EqRound(hidden, vectors, edge_radial) for _ in range(rounds))
        self.read_s = nn.Linear(hidden, radial * readout)
        self.read_v = nn.Parameter(torch.randn(radial * readout, vectors) / math.sqrt(vectors))
        self.head = MLP([4 + readout, *head, 1])

    def nonlocal_features(self, features: dict[str, Tensor], x: Tensor) -> Tensor:
        """u (G, J_o): invariant read-out of the equivariant nuclei-centred graph."""
        coords, R = features["grid_coords"], features["atomic_coords"].to(x.dtype)
        B, D = atom_geometry(coords, R, self.radial, self.r_max, self.r_cut)  # (A, G, K), (A, G, 4)
        A, G, K = B.shape
        C = self.channels
        s, v = density_moments(features, B, D, vectors=True)  # (A, K, 3), (A, K, 3, 3)
        s = self.mix_s(s)  # (A, K, C)
        v = torch.einsum("cf,akfx->akcx", self.mix_v, v)  # (A, K, C, 3)
        vbar = v / torch.sqrt(1.0 + (v * v).sum(-1, keepdim=True))  # |v̄| < 1; equivariant
        inv = torch.cat([torch.asinh(s).reshape(A, -1), (vbar * vbar).sum(-1).reshape(A, -1)], dim=-1)
        Z = features["atomic_numbers"].to(device=x.device).long().clamp(0, self.MAX_Z)
        h = silu(self.embed(inv) + self.z_embed(Z))
        V = torch.einsum("jm,amx->ajx", self.vec_mix, vbar.reshape(A, K * C, 3))
        e, cut, rhat = atom_pairs(R, self.edge_radial, self.edge_r_max, self.edge_cut)
        for rnd in self.rounds:
            h, V = rnd(h, V, e, cut, rhat)
        Jo = self.readout_dim
        S = self.read_s(h).reshape(A, K, Jo, 1)
        T = torch.einsum("mi,aix->amx", self.read_v, V).reshape(A, K, Jo, 3)
        ST = torch.cat([S, T], dim=-1).reshape(A, K, Jo * 4)
        Y = (B @ ST).reshape(A, G, Jo, 4)
        return (Y * D.unsqueeze(2)).sum(-1).sum(0)  # (G, J_o)

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        """e_xc per volume (G,)."""
        x = semilocal_inputs(features).x
        u = self.nonlocal_features(features, x)
        delta = self.head(torch.cat([x, u], dim=-1)).squeeze(-1)
        return base_energy_density(self.base, features) * (1.0 + self.bound * torch.tanh(delta))

    def get_exc(self, features: dict[str, Tensor]) -> Tensor:
        return (self.get_exc_density(features) * features["grid_weights"]).sum()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.get_exc(features)
