"""Classic functionals (harness.functionals) against Libxc, autodiff safety, jax/torch parity.

Reference: Libxc through ``pyscf.dft.libxc.eval_xc``, point by point, on the real (minao
guess) densities of H2O and CH4 (closed shell) and OH (doublet, spin-polarised) in def2-SVP on
a level-3 Becke grid.

Points compared: every grid point with rho_alpha > 1e-15 and rho_beta > 1e-15. 1e-15 is
Libxc's own ``dens_threshold`` for lda_x / gga_x_pbe / mgga_x_tpss, which screen each spin
channel with rho_sigma <= 1e-15 (closed shell: rho < 2e-15); the correlation parts screen
the total density at 1e-15 (lda_c_pw_mod, mgga_c_tpss) and 1e-12 (gga_c_pbe). Below that
only the screening itself is compared (both sides give ~0). The implementation reproduces
all these screens, so nothing above them is excluded.

Potentials: autograd of E = sum_g e_xc(r_g) with unit weights gives de_xc/dfeature at each
point, compared with Libxc's vrho / vsigma / vtau via the chain rule (spin 0: sigma =
|grad rho|^2 of the total density, so dE/d(grad rho_alpha) = 2 vsigma grad rho). Because the
gradient parts of a correlation energy vanish by cancellation in density tails (H -> -eps_c^LDA)
and vtau vanishes where tau -> tau_W, plain relative errors of vsigma/vtau there only measure
rounding noise of the cancellation (in Libxc as much as here). The potentials are therefore
compared with an error scaled to the energy density:
    |dv| * x / max(|e_xc|, |v| x)        (x = rho, |grad rho|, tau respectively)
which is the relative error of the potential's contribution to the first-order energy change,
and, separately, with a plain relative error where the density is not tiny.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.functionals import LDA, PBE, TORCH_FUNCTIONALS, TPSS

pyscf = pytest.importorskip("pyscf")
from pyscf import dft, gto  # noqa: E402
from pyscf.dft import gen_grid, libxc, numint  # noqa: E402

RHO_SPIN_THR = 1e-15  # Libxc dens_threshold of the spin-scaled exchange parts
E_TOL = 1e-10  # relative, energy density
V_TOL = 1e-8  # scaled, potentials
V_PLAIN_TOL = 1e-8  # plain relative, potentials, on points with rho > V_PLAIN_RHO
V_PLAIN_RHO = 1e-6

_MOLS = {
    "h2o": dict(atom="O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692", spin=0),
    "ch4": dict(
        atom="C 0 0 0; H 0.6291 0.6291 0.6291; H -0.6291 -0.6291 0.6291; "
        "H -0.6291 0.6291 -0.6291; H 0.6291 -0.6291 -0.6291",
        spin=0,
    ),
    "oh": dict(atom="O 0 0 0; H 0 0 0.97", spin=1),
}

_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _density(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rho_alpha, rho_beta) each (5, G) = [rho, d/dx, d/dy, d/dz, tau] on a level-3 grid."""
    if name not in _CACHE:
        spec = _MOLS[name]
        mol = gto.M(atom=spec["atom"], spin=spec["spin"], basis="def2-svp", verbose=0)
        grids = gen_grid.Grids(mol)
        grids.level = 3
        grids.build()
        ao = numint.eval_ao(mol, grids.coords, deriv=1)
        if spec["spin"] == 0:
            dm = dft.RKS(mol).get_init_guess()
            r = numint.eval_rho(mol, ao, dm, xctype="MGGA", with_lapl=False)
            ra = rb = 0.5 * r
        else:
            # a few cheap UKS cycles give a genuinely spin-polarised density
            mf = dft.UKS(mol, xc="lda,vwn")
            mf.grids.level = 1
            mf.max_cycle = 4
            mf.kernel()
            dma, dmb = mf.make_rdm1()
            ra = numint.eval_rho(mol, ao, dma, xctype="MGGA", with_lapl=False)
            rb = numint.eval_rho(mol, ao, dmb, xctype="MGGA", with_lapl=False)
        _CACHE[name] = (np.ascontiguousarray(ra), np.ascontiguousarray(rb))
    return _CACHE[name]


def _features(ra: np.ndarray, rb: np.ndarray, requires_grad: bool = True) -> dict[str, torch.Tensor]:
    f = {
        "density": torch.tensor(np.stack([ra[0], rb[0]])),
        "grad": torch.tensor(np.stack([ra[1:4], rb[1:4]])),
        "kin": torch.tensor(np.stack([ra[4], rb[4]])),
        "grid_weights": torch.ones(ra.shape[1], dtype=torch.float64),
    }
    if requires_grad:
        for k in ("density", "grad", "kin"):
            f[k].requires_grad_(True)
    return f


def _libxc_input(cls, ra, rb, spin):
    """Libxc input in PySCF layout for the functional's family."""
    n = {LDA: 1, PBE: 4, TPSS: 5}[cls]
    if spin == 0:
        r = ra + rb
        return r[0] if n == 1 else r[:n]
    return (ra[0], rb[0]) if n == 1 else (ra[:n], rb[:n])


def _rel(a, b):
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


def compare_to_libxc(cls, ra, rb, spin) -> dict[str, float]:
    """Max errors of cls() against Libxc on the points above the threshold (see module doc)."""
    func = cls()
    f = _features(ra, rb)
    e = func.get_exc_density(f)
    dens, grad, kin = torch.autograd.grad(e.sum(), [f["density"], f["grad"], f["kin"]], allow_unused=True)
    e = e.detach().numpy()
    exc, vxc = libxc.eval_xc(cls.libxc_code, _libxc_input(cls, ra, rb, spin), spin=spin, deriv=1)[:2]
    rho = ra[0] + rb[0]
    e_ref = rho * exc
    keep = (ra[0] > RHO_SPIN_THR) & (rb[0] > RHO_SPIN_THR)
    out = {"e": _rel(e, e_ref)[keep].max()}
    # below the threshold both sides only screen: tiny either way
    out["e_below_abs"] = np.abs(e - e_ref)[~keep].max() if (~keep).any() else 0.0
    ae = np.abs(e_ref)
    dense = keep & (ra[0] > V_PLAIN_RHO) & (rb[0] > V_PLAIN_RHO)

    def scaled(dv, v, x):
        return (np.abs(dv) * x / np.maximum(np.maximum(ae, np.abs(v) * x), 1e-300))[keep].max()

    def plain(v, v_ref, x):
        # plain relative error where the potential term is not negligible (|v| x >= 1e-4 |e|)
        sel = dense & (np.abs(v_ref) * x >= 1e-4 * ae)
        return _rel(v, v_ref)[sel].max()

    spins = [(0, ra), (1, rb)] if spin else [(0, ra)]
    vrho = vxc[0].reshape(len(rho), -1)
    for s, rs_ in spins:
        dv = dens[s].numpy() - vrho[:, s]
        x = rs_[0] if spin else rho
        out[f"vrho{s}"] = scaled(dv, vrho[:, s], x)
        out[f"vrho{s}_plain"] = plain(dens[s].numpy(), vrho[:, s], x)
    if grad is not None:
        vs = vxc[1].reshape(len(rho), -1)
        for s, rs_ in spins:
            if spin == 0:
                g_tot = ra[1:4] + rb[1:4]
                ref = 2.0 * vs[:, 0] * g_tot
            else:  # dE/d grad rho_s = 2 v_ss grad rho_s + v_ab grad rho_s'
                other = rb if s == 0 else ra
                ref = 2.0 * vs[:, 2 * s] * rs_[1:4] + vs[:, 1] * other[1:4]
            d = grad[s].numpy()
            dn = np.linalg.norm(d - ref, axis=0)
            rn = np.linalg.norm(ref, axis=0)
            gnorm = np.linalg.norm(rs_[1:4] if spin else ra[1:4] + rb[1:4], axis=0)
            out[f"vgrad{s}"] = scaled(dn, rn / np.maximum(gnorm, 1e-300), gnorm)
            sel = dense & (rn * gnorm >= 1e-4 * ae)
            out[f"vgrad{s}_plain"] = (dn / np.maximum(rn, 1e-300))[sel].max()
    if kin is not None:
        vt = vxc[3].reshape(len(rho), -1)
        for s, rs_ in spins:
            x = rs_[4] if spin else ra[4] + rb[4]
            out[f"vtau{s}"] = scaled(kin[s].numpy() - vt[:, s], vt[:, s], x)
            out[f"vtau{s}_plain"] = plain(kin[s].numpy(), vt[:, s], x)
    return out


def _check(errs: dict[str, float]) -> None:
    assert errs["e"] < E_TOL, errs
    assert errs["e_below_abs"] < 1e-15, errs
    for k, v in errs.items():
        if k.startswith("v"):
            assert v < (V_PLAIN_TOL if k.endswith("_plain") else V_TOL), (k, errs)


# ----------------------------------------------------------------------------------------
# correctness against Libxc
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mol", ["h2o", "ch4"])
@pytest.mark.parametrize("name", ["lda", "pbe", "tpss"])
def test_closed_shell_matches_libxc(name, mol):
    ra, rb = _density(mol)
    _check(compare_to_libxc(TORCH_FUNCTIONALS[name], ra, rb, spin=0))


@pytest.mark.parametrize("name", ["lda", "pbe", "tpss"])
def test_spin_polarized_matches_libxc(name):
    ra, rb = _density("oh")
    assert np.abs(ra[0] - rb[0]).max() > 0.05  # genuinely polarised
    _check(compare_to_libxc(TORCH_FUNCTIONALS[name], ra, rb, spin=1))


@pytest.mark.parametrize("name", ["lda", "pbe", "tpss"])
def test_total_energy_matches_pyscf(name):
    """get_exc with the real grid weights equals PySCF's numint E_xc (closed shell H2O)."""
    spec = _MOLS["h2o"]
    mol = gto.M(atom=spec["atom"], basis="def2-svp", verbose=0)
    grids = gen_grid.Grids(mol)
    grids.level = 3
    grids.build()
    dm = dft.RKS(mol).get_init_guess()
    ra, rb = _density("h2o")
    f = _features(ra, rb, requires_grad=False)
    f["grid_weights"] = torch.tensor(grids.weights)
    cls = TORCH_FUNCTIONALS[name]
    exc = cls().get_exc(f)
    assert exc.dtype == torch.float64 and exc.ndim == 0
    ni = numint.NumInt()
    _, e_ref, _ = ni.nr_rks(mol, grids, cls.libxc_code, dm)
    assert abs(exc.item() - e_ref) < 1e-10 * abs(e_ref)


def test_tpss_fermi_hole_clamp_and_kin_dependence():
    """TPSS uses tau (changing it changes E) and, like Libxc, clamps sigma <= 8 rho tau."""
    rng = np.random.default_rng(1)
    n = 64
    rho = 10 ** rng.uniform(-4, 1, n)
    g = rng.normal(size=(3, n)) * rho
    sig = (g**2).sum(0)
    tau = sig / (8 * rho) * rng.uniform(0.3, 3.0, n)  # about half the points violate tau >= tau_W
    r = np.vstack([rho, g, tau])
    assert (tau < sig / (8 * rho)).sum() > 10
    f = _features(0.5 * r, 0.5 * r, requires_grad=False)
    e = TPSS().get_exc_density(f).numpy()
    exc = libxc.eval_xc(TPSS.libxc_code, r, spin=0, deriv=0)[0]
    assert np.max(_rel(e, rho * exc)) < E_TOL
    f["kin"] = f["kin"] * 1.5
    assert not np.allclose(TPSS().get_exc_density(f).numpy(), e)


# ----------------------------------------------------------------------------------------
# autodiff safety (SCF: first derivatives; TDDFT: second derivatives)
# ----------------------------------------------------------------------------------------


def _awkward_features() -> dict[str, torch.Tensor]:
    """Zero / tiny / threshold-straddling densities, zero gradients, zero tau, one-spin points."""
    f64 = torch.float64
    rho_a = torch.tensor([0, 0, 1e-30, 1e-16, 1e-15, 2e-15, 1e-13, 1e-12, 1e-10, 1e-6, 0.3, 0.3, 2, 0.4, 0], dtype=f64)
    rho_b = torch.tensor([0, 1e-20, 1e-30, 1e-16, 1e-15, 2e-15, 1e-13, 1e-12, 1e-10, 1e-6, 0.3, 0, 2, 0.1, 0.7], dtype=f64)
    n = rho_a.numel()
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(2, 3, n, generator=gen, dtype=torch.float64) * torch.stack([rho_a, rho_b])[:, None]
    grad[:, :, 10] = 0.0  # finite density, zero gradient
    grad[:, :, 12] = 0.0
    rs = torch.stack([rho_a, rho_b])
    kin = 0.2 * rs ** (5.0 / 3.0) + (grad**2).sum(1) / (8 * rs.clamp(min=1e-300))
    kin[:, 12] = 0.0  # finite density, zero tau
    kin[:, 13] = 0.0  # finite density and gradient, zero tau (Fermi-hole clamp fully active)
    kin[:, 0] = 0.0
    return {
        "density": rs.requires_grad_(True),
        "grad": grad.requires_grad_(True),
        "kin": kin.requires_grad_(True),
        "grid_weights": torch.rand(n, generator=gen, dtype=torch.float64),
    }


@pytest.mark.parametrize("name", ["lda", "pbe", "tpss"])
def test_autodiff_finite_at_zero_density(name):
    f = _awkward_features()
    inputs = [f["density"], f["grad"], f["kin"]]
    exc = TORCH_FUNCTIONALS[name]().get_exc(f)
    assert torch.isfinite(exc)
    grads = torch.autograd.grad(exc, inputs, create_graph=True, allow_unused=True)
    used = [(x, g) for x, g in zip(inputs, grads) if g is not None]
    for _, g in used:
        assert torch.isfinite(g).all()
    # Hessian-vector product with a random direction
    gen = torch.Generator().manual_seed(1)
    dirs = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x, _ in used]
    lin = sum((g * d).sum() for (_, g), d in zip(used, dirs))
    hvp = torch.autograd.grad(lin, [x for x, _ in used], allow_unused=True)
    for h in hvp:
        assert h is None or torch.isfinite(h).all()
    # screened points contribute nothing
    assert grads[0][:, 0].abs().max() == 0.0


@pytest.mark.parametrize("name", ["lda", "pbe", "tpss"])
def test_second_derivative_matches_finite_difference(name):
    """The double-backward HVP agrees with a central difference of the autograd gradient."""
    ra, rb = _density("oh")
    sel = np.flatnonzero(ra[0] > 1e-3)[::40]
    f = _features(ra[:, sel], rb[:, sel])
    inputs = [f["density"], f["grad"], f["kin"]]
    func = TORCH_FUNCTIONALS[name]()
    gen = torch.Generator().manual_seed(2)
    dirs = [torch.randn(x.shape, generator=gen, dtype=torch.float64) * x.detach().abs() for x in inputs]

    def grad_at(h):
        g = {**f}
        for k, x, d in zip(("density", "grad", "kin"), inputs, dirs):
            g[k] = (x.detach() + h * d).requires_grad_(True)
        out = torch.autograd.grad(func.get_exc(g), [g["density"], g["grad"], g["kin"]], allow_unused=True)
        return [torch.zeros_like(x) if o is None else o for x, o in zip(inputs, out)]

    grads = torch.autograd.grad(func.get_exc(f), inputs, create_graph=True, allow_unused=True)
    lin = sum((g * d).sum() for g, d in zip(grads, dirs) if g is not None)
    hvp = torch.autograd.grad(lin, inputs, allow_unused=True)
    h = 1e-5
    gp, gm = grad_at(h), grad_at(-h)
    for x, hv, a, b in zip(inputs, hvp, gp, gm):
        fd = (a - b) / (2 * h)
        hv = torch.zeros_like(x) if hv is None else hv
        assert torch.allclose(hv, fd, rtol=1e-5, atol=1e-7 * fd.abs().max().item() + 1e-14)


# ----------------------------------------------------------------------------------------
# contract, registry, jax
# ----------------------------------------------------------------------------------------


def test_registry_and_contract():
    from harness.contract import ExcFunctional, check_feature_names

    assert set(TORCH_FUNCTIONALS) == {"lda", "pbe", "tpss"}
    for cls in TORCH_FUNCTIONALS.values():
        func = cls()
        assert isinstance(func, torch.nn.Module) and isinstance(func, ExcFunctional)
        check_feature_names(cls.features, cls.__name__)
        assert isinstance(cls.libxc_code, str) and cls.libxc_code
        assert cls.__doc__ and ("PRB" in cls.__doc__ or "PRL" in cls.__doc__)  # cites the paper
    assert "kin" in TPSS.features and "grad" in PBE.features and "grad" not in LDA.features


def test_package_import_does_not_import_jax():
    code = "import sys, harness.functionals; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_jax_pbe_matches_torch():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from harness.functionals.jax_classic import make_pbe, pbe_exc_density

    exc_fn, params = make_pbe()
    # closed-shell H2O and polarised OH points in one batch (a single jax compilation)
    (ha, hb), (oa, ob) = _density("h2o"), _density("oh")
    ra, rb = np.hstack([ha, oa]), np.hstack([hb, ob])
    f = _features(ra, rb)
    f["grid_weights"] = torch.rand(ra.shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    e_t = PBE().get_exc(f)
    g_t = torch.autograd.grad(e_t, [f["density"], f["grad"]])
    ed_t = PBE().get_exc_density(f).detach().numpy()

    def everything(p, feats):
        (e, ed), (gp, gf) = jax.value_and_grad(
            lambda p_, f_: (exc_fn(p_, f_), pbe_exc_density(p_, f_)), argnums=(0, 1), has_aux=True
        )(p, feats)
        return e, ed, gp, gf

    fj = {k: jnp.asarray(v.detach().numpy()) for k, v in f.items() if k != "kin"}
    assert fj["density"].dtype == jnp.float64
    e_j, ed_j, dparams, g_j = jax.jit(everything)(params, fj)
    assert abs(float(e_j) - e_t.item()) <= 1e-12 * abs(e_t.item())
    ed_j = np.asarray(ed_j)
    assert np.max(_rel(ed_j, ed_t)[ed_t != 0]) < 1e-12
    assert np.all(ed_j[ed_t == 0] == 0)
    for key, gt in zip(("density", "grad"), g_t):
        gj = np.asarray(g_j[key])
        gt = gt.numpy()
        assert np.all(np.abs(gj - gt) <= 1e-12 * np.abs(gt) + 1e-14 * np.abs(gt).max()), key
    # params are a differentiable pytree (e.g. for fitting kappa / mu / beta)
    assert all(np.isfinite(float(v)) and float(v) != 0.0 for v in dparams.values())


def test_jax_pbe_finite_at_zero_density():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from harness.functionals.jax_classic import make_pbe

    exc_fn, params = make_pbe()
    f = _awkward_features()
    fj = {k: jnp.asarray(v.detach().numpy()) for k, v in f.items() if k != "kin"}
    grad_fn = jax.grad(exc_fn, argnums=1)
    tangent = {k: jnp.ones_like(v) for k, v in fj.items()}
    g, hvp = jax.jit(lambda x, t: jax.jvp(lambda y: grad_fn(params, y), (x,), (t,)))(fj, tangent)
    assert all(bool(jnp.isfinite(v).all()) for v in g.values())
    assert all(bool(jnp.isfinite(v).all()) for v in hvp.values())
