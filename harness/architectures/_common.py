"""Shared building blocks of the baseline architectures (PROTOCOL §5).

* physical base functionals as energy densities per volume (``base_energy_density``), built
  from :mod:`harness.functionals.torch_classic`, so a model whose correction is exactly zero
  reproduces LDA / PBE / TPSS point by point (and so their SCF energies);
* spin-symmetric semi-local network inputs (``semilocal_inputs``): bounded, smooth maps of
  rho^(1/3), zeta^2, s^2 and alpha, computed on "safe" placeholder values where the density
  is below :data:`DENSITY_THRESHOLD` (so nothing is NaN and all derivatives stay finite);
* small SiLU MLPs with a zero-initialised last layer (the correction starts at exactly 0);
* atom-centred radial bases for the non-local models (``atom_geometry``), O(G x natm);
* ``seeded``: deterministic initialisation that does not disturb the global torch RNG.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from harness.functionals.torch_classic import (
    TAU_THRESHOLD,
    ZETA_THRESHOLD,
    _cbrt,
    _safe,
    lda_c_pw_mod,
    lda_x,
    pbe_c,
    pbe_x,
    tpss_c,
    tpss_x,
)

#: total densities at or below this are "vacuum" for the network inputs (the base
#: functionals apply their own Libxc screens; the smallest of those is 1e-15 too).
DENSITY_THRESHOLD = 1e-15

_PI = math.pi
#: s^2 = |grad n|^2 / (_S2_TOT n^(8/3)) for a total density n
_S2_TOT = 4.0 * (3.0 * _PI**2) ** (2.0 / 3.0)
#: tau_unif(n) = _TAU_UNIF n^(5/3) (unpolarised)
_TAU_UNIF = 0.3 * (3.0 * _PI**2) ** (2.0 / 3.0)

#: the features every architecture here uses (semi-local meta-GGA inputs + weights)
SEMILOCAL_FEATURES = ["density", "grad", "kin", "grid_weights"]


# --------------------------------------------------------------------------------------
# physical bases
# --------------------------------------------------------------------------------------

BASES: dict[str, Callable[[dict[str, Tensor]], Tensor]] = {
    "lda": lambda f: lda_x(f) + lda_c_pw_mod(f),
    "pbe": lambda f: pbe_x(f) + pbe_c(f),
    "tpss": lambda f: tpss_x(f) + tpss_c(f),
}
#: the classic torch functional (harness.functionals) each base equals
BASE_CLASSES = {"lda": "LDA", "pbe": "PBE", "tpss": "TPSS"}


def base_energy_density(name: str, features: dict[str, Tensor]) -> Tensor:
    """e_xc per volume (G,) of the base functional ``name`` ("lda", "pbe" or "tpss")."""
    try:
        fn = BASES[name]
    except KeyError:
        raise ValueError(f"unknown base functional {name!r}; choose from {sorted(BASES)}") from None
    return fn(features)


def check_base(name: str) -> str:
    if name not in BASES:
        raise ValueError(f"unknown base functional {name!r}; choose from {sorted(BASES)}")
    return name


# --------------------------------------------------------------------------------------
# semi-local inputs
# --------------------------------------------------------------------------------------


class SemilocalInputs(NamedTuple):
    mask: Tensor  # (G,) 1.0 where rho > DENSITY_THRESHOLD else 0.0
    rho: Tensor  # (G,) total density, 1 on masked points
    r13: Tensor  # (G,) rho^(1/3)
    zeta2: Tensor  # (G,) zeta^2 in [0, 1]
    s2: Tensor  # (G,) reduced gradient squared
    alpha: Tensor  # (G,) (tau - tau_W) / tau_unif(rho, zeta), >= 0
    x: Tensor  # (G, 4) network inputs [x_rho, zeta^2, x_s, x_alpha], all bounded


def bounded_rho(r13: Tensor) -> Tensor:
    """rho^(1/3) / (1 + rho^(1/3)) in [0, 1): monotone in r_s, bounded."""
    return r13 / (1.0 + r13)


def bounded_s2(s2: Tensor) -> Tensor:
    """s^2 / (1 + s^2) in [0, 1): 0 for the uniform gas; smooth at grad rho = 0 (no sqrt)."""
    return s2 / (1.0 + s2)


def bounded_alpha(alpha: Tensor) -> Tensor:
    """(1 - alpha) / (1 + alpha) in (-1, 1]: 0 for the uniform gas, 1 for one-orbital regions."""
    return (1.0 - alpha) / (1.0 + alpha)


def semilocal_inputs(features: dict[str, Tensor]) -> SemilocalInputs:
    """Spin-symmetric meta-GGA descriptors of the total density (safe at rho -> 0)."""
    rho_s = features["density"]
    rho_raw = rho_s.sum(0)
    mf = (rho_raw > DENSITY_THRESHOLD).to(rho_s.dtype)
    rho = _safe(rho_raw, mf)
    r13 = _cbrt(rho)
    zeta = ((rho_s[0] - rho_s[1]) * mf / rho).clamp(-1.0, 1.0)
    zeta2 = zeta * zeta
    g = features["grad"].sum(0)  # (3, G) gradient of the total density
    sigma = (g * g).sum(0) * mf
    rho83 = (rho * r13) ** 2
    s2 = sigma / (_S2_TOT * rho83)
    tau = _safe(features["kin"].sum(0), mf).clamp(min=TAU_THRESHOLD)
    # d_s(zeta) = ((1+z)^(5/3) + (1-z)^(5/3)) / 2, tau_unif(rho, zeta) = _TAU_UNIF rho^(5/3) d_s
    opz = (1.0 + zeta).clamp(min=ZETA_THRESHOLD)
    omz = (1.0 - zeta).clamp(min=ZETA_THRESHOLD)
    a, b = _cbrt(opz), _cbrt(omz)
    ds = 0.5 * (opz * a * a + omz * b * b)
    tau_unif = _TAU_UNIF * rho * r13 * r13 * ds
    alpha = ((tau - sigma / (8.0 * rho)) / tau_unif).clamp(min=0.0)
    x = torch.stack([bounded_rho(r13), zeta2, bounded_s2(s2), bounded_alpha(alpha)], dim=-1)
    return SemilocalInputs(mf, rho, r13, zeta2, s2, alpha, x)


# --------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected SiLU network (smooth: twice differentiable everywhere).

    ``zero_last``: the last layer's weight and bias start at 0, so the output is
    identically 0 at initialisation (gradients still reach every parameter).
    """

    def __init__(self, sizes: list[int], zero_last: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1:
                x = torch.nn.functional.silu(x)
        return x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with ``torch.manual_seed(seed)`` and restore the global RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# --------------------------------------------------------------------------------------
# atom-centred geometry (non-local models)
# --------------------------------------------------------------------------------------


def radial_basis(r: Tensor, n: int, r_max: float, r_cut: float) -> Tensor:
    """(..., n) Gaussians exp(-((r - mu_k)/h)^2), mu_k = 0 .. r_max evenly (h the spacing),
    times the smooth envelope (1 - (r/r_cut)^2)^2 for r < r_cut, 0 beyond (C^1 at r_cut)."""
    mu = torch.linspace(0.0, r_max, n, dtype=r.dtype, device=r.device)
    h = r_max / max(n - 1, 1)
    g = torch.exp(-(((r.unsqueeze(-1) - mu) / h) ** 2))
    env = (1.0 - (r / r_cut) ** 2).clamp(min=0.0) ** 2
    return g * env.unsqueeze(-1)


def smooth_cutoff(r: Tensor, r_cut: float) -> Tensor:
    """(1 - (r/r_cut)^2)^2 for r < r_cut else 0."""
    return (1.0 - (r / r_cut) ** 2).clamp(min=0.0) ** 2


def atom_geometry(grid_coords: Tensor, atomic_coords: Tensor, n_radial: int, r_max: float, r_cut: float):
    """Grid-to-atom geometry, no autograd (coordinates are static features).

    Returns ``B`` (natm, G, K) radial basis of |r_g - R_A| and ``D`` (natm, G, 4) =
    [1, unit vector from R_A to r_g]; both O(G x natm).
    """
    with torch.no_grad():
        d = grid_coords.unsqueeze(0) - atomic_coords.to(grid_coords.dtype).unsqueeze(1)  # (A, G, 3)
        r = torch.sqrt((d * d).sum(-1))
        B = radial_basis(r, n_radial, r_max, r_cut)
        dhat = d / r.clamp(min=1e-10).unsqueeze(-1)
        D = torch.cat([torch.ones_like(r).unsqueeze(-1), dhat], dim=-1)
    return B.detach(), D.detach()


def atom_pairs(atomic_coords: Tensor, n_radial: int, r_max: float, r_cut: float):
    """Atom-pair geometry: radial basis (A, A, K), cutoff x off-diagonal mask (A, A),
    unit vectors R_B - R_A over |.| (A, A, 3) (zero on the diagonal). No autograd."""
    with torch.no_grad():
        R = atomic_coords
        d = R.unsqueeze(0) - R.unsqueeze(1)  # d[a, b] = R_b - R_a
        r2 = (d * d).sum(-1)
        A = R.shape[0]
        off = 1.0 - torch.eye(A, dtype=R.dtype, device=R.device)
        r = torch.sqrt(r2 + (1.0 - off))  # 1 on the diagonal (harmless placeholder)
        e = radial_basis(r, n_radial, r_max, r_cut)
        cut = smooth_cutoff(r, r_cut) * off
        u = d / r.unsqueeze(-1) * off.unsqueeze(-1)
    return e.detach(), cut.detach(), u.detach()


#: the density fields whose atom-centred moments the non-local models use; all are linear in
#: the density matrix, so the moments are linear in P (see ``density_moments``)
SCALAR_FIELDS = ("rho", "tau", "grad_rho . r_hat")
VECTOR_FIELDS = ("rho r_hat", "tau r_hat", "grad_rho")


def density_moments(features: dict[str, Tensor], B: Tensor, D: Tensor, vectors: bool = False):
    """Radial moments of the total density about every nucleus, O(G x natm).

    With B (A, G, K) and D (A, G, 4) from :func:`atom_geometry` and quadrature weights w:

        s_{A,k,f} = Σ_g w_g b_k(|r_g − R_A|) f_A(r_g),  f in SCALAR_FIELDS  -> (A, K, 3)
        v_{A,k,f} = Σ_g w_g b_k(|r_g − R_A|) F_A(r_g),  F in VECTOR_FIELDS  -> (A, K, 3, 3)

    (ρ, τ and ∇ρ are the total density, kinetic energy density and density gradient; r̂ the
    unit vector from R_A to r_g). The fields are linear in the density matrix, so the moments
    are too: the models' non-linearity acts on a few (natm K) numbers, and the XC kernel
    they produce is smooth and low-rank (no 1/ρ-type tail singularities).
    """
    rho = features["density"].sum(0)
    tau = features["kin"].sum(0)
    g = features["grad"].sum(0)  # (3, G)
    w = features["grid_weights"]
    A = B.shape[0]
    dhat = D[..., 1:]  # (A, G, 3)
    g_r = torch.einsum("xg,agx->ag", g, dhat)
    scal = torch.stack([(w * rho).expand(A, -1), (w * tau).expand(A, -1), w * g_r], dim=-1)  # (A, G, 3)
    Bt = B.transpose(1, 2)  # (A, K, G)
    if not vectors:
        return Bt @ scal
    vec = torch.cat([(w * rho)[None, :, None] * dhat, (w * tau)[None, :, None] * dhat,
                     (w * g).T.unsqueeze(0).expand(A, -1, -1)], dim=-1)  # (A, G, 9)
    M = Bt @ torch.cat([scal, vec], dim=-1)  # (A, K, 12)
    K = B.shape[2]
    return M[..., :3], M[..., 3:].reshape(A, K, 3, 3)
