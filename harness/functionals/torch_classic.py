"""Classic (non-learned) XC functionals written in the harness functional contract.

Three reference functionals, implemented from the published formulas in vectorised float64
torch so that the SCF/TDDFT drivers can take V_xc and its response by autograd:

* :class:`LDA`  -- Slater exchange + Perdew-Wang 1992 correlation
  (J. P. Perdew and Y. Wang, Phys. Rev. B 45, 13244 (1992)), in Libxc's ``LDA_C_PW_MOD``
  variant (the parameters with extra digits that PBE is built on).  Libxc: ``lda_x,lda_c_pw_mod``.
* :class:`PBE`  -- J. P. Perdew, K. Burke and M. Ernzerhof, Phys. Rev. Lett. 77, 3865 (1996).
  Libxc: ``gga_x_pbe,gga_c_pbe`` (PySCF ``pbe,pbe``).
* :class:`TPSS` -- J. Tao, J. P. Perdew, V. N. Staroverov and G. E. Scuseria,
  Phys. Rev. Lett. 91, 146401 (2003).  Libxc: ``mgga_x_tpss,mgga_c_tpss`` (PySCF ``tpss,tpss``).

All three are spin-polarised (alpha != beta is supported and tested against Libxc); the
closed-shell case alpha == beta is what the harness feeds them.

Conventions (see :mod:`harness.contract`): ``density`` (2, G) = rho_alpha, rho_beta;
``grad`` (2, 3, G) = their gradients; ``kin`` (2, G) = tau_sigma = 1/2 sum_i |grad phi_i sigma|^2.
``get_exc_density`` returns the energy per volume e_xc = rho * eps_xc on the grid, and
``get_exc`` returns sum_g w_g e_xc(r_g) in Hartree.

Low-density screening follows Libxc 7 exactly, so that values agree point by point:

* the whole point is dropped (e_xc = 0) when rho_alpha + rho_beta < rho_thr, with rho_thr
  the component's own Libxc ``dens_threshold``: 1e-15 for lda_x, lda_c_pw_mod, gga_x_pbe,
  mgga_x_tpss and mgga_c_tpss; 1e-12 for gga_c_pbe;
* exchange (spin-scaled) additionally drops a spin channel with rho_sigma <= rho_thr;
* on surviving points sigma_ss >= rho_thr^(8/3), tau_sigma >= 1e-20,
  sigma_ss <= 8 rho_sigma tau_sigma (Fermi-hole curvature, meta-GGAs only) and
  |sigma_ab| <= (sigma_aa + sigma_bb)/2, as in Libxc's ``work_*_inc.c``;
* 1 +- zeta is floored at DBL_EPSILON (Libxc's ``zeta_threshold``);
* like Libxc, PW92 uses log(1 + x) and PBE's A uses exp(x) - 1 (not log1p / expm1): in the
  far tail this reproduces Libxc's rounding (log1p would differ from it by ~1e-10 there).

Known, deliberate deviation: in spin-polarised mode Libxc raises a spin density below the
threshold to rho_thr before evaluating; here it is used as is (the spin-0 convention). This
only changes points where one spin density is below 1e-15.

Screened points use the "double where" trick (the formula is evaluated on harmless
placeholder values -- rho := 1 -- and the result is multiplied by the 0/1 mask), so first
and second autograd derivatives stay finite, and zero, at zero density and zero gradient.

Derivatives at clamped inputs: Libxc *replaces* a sanitised input and reports the partial
derivatives of the functional at the replaced value. The two "replacing" clamps,
sigma_ss <= 8 rho_s tau_s and |sigma_ab| <= (sigma_aa + sigma_bb)/2, are reproduced the same
way here (value clamped, derivative of the identity), so autograd gives Libxc's vrho/vsigma/
vtau there too. This matters in practice: in density tails dominated by one orbital
sigma = 8 rho tau holds exactly and rounding puts about half of those points on the wrong
side of the bound; differentiating through the clamp would make V_xc jump there. (The floors
sigma >= rho_thr^(8/3), tau >= 1e-20 are ordinary clamps; they only act on degenerate inputs.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LDA", "PBE", "TPSS", "ZETA_THRESHOLD", "TAU_THRESHOLD"]

#: Libxc ``zeta_threshold`` (DBL_EPSILON): 1 +- zeta is floored here.
ZETA_THRESHOLD = 2.220446049250313e-16
#: Libxc ``tau_threshold``.
TAU_THRESHOLD = 1e-20

_PI = math.pi
#: Slater exchange per spin channel: e_x = C * rho_sigma^(4/3)  (spin scaling built in).
_CX_SPIN = -0.75 * (6.0 / _PI) ** (1.0 / 3.0)
#: s^2 = sigma_ss / (_S2_SPIN * rho_s^(8/3)) for the spin-scaled density 2 rho_s.
_S2_SPIN = 2.0 ** (8.0 / 3.0) * (3.0 * _PI**2) ** (2.0 / 3.0)
#: tau_unif(n) = _TAU_UNIF * n^(5/3)
_TAU_UNIF = 0.3 * (3.0 * _PI**2) ** (2.0 / 3.0)
_RS_FAC = (3.0 / (4.0 * _PI)) ** (1.0 / 3.0)
_KF_FAC = (3.0 * _PI**2) ** (1.0 / 3.0)

# Perdew-Wang 92 G(rs) parameters, Libxc LDA_C_PW_MOD, columns: e_c(zeta=0), e_c(zeta=1), -alpha_c
_PW_A = (0.0310907, 0.01554535, 0.0168869)
_PW_ALPHA1 = (0.21370, 0.20548, 0.11125)
_PW_BETA1 = (7.5957, 14.1189, 10.357)
_PW_BETA2 = (3.5876, 6.1977, 3.6231)
_PW_BETA3 = (1.6382, 3.3662, 0.88026)
_PW_BETA4 = (0.49294, 0.62517, 0.49671)
_PW_FZ20 = 1.709920934161365617563962776245  # f''(0), full precision (the "_MOD" variant)
_FZ_DEN = 2.0 ** (4.0 / 3.0) - 2.0

# PBE constants (Libxc gga_x_pbe / gga_c_pbe)
PBE_KAPPA = 0.804
PBE_MU = 0.2195149727645171
PBE_BETA = 0.06672455060314922
PBE_GAMMA = (1.0 - math.log(2.0)) / _PI**2

# TPSS constants (Libxc mgga_x_tpss / mgga_c_tpss)
TPSS_B, TPSS_C, TPSS_E, TPSS_KAPPA, TPSS_MU = 0.40, 1.59096, 1.537, 0.804, 0.21951
TPSS_D = 2.8
TPSS_C0 = (0.53, 0.87, 0.50, 2.26)

# Libxc dens_threshold of each component
THR_LDA_X = THR_PBE_X = THR_TPSS_X = 1e-15
THR_PW_MOD = 1e-15
THR_PBE_C = 1e-12
THR_TPSS_C = 1e-15

# zeta = +-1 (fully polarised) constants with Libxc's zeta_threshold
_PHI_POL = 0.5 * (2.0 ** (2.0 / 3.0) + ZETA_THRESHOLD ** (2.0 / 3.0))
_FZ_POL = (2.0 ** (4.0 / 3.0) + ZETA_THRESHOLD ** (4.0 / 3.0) - 2.0) / _FZ_DEN


# --------------------------------------------------------------------------------------
# building blocks (elementwise; any shape)
#
# Performance notes (CPU, float64): x ** (1/3) costs ~15 multiplies, exp(log(x)/3) ~4, so every
# fractional power is derived from one cube root; torch.where costs ~6 multiplies, so masks
# are applied as float factors; log1p / expm1 cost ~5x log / exp (and Libxc uses log(1 + x),
# exp(x) - 1 itself). The "double where" becomes: x_safe = x * m + (1 - m) feeds the formula,
# the result is multiplied by m.
# --------------------------------------------------------------------------------------


def _cbrt(x: Tensor) -> Tensor:
    """x^(1/3) for x > 0 (a few ulp; much cheaper than x ** (1/3))."""
    return torch.exp(torch.log(x) * (1.0 / 3.0))


def _safe(x: Tensor, mf: Tensor) -> Tensor:
    """x where mf == 1, 1 where mf == 0 (mf a 0/1 float mask); derivative mf."""
    return x * mf + (1.0 - mf)


def _zeta_powers(zeta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(1+z)^(4/3), (1-z)^(4/3), (1+z)^(2/3), (1-z)^(2/3) with Libxc's floor 1 +- z >= DBL_EPSILON."""
    opz = (1.0 + zeta).clamp(min=ZETA_THRESHOLD)
    omz = (1.0 - zeta).clamp(min=ZETA_THRESHOLD)
    a, b = _cbrt(opz), _cbrt(omz)
    return opz * a, omz * b, a * a, b * b


def _pw92_g(rs: Tensor, srs: Tensor, k: int) -> Tensor:
    """PW92 G(rs) for parameter set k: 0 -> e_c(rs, 0), 1 -> e_c(rs, 1), 2 -> -alpha_c(rs)."""
    a = _PW_A[k]
    den = srs * (_PW_BETA1[k] + srs * (_PW_BETA2[k] + srs * (_PW_BETA3[k] + srs * _PW_BETA4[k])))
    return (-2.0 * a) * (1.0 + _PW_ALPHA1[k] * rs) * torch.log(1.0 + 1.0 / ((2.0 * a) * den))


def _pw92_eps(rs: Tensor, zeta: Tensor | None, zp=None) -> Tensor:
    """PW92 correlation energy per particle; zeta=None means fully polarised (zeta = 1).

    zp: the output of _zeta_powers(zeta) if already computed.
    """
    srs = rs.sqrt()
    g0, g1 = _pw92_g(rs, srs, 0), _pw92_g(rs, srs, 1)
    if zeta is None:
        return g0 + _FZ_POL * (g1 - g0)
    g2 = _pw92_g(rs, srs, 2) * (1.0 / _PW_FZ20)
    if zp is None:
        zp = _zeta_powers(zeta)
    fz = (zp[0] + zp[1] - 2.0) * (1.0 / _FZ_DEN)
    z2 = zeta * zeta
    return g0 + fz * (z2 * z2 * (g1 - g0 + g2) - g2)


def _pbe_c_eps(rho: Tensor, r13: Tensor, zeta: Tensor | None, sigma: Tensor, beta: float = PBE_BETA) -> Tensor:
    """PBE correlation energy per particle eps_c^PW92 + H (rho > 0, r13 = rho^(1/3)).

    zeta=None means fully polarised (zeta = 1, phi at Libxc's zeta threshold).
    """
    rs = _RS_FAC / r13
    if zeta is None:
        ec = _pw92_eps(rs, None)
        phi = _PHI_POL
        phi2, phi3 = phi * phi, phi**3
        # t^2 = sigma / (4 phi^2 ks^2 rho^2), ks^2 = 4 kF / pi
        t2 = sigma * (_PI / (16.0 * phi2 * _KF_FAC)) / (r13 * rho * rho)
    else:
        zp = _zeta_powers(zeta)
        ec = _pw92_eps(rs, zeta, zp)
        phi = 0.5 * (zp[2] + zp[3])
        phi2 = phi * phi
        phi3 = phi2 * phi
        t2 = sigma * (_PI / (16.0 * _KF_FAC)) / (phi2 * r13 * rho * rho)
    bg = beta / PBE_GAMMA
    gphi3 = PBE_GAMMA * phi3
    a = bg / (torch.exp(-ec / gphi3) - 1.0)
    at2 = a * t2
    h = gphi3 * torch.log(1.0 + bg * t2 * (1.0 + at2) / (1.0 + at2 * (1.0 + at2)))
    return ec + h


def _pbe_fx(s2: Tensor, kappa: float = PBE_KAPPA, mu: float = PBE_MU) -> Tensor:
    return (1.0 + kappa) - kappa * kappa / (kappa + mu * s2)


# --------------------------------------------------------------------------------------
# input preparation (Libxc work_*_inc.c semantics)
# --------------------------------------------------------------------------------------


def _replace_above(x: Tensor, hi: Tensor) -> Tensor:
    """min(x, hi) in value, with the derivative of x (Libxc replaces the input, then
    reports partial derivatives at the replaced value; no chain rule through the clamp)."""
    return x - (x - hi).clamp(min=0.0).detach()


def _x_inputs(features: dict[str, Tensor], thr: float, with_grad: bool, with_tau: bool):
    """Spin channels for a spin-scaled exchange functional (each screened at rho_s <= thr).

    Returns mask mf (2, G) float, rho_s (2, G) safe, rho_s^(1/3), sigma_ss | None, tau_s | None.
    """
    rho_s = features["density"]
    mf = (rho_s > thr).to(rho_s.dtype)
    r = _safe(rho_s, mf)
    sig = tau = None
    if with_grad:
        sig, tau = _spin_sigma_tau(features, r, thr, with_tau)
    return mf, r, _cbrt(r), sig, tau


def _spin_sigma_tau(features: dict[str, Tensor], rho_s: Tensor, thr: float, with_tau: bool):
    """sigma_ss = |grad rho_s|^2 (2, G) floored at thr^(8/3) and, with tau, tau_s floored at
    TAU_THRESHOLD and sigma_ss capped at 8 rho_s tau_s (libxc's clamps)."""
    g = features["grad"]
    sig = (g * g).sum(1).clamp(min=thr ** (8.0 / 3.0))
    tau = None
    if with_tau:
        tau = features["kin"].clamp(min=TAU_THRESHOLD)
        sig = _replace_above(sig, 8.0 * rho_s * tau)
    return sig, tau


def _corr_inputs(features: dict[str, Tensor], thr: float, with_grad: bool, with_tau: bool):
    """Screen (rho_a + rho_b < thr) and sanitise the spin densities for a correlation part.

    Returns mf (G,) float mask, rho_s (2, G), rho (G,), rho^(1/3), zeta (G,),
    sigma_ss (2, G) | None, sigma_tot (G,) | None, tau_s (2, G) | None, all harmless where ~mask.
    """
    rho_s = features["density"]
    rho_raw = rho_s.sum(0)
    mf = (rho_raw >= thr).to(rho_s.dtype)
    rho_s = rho_s.clamp(min=0.0) * mf + 0.5 * (1.0 - mf)
    rho = rho_s.sum(0)
    zeta = (rho_s[0] - rho_s[1]) / rho
    sigma_ss = sigma_tot = tau_s = None
    if with_grad:
        g = features["grad"]
        sigma_ss, tau_s = _spin_sigma_tau(features, rho_s, thr, with_tau)
        s_ave = 0.5 * (sigma_ss[0] + sigma_ss[1])
        sigma_ab = (g[0] * g[1]).sum(0)
        sigma_ab = -_replace_above(-_replace_above(sigma_ab, s_ave), s_ave)
        sigma_tot = sigma_ss[0] + sigma_ss[1] + 2.0 * sigma_ab
    return mf, rho_s, rho, _cbrt(rho), zeta, sigma_ss, sigma_tot, tau_s


# --------------------------------------------------------------------------------------
# functional pieces: energy per volume, shape (G,)
# --------------------------------------------------------------------------------------


def lda_x(features: dict[str, Tensor]) -> Tensor:
    """Slater exchange, e_x per volume."""
    mf, r, r13, _, _ = _x_inputs(features, THR_LDA_X, with_grad=False, with_tau=False)
    return (_CX_SPIN * r * r13 * mf).sum(0)


def lda_c_pw_mod(features: dict[str, Tensor]) -> Tensor:
    """PW92 correlation (Libxc LDA_C_PW_MOD), e_c per volume."""
    mf, _, rho, r13, zeta, _, _, _ = _corr_inputs(features, THR_PW_MOD, with_grad=False, with_tau=False)
    return rho * _pw92_eps(_RS_FAC / r13, zeta) * mf


def pbe_x(features: dict[str, Tensor]) -> Tensor:
    """PBE exchange, e_x per volume."""
    mf, r, r13, sig, _ = _x_inputs(features, THR_PBE_X, with_grad=True, with_tau=False)
    r43 = r * r13
    s2 = sig / (_S2_SPIN * r43 * r43)
    return (_CX_SPIN * r43 * _pbe_fx(s2) * mf).sum(0)


def pbe_c(features: dict[str, Tensor]) -> Tensor:
    """PBE correlation, e_c per volume."""
    mf, _, rho, r13, zeta, _, sigma, _ = _corr_inputs(features, THR_PBE_C, with_grad=True, with_tau=False)
    return rho * _pbe_c_eps(rho, r13, zeta, sigma) * mf


_TPSS_K4 = 4.0 * (3.0 * _PI**2) ** (2.0 / 3.0)  # p = sigma / (_TPSS_K4 n^(8/3))
_CBRT2 = 2.0 ** (1.0 / 3.0)


def tpss_x(features: dict[str, Tensor]) -> Tensor:
    """TPSS exchange, e_x per volume (spin scaling: channel sigma is the density 2 rho_sigma)."""
    mf, r, r13, sig, tau = _x_inputs(features, THR_TPSS_X, with_grad=True, with_tau=True)
    # quantities of the spin-scaled density n = 2 rho_s: sigma_n = 4 sig, tau_n = 2 tau
    n = 2.0 * r
    n13 = _CBRT2 * r13
    n43 = n * n13
    sig_n = 4.0 * sig
    tau_n = 2.0 * tau
    inv_n83 = 1.0 / (n43 * n43)
    p = sig_n * (inv_n83 / _TPSS_K4)
    inv8nt = 1.0 / (8.0 * n * tau_n)
    z = sig_n * inv8nt
    alpha = (tau_n - sig_n / (8.0 * n)) / (_TAU_UNIF * n * n13 * n13)
    qb = 0.45 * (alpha - 1.0) / torch.sqrt(1.0 + TPSS_B * alpha * (alpha - 1.0)) + (2.0 / 3.0) * p
    # sqrt(1/2 ((3/5 z)^2 + p^2)) = sig_n * sqrt(1/2 ((3/5 / (8 n tau_n))^2 + (1/(k4 n^(8/3)))^2)),
    # written without a sqrt of zero so that it stays differentiable at sigma = 0
    u = 0.6 * inv8nt
    v = inv_n83 / _TPSS_K4
    root = sig_n * torch.sqrt(0.5 * (u * u + v * v))
    z2 = z * z
    opz2 = 1.0 + z2
    mu_ge = 10.0 / 81.0
    se = math.sqrt(TPSS_E)
    num = (
        (mu_ge + TPSS_C * z2 / (opz2 * opz2)) * p
        + qb * ((146.0 / 2025.0) * qb - (73.0 / 405.0) * root)
        + p * p * (mu_ge * mu_ge / TPSS_KAPPA + (TPSS_E * TPSS_MU) * p)
        + (2.0 * se * mu_ge * 0.36) * z2
    )
    d = 1.0 + se * p
    x = num / (d * d)
    fx = (1.0 + TPSS_KAPPA) - TPSS_KAPPA * TPSS_KAPPA / (TPSS_KAPPA + x)
    return (_CX_SPIN * r * r13 * fx * mf).sum(0)


def tpss_c(features: dict[str, Tensor]) -> Tensor:
    """TPSS correlation (revPKZB with the TPSS C(zeta, xi) and d = 2.8), e_c per volume."""
    thr = THR_TPSS_C
    mf, rho_s, rho, r13, zeta, sig_ss, sig_tot, tau_s = _corr_inputs(features, thr, with_grad=True, with_tau=True)
    tau = tau_s[0] + tau_s[1]
    eps = _pbe_c_eps(rho, r13, zeta, sig_tot)
    # fully polarised PBE of each spin density alone: eps_c^PBE(rho_s, 0, grad rho_s, 0);
    # Libxc uses eps instead where rho_s <= thr
    ks = (rho_s > thr).to(rho.dtype)
    rs_safe = _safe(rho_s, ks)
    eps_s = _pbe_c_eps(rs_safe, _cbrt(rs_safe), None, sig_ss)
    eps_t = torch.maximum(eps_s, eps) * ks + eps * (1.0 - ks)
    par = (eps_t[0] * rho_s[0] + eps_t[1] * rho_s[1]) / rho  # sum_s (rho_s / rho) eps~_s
    # C(zeta, xi): xi^2 = |grad zeta|^2 / (2 (3 pi^2 rho)^(1/3))^2, grad zeta = 2 (rb ga - ra gb)/rho^2
    g = features["grad"]
    vec = rho_s[1] * g[0] - rho_s[0] * g[1]
    rho2 = rho * rho
    xi2 = (vec * vec).sum(0) * mf / (rho2 * rho2 * (_KF_FAC**2) * r13 * r13)
    z2 = zeta * zeta
    c00 = TPSS_C0[0] + z2 * (TPSS_C0[1] + z2 * (TPSS_C0[2] + z2 * TPSS_C0[3]))
    opz = (1.0 + zeta).clamp(min=ZETA_THRESHOLD)
    omz = (1.0 - zeta).clamp(min=ZETA_THRESHOLD)
    inv43 = 1.0 / (opz * _cbrt(opz)) + 1.0 / (omz * _cbrt(omz))
    cden = 1.0 + 0.5 * xi2 * inv43
    cden2 = cden * cden
    # Libxc: C = sum(C0) when 1 - |zeta| <= 1e-12
    pol = (1.0 - zeta.abs() <= 1e-12).to(rho.dtype)
    cc = c00 / (cden2 * cden2) * (1.0 - pol) + float(sum(TPSS_C0)) * pol
    # z = tau_W / tau (<= 1)
    zz = torch.clamp(sig_tot / (8.0 * rho * tau), max=1.0)
    zz2 = zz * zz
    erev = eps * (1.0 + cc * zz2) - (1.0 + cc) * zz2 * par
    return rho * erev * (1.0 + TPSS_D * erev * zz2 * zz) * mf


# --------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------


class _ClassicFunctional(nn.Module):
    """Shared plumbing: ``get_exc = sum_g w_g * get_exc_density``."""

    features: list[str] = ["density", "grid_weights"]
    libxc_code: str = ""

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def get_exc(self, features: dict[str, Tensor]) -> Tensor:
        return (self.get_exc_density(features) * features["grid_weights"]).sum()

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.get_exc(features)


class LDA(_ClassicFunctional):
    """LDA: Slater exchange + Perdew-Wang 92 correlation (PRB 45, 13244 (1992)).

    Matches Libxc ``lda_x`` + ``lda_c_pw_mod`` (PW92 with full-precision f''(0) and the
    PW_MOD digits of A, the variant PBE builds on). Spin-polarised.
    """

    features = ["density", "grid_weights"]
    libxc_code = "lda_x,lda_c_pw_mod"

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        return lda_x(features) + lda_c_pw_mod(features)


class PBE(_ClassicFunctional):
    """PBE GGA: Perdew, Burke & Ernzerhof, PRL 77, 3865 (1996).

    Matches Libxc ``gga_x_pbe`` + ``gga_c_pbe`` (kappa = 0.804, mu = 0.2195149727645171,
    beta = 0.06672455060314922, gamma = (1 - ln 2)/pi^2, PW92 = PW_MOD). Spin-polarised.
    """

    features = ["density", "grad", "grid_weights"]
    libxc_code = "pbe,pbe"

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        return pbe_x(features) + pbe_c(features)


class TPSS(_ClassicFunctional):
    """TPSS meta-GGA: Tao, Perdew, Staroverov & Scuseria, PRL 91, 146401 (2003).

    Matches Libxc ``mgga_x_tpss`` + ``mgga_c_tpss`` (b = 0.40, c = 1.59096, e = 1.537,
    kappa = 0.804, mu = 0.21951; d = 2.8, C(zeta, 0) = 0.53 + 0.87 z^2 + 0.50 z^4 + 2.26 z^6),
    including Libxc's Fermi-hole-curvature clamp sigma_ss <= 8 rho_s tau_s. Spin-polarised.
    """

    features = ["density", "grad", "kin", "grid_weights"]
    libxc_code = "tpss,tpss"

    def get_exc_density(self, features: dict[str, Tensor]) -> Tensor:
        return tpss_x(features) + tpss_c(features)
