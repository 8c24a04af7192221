"""example-mlp: a small *untrained* neural exchange functional — the template to copy.

What it computes
----------------
E_xc = E_x^MLP + E_c^LDA, with

    E_x^MLP = sum_g w_g * 1/2 * sum_sigma e_x^unif(n_sigma) * F_x(n_sigma, s_sigma),
    n_sigma = 2 rho_sigma   (exact spin scaling of exchange),
    e_x^unif(n) = -(3/4) (3/pi)^(1/3) n^(4/3)         (LDA/Slater exchange per volume),
    s = |grad n| / (2 (3 pi^2)^(1/3) n^(4/3))          (reduced gradient),
    F_x = 1 + 0.1 * tanh(MLP(r, u)),   r = n^(1/3) / (1 + n^(1/3)),  u = s^2 / (1 + s^2),

and E_c^LDA the Perdew-Wang 92 correlation the harness ships (``lda_c_pw_mod``). The MLP
(2 -> 32 -> 32 -> 1, SiLU; 1,185 parameters) is randomly initialised with seed 0, so
F_x stays within 1 +- 0.1: a sane functional close to LDA. Replace the MLP, the features and the
bound by your own, train it, save the weights with ``make_weights.py`` and pin the printed
sha256 in ``submission.yaml``.

The contract (docs/submitting.md)
---------------------------------
* the factory named by ``entry_point`` (here ``make_functional``) returns an ``nn.Module``;
* the module has ``features``: the names of the grid features it needs;
* ``get_exc(features) -> scalar tensor``: E_xc in Hartree. It must be differentiable with
  respect to the density features (the harness takes V_xc and kernels by autodiff), finite
  everywhere on the grid (also where the density is ~0) and must not detach anything;
* the harness builds the module with the factory and then loads ``weights.safetensors`` into
  it with ``load_state_dict(strict=True)`` — the factory only builds the architecture.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.functionals.torch_classic import lda_c_pw_mod

# -(3/4) (3/pi)^(1/3): Slater exchange energy per volume is C_X * n^(4/3) (spin-unpolarised).
C_X = -0.75 * (3.0 / math.pi) ** (1.0 / 3.0)
# 2 (3 pi^2)^(1/3): s = |grad n| / (S_FAC * n^(4/3)).
S_FAC = 2.0 * (3.0 * math.pi**2) ** (1.0 / 3.0)
# Densities below this are treated as vacuum (no contribution, no NaN in the gradient).
DENSITY_FLOOR = 1e-12
# F_x = 1 + BOUND * tanh(MLP): the enhancement factor stays within 1 +- BOUND.
BOUND = 0.1


class MLPExchange(nn.Module):
    """LDA exchange times a bounded MLP enhancement factor, plus LDA (PW92) correlation."""

    # The grid features the harness must build for this functional (see docs/submitting.md):
    # density (2, G) = rho_alpha, rho_beta; grad (2, 3, G); grid_weights (G,).
    features = ["density", "grad", "grid_weights"]

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1),
        )
        # The harness runs in float64; the weights file is stored in float64 too.
        self.double()

    def enhancement(self, n: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """F_x(n, |grad n|^2) for a spin-scaled density n (any shape)."""
        n13 = n ** (1.0 / 3.0)
        s2 = sigma / (S_FAC**2 * n ** (8.0 / 3.0))  # s^2, no square root: smooth at grad n = 0
        x = torch.stack([n13 / (1.0 + n13), s2 / (1.0 + s2)], dim=-1)  # both inputs in [0, 1)
        return 1.0 + BOUND * torch.tanh(self.net(x).squeeze(-1))

    def exchange_density(self, rho_s: torch.Tensor, grad_s: torch.Tensor) -> torch.Tensor:
        """e_x per volume of one spin channel: 1/2 e_x^unif(2 rho_s) F_x."""
        n = 2.0 * rho_s
        present = n > DENSITY_FLOOR
        n_safe = torch.where(present, n, torch.ones_like(n))  # keeps the graph NaN-free
        sigma = 4.0 * (grad_s * grad_s).sum(0)  # |grad n|^2 = 4 |grad rho_s|^2
        sigma = torch.where(present, sigma, torch.zeros_like(sigma))
        e = 0.5 * C_X * n_safe ** (4.0 / 3.0) * self.enhancement(n_safe, sigma)
        return torch.where(present, e, torch.zeros_like(e))

    def get_exc(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        rho, grad, w = features["density"], features["grad"], features["grid_weights"]
        e_x = self.exchange_density(rho[0], grad[0]) + self.exchange_density(rho[1], grad[1])
        e_c = lda_c_pw_mod(features)
        return ((e_x + e_c) * w).sum()

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.get_exc(features)


def make_functional() -> MLPExchange:
    """Factory named by submission.yaml's ``entry_point``: builds the (untrained) architecture.

    The harness then loads weights.safetensors into it (sha256-checked, strict)."""
    return MLPExchange()
