"""``nlmp``: semi-local features plus non-local message passing through atom-centred points.

**This is not Skala.** It is the harness's own small baseline architecture in the spirit of
G. Luise et al., "Accurate and scalable exchange-correlation with deep learning" (Microsoft
Research, 2025; the Skala functional), trained here from scratch. The real, trained Skala is
scored as a submission of its own (``submissions/skala-1.0``). Skala combines a network on
meta-GGA features of each grid point with a non-local part that gathers information from the
grid onto a coarse set of atom-centred points, exchanges it between those points and sends it
back to the grid; its cost grows like (grid points) x (atoms). This module is the harness's
own, much smaller implementation of that idea (invariant, scalar channels only); the details
below are ours.

Functional form
---------------
1. Semi-local inputs per grid point, x_g = (u_ρ, ζ², u_s, u_α) (bounded maps of ρ^{1/3}, ζ²,
   s², α; see ``harness.architectures._common``).
2. Grid → atoms: K radial Gaussians b_k(|r − R_A|) (centres 0..4 bohr, smooth cutoff at
   6 bohr) give per-atom moments of three density fields f = ρ, τ, ∇ρ·r̂_gA (r̂_gA the unit
   vector from nucleus A to grid point g), mixed into C learned channels:

       m_{A,k,f} = Σ_g w_g b_k(|r_g − R_A|) f(r_g),   c_{A,k} = W_ch m_{A,k,:} (no bias),
       h_A = SiLU(W_e asinh(c_A) + b_e).

   The fields are linear in the density matrix, so the only non-linearity acting on the
   aggregated density is applied to natm·K·C numbers: the XC kernel of the non-local part
   is smooth and low-rank. (Weighting the moments by a non-linear function of the local
   features would add kernel terms growing like 1/ρ in density tails, which gave spurious
   negative TDDFT eigenvalues with random weights.)

3. T message-passing rounds between atoms (edge radial basis up to 6 bohr, smooth cutoff
   at 10 bohr, no self-interaction):
       h_A ← h_A + SiLU(W_u [h_A, Σ_B f_cut(R_AB) SiLU(W_m [h_B, e(R_AB)] + b_m)] + b_u).
4. Atoms → grid: u_g = Σ_A Σ_k b_k(|r_g − R_A|) (W_o h_A + b_o)_{k,:} ∈ R^J.
5. Enhancement: e_xc = e_xc^base(r_g) · 2·sigmoid(N([x_g, u_g])) — bounded in (0, 2)×base.

Every step is smooth in the density (twice differentiable, as TDDFT kernels and
parameter-Hessian products need), depends on geometry only through distances (so E_xc is
invariant under rotations, translations and atom permutations) and costs O(G x natm).

Initialisation: the last layer of N is zero, so the factor is exactly 1 and the model equals
its base functional. Physical base (default): PBE (``harness.functionals.PBE``); ``base`` may
also be "tpss" or "lda".

Parameter counts (float64; C channels, K radial functions, H atom features, T rounds,
J read-out channels, head MLP):
* ``quick``: C=4, K=6, H=8, T=2, J=4, head (8→16→16→1): **1,373**
* ``full``:  C=8, K=12, H=32, T=3, J=16, head (20→64→64→64→1): **29,177**
"""

from __future__ import annotations

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

__all__ = ["NLMP"]


class _Round(nn.Module):
    """One invariant message-passing round between atom-centred points."""

    def __init__(self, hidden: int, n_edge: int):
        super().__init__()
        self.msg = nn.Linear(hidden + n_edge, hidden)
        self.upd = nn.Linear(2 * hidden, hidden)

    def forward(self, h: Tensor, e: Tensor, cut: Tensor) -> Tensor:
        A, H = h.shape
        hb = h.unsqueeze(0).expand(A, A, H)  # hb[a, b] = h_b
        m = silu(self.msg(torch.cat([hb, e], dim=-1)))  # message b -> a
        agg = (cut.unsqueeze(-1) * m).sum(1)
        return h + silu(self.upd(torch.cat([h, agg], dim=-1)))


class NLMP(nn.Module):
    """Semi-local MLP enhancement of a base functional, with atom-centred non-local features."""

    features = list(SEMILOCAL_FEATURES) + ["grid_coords", "atomic_coords"]
    PRESETS = {
        "quick": dict(channels=4, radial=6, hidden=8, rounds=2, readout=4, head=(16, 16)),
        "full": dict(channels=8, radial=12, hidden=32, rounds=3, readout=16, head=(64, 64, 64)),
    }
    N_PARAMS = {"quick": 1373, "full": 29177}

    def __init__(self, channels: int = 4, radial: int = 6, hidden: int = 8, rounds: int = 2, readout: int = 4,
                 head=(16, 16), r_max: float = 4.0, r_cut: float = 6.0, edge_radial: int = 6,
                 edge_r_max: float = 6.0, edge_cut: float = 10.0, base: str = "pbe"):
        super().__init__()
        self.base = check_base(base)
        self.channels, self.radial, self.readout_dim = channels, radial, readout
        self.r_max, self.r_cut = float(r_max), float(r_cut)
        self.edge_radial, self.edge_r_max, self.edge_cut = edge_radial, float(edge_r_max), float(edge_cut)
        self.mix = nn.Linear(3, channels, bias=False)
        self.embed = nn.Linear(radial * channels, hidden)
        self.rounds = nn.ModuleList(_Round(hidden, edge_radial) for _ in range(rounds))
        self.readout = nn.Linear(hidden, radial * readout)
        self.head = MLP([4 + readout, *head, 1])

    def nonlocal_features(self, features: dict[str, Tensor], x: Tensor) -> Tensor:
        """u (G, J): atom-centred non-local descriptors read back onto the grid."""
        coords, R = features["grid_coords"], features["atomic_coords"].to(x.dtype)
        B, D = atom_geometry(coords, R, self.radial, self.r_max, self.r_cut)  # (A, G, K), (A, G, 4)
        A = B.shape[0]
        m = self.mix(density_moments(features, B, D))  # (A, K, C)
        h = silu(self.embed(torch.asinh(m).reshape(A, -1)))
        e, cut, _ = atom_pairs(R, self.edge_radial, self.edge_r_max, self.edge_cut)
        for rnd in self.rounds:
            h = rnd(h, e, cut)
        S = self.readout(h).reshape(A, self.radial, self.readout_dim)
        return (B @ S).sum(0)  # (G, J)

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        """e_xc per volume (G,)."""
        x = semilocal_inputs(features).x
        u = self.nonlocal_features(features, x)
        delta = self.head(torch.cat([x, u], dim=-1)).squeeze(-1)
        return base_energy_density(self.base, features) * (2.0 * torch.sigmoid(delta))

    def get_exc(self, features: dict[str, Tensor]) -> Tensor:
        return (self.get_exc_density(features) * features["grid_weights"]).sum()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.get_exc(features)
