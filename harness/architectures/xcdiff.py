"""``xcdiff``: a constrained neural meta-GGA with separate exchange and correlation networks.

Reference: S. Dick and M. Fernández-Serra, "Highly accurate and constrained density
functional obtained with differentiable programming", Phys. Rev. B 104, L161109 (2021).
That work trains separate neural exchange and correlation enhancement factors of a
meta-GGA through a differentiable SCF and enforces exact constraints by construction.
This module is the harness's own implementation of that idea; the functional form below
is ours (built around PBE), not the paper's exact one.

Functional form (closed or open shell; everything per grid point)
-----------------------------------------------------------------
Exchange, with exact spin scaling E_x[ρα, ρβ] = ½ E_x[2ρα] + ½ E_x[2ρβ]: each spin channel
is treated as the density n = 2ρσ with its own s_σ and α_σ, and

    e_x = Σ_σ e_x^LDA(ρσ) · F_x(s_σ, α_σ),
    F_x = F_max · sigmoid( logit(F_x^PBE(s) / F_max) + Δ_x ),   F_max = 1 + κ = 1.804,
    Δ_x = u_s · N_x,1(u_s, u_α) + u_α · N_x,2(u_s, u_α),

u_s = s²/(1+s²), u_α = (1−α)/(1+α) (N_x a network with two outputs; the gated form vanishes
at the uniform gas for any weights, yet allows terms linear in α − 1 and in s² around it). Constraints kept for every parameter value:
* uniform electron gas (s = 0, α = 1): u_s = u_α = 0, so Δ_x = 0 and F_x^PBE = 1, so F_x = 1;
* Lieb–Oxford (local form): 0 < F_x < 1.804 (bounded sigmoid output);
* spin scaling of exchange (by construction); exchange is negative.
With Δ_x = 0, F_x = F_x^PBE exactly (the logit is written as log F_x^PBE − log(F_max − F_x^PBE),
the second term computed without cancellation, so it is finite for any s).

Correlation:

    e_c = ρ ε_c^PBE(r_s, ζ, t) · F_c,   F_c = 2 · sigmoid(Δ_c),
    Δ_c = u_s · N_c,1(u_ρ, ζ², u_s, u_α) + u_α · N_c,2(u_ρ, ζ², u_s, u_α),

u_ρ = ρ^{1/3}/(1+ρ^{1/3}) (a monotone map of r_s) and s, α of the total density. Constraints:
* uniform gas (s = 0, α = 1): F_c = 1, so e_c = PW92 exactly at every r_s and ζ;
* non-positivity of correlation: 0 < F_c < 2 and ε_c^PBE ≤ 0;
* symmetric under spin exchange (ζ enters as ζ²).

Initialisation: the last layers of N_x and N_c are zero, so Δ_x = Δ_c = 0 and the model *is*
PBE (``harness.functionals.PBE``) point by point, including Libxc's low-density screens (the
same torch building blocks are used). Physical base: PBE.

Parameter counts (float64):
* ``quick``: N_x 2→16→16→2 (354) + N_c 4→16→16→2 (386) = **740**
* ``full``:  N_x 2→64→64→2 (4,482) + N_c 4→64→64→2 (4,610) = **9,092**
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.functionals.torch_classic import (
    _CX_SPIN,
    _S2_SPIN,
    _TAU_UNIF,
    PBE_KAPPA,
    PBE_MU,
    TAU_THRESHOLD,
    THR_PBE_C,
    THR_PBE_X,
    _cbrt,
    _corr_inputs,
    _pbe_c_eps,
    _pbe_fx,
    _safe,
    _x_inputs,
)

from ._common import MLP, SEMILOCAL_FEATURES, bounded_alpha, bounded_s2, semilocal_inputs

__all__ = ["XCDiff"]

F_MAX = 1.0 + PBE_KAPPA  # local Lieb–Oxford bound for exchange, 1.804
_CBRT2 = 2.0 ** (1.0 / 3.0)


class XCDiff(nn.Module):
    """Constrained neural meta-GGA (separate F_x and F_c networks) around PBE."""

    features = list(SEMILOCAL_FEATURES)
    base = "pbe"
    PRESETS = {
        "quick": dict(hidden_x=(16, 16), hidden_c=(16, 16)),
        "full": dict(hidden_x=(64, 64), hidden_c=(64, 64)),
    }
    N_PARAMS = {"quick": 740, "full": 9092}

    def __init__(self, hidden_x=(16, 16), hidden_c=(16, 16)):
        super().__init__()
        self.net_x = MLP([2, *hidden_x, 2])
        self.net_c = MLP([4, *hidden_c, 2])

    # -- exchange ------------------------------------------------------------------------
    def exchange_density(self, features: dict[str, Tensor]) -> Tensor:
        mf, r, r13, sig, _ = _x_inputs(features, THR_PBE_X, with_grad=True, with_tau=False)
        r43 = r * r13
        s2 = sig / (_S2_SPIN * r43 * r43)  # (2, G) per spin channel (spin-scaled density)
        fb = _pbe_fx(s2)
        gap = (PBE_KAPPA * PBE_KAPPA) / (PBE_KAPPA + PBE_MU * s2)  # F_max − F_x^PBE > 0
        # α of the spin-scaled density n = 2ρσ: σ_n = 4σ_σσ, τ_n = 2τ_σ
        tau = _safe(features["kin"], mf).clamp(min=TAU_THRESHOLD)
        n = 2.0 * r
        n13 = _CBRT2 * r13
        alpha = ((2.0 * tau - sig / (2.0 * n)) / (_TAU_UNIF * n * n13 * n13)).clamp(min=0.0)
        x = torch.stack([bounded_s2(s2), bounded_alpha(alpha)], dim=-1)  # (2, G, 2)
        out = self.net_x(x)  # (2, G, 2)
        delta = x[..., 0] * out[..., 0] + x[..., 1] * out[..., 1]  # 0 for the uniform gas
        fx = F_MAX * torch.sigmoid(torch.log(fb) - torch.log(gap) + delta)
        return (_CX_SPIN * r43 * fx * mf).sum(0)

    # -- correlation ---------------------------------------------------------------------
    def correlation_density(self, features: dict[str, Tensor]) -> Tensor:
        mf, _, rho, r13, zeta, _, sigma, _ = _corr_inputs(features, THR_PBE_C, with_grad=True, with_tau=False)
        eps = _pbe_c_eps(rho, r13, zeta, sigma)
        x = semilocal_inputs(features).x  # (G, 4) [u_rho, zeta^2, u_s, u_alpha]
        out = self.net_c(x)  # (G, 2)
        delta = x[:, 2] * out[:, 0] + x[:, 3] * out[:, 1]  # 0 for the uniform gas
        fc = 2.0 * torch.sigmoid(delta)
        return rho * eps * fc * mf

    # -- contract ------------------------------------------------------------------------
    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        """e_xc per volume (G,)."""
        return self.exchange_density(features) + self.correlation_density(features)

    def get_exc(self, features: dict[str, Tensor]) -> Tensor:
        return (self.get_exc_density(features) * features["grid_weights"]).sum()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.get_exc(features)
