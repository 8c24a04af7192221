"""``nagai``: an MLP meta-GGA on local density descriptors.

Reference: R. Nagai, R. Akashi and O. Sugino, "Completing density functional theory by
machine learning hidden messages from molecules", npj Comput. Mater. 6, 43 (2020). That work
feeds local descriptors of the density — ρ^{1/3}, the spin polarisation ζ, the reduced
gradient s and a kinetic-energy-density variable — to a fully connected network whose output
scales an LDA-type energy density, and trains it through SCF calculations on a few molecules.
This module is the harness's own implementation of that idea; the details below are ours.

Functional form
---------------

    e_xc = e_xc^base + λ · e_x^LDA(ρα, ρβ) · tanh N(u_ρ, ζ², u_s, u_α),

i.e. an enhancement of the (spin-scaled Slater) LDA exchange energy density,
F_xc = e_xc / e_x^LDA = F_xc^base + λ tanh N, with the learned part bounded by λ = 0.3.
Inputs (bounded, smooth, finite at ρ → 0): u_ρ = ρ^{1/3}/(1+ρ^{1/3}), ζ² (spin-flip symmetric),
u_s = s²/(1+s²), u_α = (1−α)/(1+α) with α = (τ − τ_W)/τ_unif the meta-GGA (τ-based) variable.

Initialisation: the network's last layer is zero, so N ≡ 0 and the model equals its base
functional point by point. Physical base (default): TPSS (``harness.functionals.TPSS``); the
``base`` argument also accepts "pbe" or "lda".

Parameter counts (float64):
* ``quick``: 4→24→24→1, **745**
* ``full``:  4→100→100→100→1, **20,801**
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.functionals.torch_classic import lda_x

from ._common import MLP, SEMILOCAL_FEATURES, base_energy_density, check_base, semilocal_inputs

__all__ = ["Nagai"]


class Nagai(nn.Module):
    """MLP enhancement of the LDA exchange energy density on top of a semi-local base."""

    features = list(SEMILOCAL_FEATURES)
    PRESETS = {
        "quick": dict(hidden=(24, 24)),
        "full": dict(hidden=(100, 100, 100)),
    }
    N_PARAMS = {"quick": 745, "full": 20801}

    def __init__(self, hidden=(24, 24), bound: float = 0.3, base: str = "tpss"):
        super().__init__()
        self.base = check_base(base)
        self.bound = float(bound)
        self.net = MLP([4, *hidden, 1])

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        """e_xc per volume (G,)."""
        sl = semilocal_inputs(features)
        corr = torch.tanh(self.net(sl.x).squeeze(-1))
        return base_energy_density(self.base, features) + self.bound * lda_x(features) * corr

    def get_exc(self, features: dict[str, Tensor]) -> Tensor:
        return (self.get_exc_density(features) * features["grid_weights"]).sum()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.get_exc(features)
