"""PBE in jax, as a pure function of (params, features).

J. P. Perdew, K. Burke and M. Ernzerhof, Phys. Rev. Lett. 77, 3865 (1996); correlation built
on Perdew & Wang, Phys. Rev. B 45, 13244 (1992) (Libxc ``LDA_C_PW_MOD`` parameters).

Same formulas, screening and clamps as :class:`harness.functionals.torch_classic.PBE` (see that
module for the Libxc threshold conventions), so the two agree to rounding. Spin-polarised.
Features are jax arrays with the contract's names and shapes (``density`` (2, G), ``grad``
(2, 3, G), ``grid_weights`` (G,)). Importing this module enables float64 in jax.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

__all__ = ["pbe_exc", "pbe_exc_density", "make_pbe", "PBE_PARAMS"]

_PI = math.pi
_ZT = 2.220446049250313e-16  # Libxc zeta_threshold (DBL_EPSILON)
_CX_SPIN = -0.75 * (6.0 / _PI) ** (1.0 / 3.0)
_S2_SPIN = 2.0 ** (8.0 / 3.0) * (3.0 * _PI**2) ** (2.0 / 3.0)
_RS_FAC = (3.0 / (4.0 * _PI)) ** (1.0 / 3.0)
_KF_FAC = (3.0 * _PI**2) ** (1.0 / 3.0)
_GAMMA = (1.0 - math.log(2.0)) / _PI**2
_FZ_DEN = 2.0 ** (4.0 / 3.0) - 2.0
_FZ20 = 1.709920934161365617563962776245
# PW92 (PW_MOD) columns: e_c(zeta=0), e_c(zeta=1), -alpha_c
_PW = (
    (0.0310907, 0.21370, 7.5957, 3.5876, 1.6382, 0.49294),
    (0.01554535, 0.20548, 14.1189, 6.1977, 3.3662, 0.62517),
    (0.0168869, 0.11125, 10.357, 3.6231, 0.88026, 0.49671),
)
_THR_X = 1e-15  # Libxc dens_threshold of gga_x_pbe (per spin channel: rho_s <= thr screened)
_THR_C = 1e-12  # Libxc dens_threshold of gga_c_pbe (total density)

#: Default PBE constants (Libxc gga_x_pbe / gga_c_pbe); a pytree of floats.
PBE_PARAMS = {"kappa": 0.804, "mu": 0.2195149727645171, "beta": 0.06672455060314922}


def _opz_pow(x, n):
    return jnp.where(x <= _ZT, _ZT**n, jnp.maximum(x, _ZT) ** n)


def _pw92_eps(rs, zeta):
    srs = jnp.sqrt(rs)
    g = []
    for a, a1, b1, b2, b3, b4 in _PW:
        den = srs * (b1 + srs * (b2 + srs * (b3 + srs * b4)))
        g.append((-2.0 * a) * (1.0 + a1 * rs) * jnp.log(1.0 + 1.0 / ((2.0 * a) * den)))
    fz = (_opz_pow(1.0 + zeta, 4.0 / 3.0) + _opz_pow(1.0 - zeta, 4.0 / 3.0) - 2.0) / _FZ_DEN
    return g[0] + zeta**4 * fz * (g[1] - g[0] + g[2] / _FZ20) - fz * g[2] / _FZ20


def _pbe_x(params, rho_s, sigma_ss):
    m = rho_s > _THR_X
    r = jnp.where(m, rho_s, 1.0)
    sig_thr = _THR_X ** (8.0 / 3.0)
    sig = jnp.where(m, jnp.maximum(sigma_ss, sig_thr), sig_thr)
    kappa, mu = params["kappa"], params["mu"]
    s2 = sig / (_S2_SPIN * r ** (8.0 / 3.0))
    fx = (1.0 + kappa) - kappa * kappa / (kappa + mu * s2)
    return jnp.where(m, _CX_SPIN * r ** (4.0 / 3.0) * fx, 0.0).sum(0)


def _pbe_c(params, rho_s, sigma_ss, sigma_ab):
    thr = _THR_C
    m = rho_s.sum(0) >= thr
    rho_s = jnp.where(m, jnp.maximum(rho_s, 0.0), 1.0)
    rho = rho_s.sum(0)
    zeta = (rho_s[0] - rho_s[1]) / rho
    sig_thr = thr ** (8.0 / 3.0)
    sig_ss = jnp.where(m, jnp.maximum(sigma_ss, sig_thr), sig_thr)
    s_ave = 0.5 * (sig_ss[0] + sig_ss[1])
    sig_ab = jnp.where(m, jnp.clip(sigma_ab, -s_ave, s_ave), 0.0)
    sigma = sig_ss[0] + sig_ss[1] + 2.0 * sig_ab

    beta = params["beta"]
    rs = _RS_FAC * rho ** (-1.0 / 3.0)
    ec = _pw92_eps(rs, zeta)
    phi = 0.5 * (_opz_pow(1.0 + zeta, 2.0 / 3.0) + _opz_pow(1.0 - zeta, 2.0 / 3.0))
    phi3 = phi**3
    kf = _KF_FAC * rho ** (1.0 / 3.0)
    t2 = sigma * (_PI / 16.0) / (phi * phi * kf * rho * rho)
    bg = beta / _GAMMA
    # exp(x) - 1 and log(1 + x) as Libxc writes them (not expm1 / log1p)
    a = bg / (jnp.exp(-ec / (_GAMMA * phi3)) - 1.0)
    at2 = a * t2
    h = (_GAMMA * phi3) * jnp.log(1.0 + bg * t2 * (1.0 + at2) / (1.0 + at2 * (1.0 + at2)))
    return jnp.where(m, rho * (ec + h), 0.0)


def pbe_exc_density(params, features):
    """PBE exchange-correlation energy per volume e_xc = rho * eps_xc, shape (G,)."""
    rho_s = features["density"]
    grad = features["grad"]
    sigma_ss = (grad * grad).sum(1)
    sigma_ab = (grad[0] * grad[1]).sum(0)
    return _pbe_x(params, rho_s, sigma_ss) + _pbe_c(params, rho_s, sigma_ss, sigma_ab)


def pbe_exc(params, features):
    """E_xc (Hartree) = sum_g w_g e_xc(r_g); a pure, jax-differentiable function."""
    return jnp.sum(pbe_exc_density(params, features) * features["grid_weights"])


def make_pbe():
    """Return ``(exc, params)``: :func:`pbe_exc` (jit-compiled, still a pure function that
    composes with ``jax.grad`` / ``jax.jvp``) and the default constants as a float64 pytree."""
    return jax.jit(pbe_exc), {k: jnp.asarray(v, dtype=jnp.float64) for k, v in PBE_PARAMS.items()}
