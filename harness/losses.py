"""Training losses of the baseline trainers: E+D (energy + density, implicit through the SCF)
and DI (E+D plus orbital-gradient and Hessian supervision), closed shell (PROTOCOL §4).

Notation
--------
Orbital rotations κ (nvir, nocc) act on orbitals C as C(κ) = C·exp(K), K = [[0, −κᵀ], [κ, 0]]
(`harness.grassmann.rotate`), P(κ) = 2 C_occ(κ) C_occ(κ)ᵀ. To first order
dP = 2 (C_v dκ C_oᵀ + C_o dκᵀ C_vᵀ), so for any function f(P) with symmetric ∂f/∂P = V,

    ∂f/∂κ = 4 C_vᵀ V C_o,                             (1)

in particular the energy gradient g = ∂E/∂κ = 4 C_vᵀ F C_o. At canonical orbitals of a
converged SCF the orbital Hessian is H = ∂²E/∂κ² = 4 (A + B) with the singlet TDDFT matrices
of `harness.tddft` ((A+B) x = Δε∘x + 2 C_vᵀ δF[C_v x C_oᵀ + h.c.] C_o, no exact exchange).

E+D loss (per geometry)
-----------------------
1. The model's own SCF (`harness.scf.run_scf`, DF-J, tight tolerances ``scf_conv_tol_grad``),
   with no autograd graph through the iterations, started from P_ref or, in training, from the
   geometry's last converged P* (`WarmStart`). Its canonical orbitals C* define P* = 2 C*_o C*_oᵀ.
2. Energy term   L_E = w_E · (ΔE / 1 mEh)²,  ΔE = E_model[P*] − E_ref, E_model with exact
   (4-centre) J, the quantity `harness evaluate` scores.
3. Density term  L_D = w_D · D / (10⁻³)²,  D = ∫ (ρ*(r) − ρ_ref(r))² dr on the training grid,
   i.e. the square of the evaluation's L2 density error in units of 10⁻³ a.u.
4. Gradient. With θ the model parameters and κ*(θ) the SCF solution, the fixed-point condition
   g(κ*, θ) = 0 gives dκ*/dθ = −H⁻¹ ∂g/∂θ. Hence, for L = L_E + L_D,

       dL/dθ = ∂L/∂θ|_κ − λ·∂g/∂θ,     H λ = ∂L/∂κ                       (2)

   * ∂L/∂θ|_κ = 2 w_E ΔE/mEh² · ∂E_xc/∂θ at fixed P* (Hellmann–Feynman; L_D has no explicit θ);
   * ∂L/∂κ = 2 w_E ΔE/mEh² · g_exactJ + w_D/10⁻⁶ · ∂D/∂κ, both from (1). g_exactJ is the
     exact-J energy gradient at P* (the SCF zeroes the DF-J one; their small difference is
     the DF error, kept here so the energy gradient is exact for the exact-J energy);
   * λ from preconditioned conjugate gradient (preconditioner 4Δε), from 0 or (with
     ``SolverOptions.cg_warm_start``) from the last step's λ carried into the new orbitals
     (`WarmStart`: λ₀ = C_vᵀ S T S C_o with T = C_v' λ' C_o'ᵀ the previous solution in AO
     form; this absorbs sign flips and rotations among degenerate orbitals) and rescaled to its
     best multiple (the energy term's weight 2ΔE changes from step to step); with Hessian-vector
     products of the model energy at the SCF solution through the TDDFT response machinery
     (`harness.tddft.XCKernel`/`MOResponse`, DF-J as in the SCF whose fixed point it is);
   * λ·∂g/∂θ = ∂/∂θ Σ_f ∂E_xc/∂f · f(δP_λ), δP_λ = 2 (C_v λ C_oᵀ + h.c.), by autograd through
     one ``get_exc`` graph with ``create_graph=True`` (features are linear in P). This is the
     θ-derivative of λ·g(θ) at fixed orbitals: J and the one-electron part of g carry no θ.
   Nothing is unrolled; one SCF, one CG solve and two backward passes per geometry.

DI loss (per geometry)
----------------------
E+D plus, at the stored sample points s of the DI targets (orbitals rotate(C_ref, nocc, κ_s)),

    L_g = w_g · mean_s ‖g_model,s − g_ref,s‖² / (1 mEh)²,
    L_H = w_H · mean_s mean_p ‖(H v_p)_model,s − (H v_p)_ref,s‖² / (1 mEh)²,

with g and H·v from `harness.grassmann.energy_gradient_hvp` (exact J, the same
parametrisation as the B3LYP targets of `harness.reference.di_targets`), differentiated with
respect to θ by autograd (``create_graph=True``). ‖·‖ sums over the (nvir, nocc) entries.

Units and defaults (`LossWeights`): every term is dimensionless; energies, gradients and
Hessian products are measured in mEh (per radian, per radian²), densities in 10⁻³ a.u.
Defaults w_E = 1, w_D = 1, w_g = 0.1, w_H = 0.01 put the four terms at comparable size for a
semi-local functional near PBE against B3LYP (measured on H2O: ΔE ≈ 86 mEh → L_E ≈ 7e3;
D ≈ see docs/reproduction.md). A geometry whose model SCF does not converge contributes no
E+D gradient (the implicit gradient needs a fixed point); it is counted in the metrics.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from harness.features import contract_coefficients
from harness.integrals import MoleculeSetup, build_setup, exact_coulomb_matrix
from harness.scf import needs_of, run_scf
from harness.tddft import MOResponse, XCKernel
from harness.xc import XCEngine

#: Energy unit of the loss (1 mEh in Eh).
ENERGY_UNIT_EH = 1e-3
#: Density unit of the loss: D = ∫Δρ² is divided by DENSITY_UNIT² (L2 error in 1e-3 a.u.).
DENSITY_UNIT = 1e-3


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (dimensionless; see the module docstring for units)."""

    energy: float = 1.0
    density: float = 1.0
    gradient: float = 0.1
    hvp: float = 0.01

    def to_dict(self) -> dict:
        return {"energy": self.energy, "density": self.density, "gradient": self.gradient, "hvp": self.hvp}


DEFAULT_WEIGHTS = LossWeights()


@dataclass(frozen=True)
class SolverOptions:
    """Model-SCF and CG settings of the implicit gradient."""

    scf_max_cycle: int = 60
    scf_conv_tol_energy: float = 1e-10
    scf_conv_tol_grad: float = 1e-7
    cg_tol: float = 1e-6  # relative residual ‖Hλ − b‖ / ‖b‖
    cg_max_iter: int = 50
    #: start each geometry's SCF from its previous step's density (`WarmStart`)
    warm_start: bool = True
    #: and its adjoint CG from its previous λ (off: measured not to pay, docs/performance.md
    #: "Warm starts": the model moves enough per step that the start saves less than the
    #: product it costs)
    cg_warm_start: bool = False


DEFAULT_SOLVER = SolverOptions()


# ------------------------------------------------------------------------------------------
# training geometries
# ------------------------------------------------------------------------------------------


@dataclass
class DITargets:
    """Reference DI-Loss targets of one geometry (`harness.reference.di_targets`), as tensors.

    Sample point s has orbitals rotate(C_ref, nocc, kappa[s])."""

    kappa: torch.Tensor  # (S, nvir, nocc)
    energy_Eh: torch.Tensor  # (S,)
    gradient: torch.Tensor  # (S, nvir, nocc)
    probes: torch.Tensor  # (S, P, nvir, nocc)
    hvp: torch.Tensor  # (S, P, nvir, nocc)

    @classmethod
    def from_any(cls, obj, dtype=torch.float64, device="cpu") -> "DITargets":
        """From a mapping or an object with the five fields (numpy or torch)."""
        def get(name):
            v = obj[name] if isinstance(obj, dict) else getattr(obj, name)
            return torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).to(device, dtype)
        return cls(*(get(n) for n in ("kappa", "energy_Eh", "gradient", "probes", "hvp")))

    @property
    def n_samples(self) -> int:
        return int(self.kappa.shape[0])


@dataclass
class TrainingGeometry:
    """One geometry prepared for training: setup, reference density and energy, DI targets."""

    key: str
    setup: MoleculeSetup
    energy_ref_Eh: float
    dm_ref: torch.Tensor  # (nao, nao)
    mo_coeff_ref: torch.Tensor  # (nao, nmo)
    rho_ref: torch.Tensor  # (G,) total density of dm_ref on the setup grid
    di: DITargets | None = None
    #: per-geometry cache of parameter-independent pieces (grassmann fixed terms per sample)
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def nocc(self) -> int:
        return self.setup.nocc


def rho_on_grid(setup: MoleculeSetup, P: torch.Tensor) -> torch.Tensor:
    """Total density ρ (G,) of a density matrix on the setup grid."""
    from harness.features import total_features

    return total_features(setup, P, ("density",))["rho"][0]


def prepare_geometry(record, functional=None, setup: MoleculeSetup | None = None, grid_level: int = 3,
                     di=None, device="cpu") -> TrainingGeometry:
    """A `TrainingGeometry` from a reference record (`harness.reference.compute.ReferenceRecord`).

    ``functional`` decides which AO derivatives the setup needs (all of them when None).
    ``di``: DI targets (mapping or object with kappa, energy_Eh, gradient, probes, hvp)."""
    if setup is None:
        kw = needs_of(functional) if functional is not None else {"need_grad": True, "need_tau": True}
        setup = build_setup(record.molecule, grid_level=grid_level, device=device, **kw)
    dt, dev = setup.dtype, setup.device
    dm = torch.as_tensor(np.asarray(record.dm), dtype=dt, device=dev)
    C = torch.as_tensor(np.asarray(record.mo_coeff), dtype=dt, device=dev)
    return TrainingGeometry(
        key=record.key, setup=setup, energy_ref_Eh=float(record.energy_Eh), dm_ref=dm, mo_coeff_ref=C,
        rho_ref=rho_on_grid(setup, dm), di=None if di is None else DITargets.from_any(di, dt, dev),
    )


@dataclass
class WarmStart:
    """Where a geometry's next model SCF and adjoint CG start: its last converged density
    matrix ``dm`` (nao, nao) and its last adjoint solution in AO form ``lam_ao`` = C_v λ C_oᵀ
    (nao, nao; None before the first solve). Plain tensors, so a checkpoint stores them and a
    task carries them."""

    dm: torch.Tensor
    lam_ao: torch.Tensor | None = None

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}dm": self.dm.contiguous()}
        if self.lam_ao is not None:
            out[f"{prefix}lam_ao"] = self.lam_ao.contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> "WarmStart | None":
        dm = tensors.get(f"{prefix}dm")
        return None if dm is None else cls(dm, tensors.get(f"{prefix}lam_ao"))

    def kappa_in(self, S: torch.Tensor, Co: torch.Tensor, Cv: torch.Tensor) -> torch.Tensor | None:
        """The stored λ in the orbitals (Co, Cv): C_vᵀ S T S C_o (nvir, nocc)."""
        if self.lam_ao is None:
            return None
        return Cv.T @ S @ self.lam_ao @ S @ Co


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(module):
    """Parameters with ``requires_grad=False`` inside the block (no θ graph in SCF/CG)."""
    params = [p for p in module.parameters() if p.requires_grad] if hasattr(module, "parameters") else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class CGResult(NamedTuple):
    """Result of `conjugate_gradient`: the solution, iterations, the relative residual
    ‖Hx − b‖/‖b‖, and whether it stopped on a direction p with pᵀHp ≤ 0 (H not positive
    definite there: the adjoint solution is then only partial)."""

    x: torch.Tensor
    iterations: int
    residual: float
    nonpositive_curvature: bool = False


def conjugate_gradient(matvec, b: torch.Tensor, precond: torch.Tensor | None = None, tol: float = 1e-6,
                       max_iter: int = 50, x0: torch.Tensor | None = None) -> CGResult:
    """Solve H x = b (H symmetric positive definite, given as ``matvec``) by preconditioned CG
    with the diagonal preconditioner ``precond`` (x ↦ x / precond). Stops early, and says so
    (``nonpositive_curvature``), if pᵀHp ≤ 0.

    ``x0``: a starting direction. CG starts from its multiple α·x0 closest to the solution in
    the H-norm (α = x0ᵀb / x0ᵀHx0, the Galerkin choice; never worse than 0), so a previous
    solution helps even when the right-hand side has been rescaled. Its product H·x0 counts as
    one iteration."""
    bn = float(torch.linalg.norm(b))
    x = torch.zeros_like(b)
    if bn == 0.0:
        return CGResult(x, 0, 0.0)
    r = b.clone()
    rel = 1.0
    it0 = 0
    if x0 is not None:
        Hx0 = matvec(x0)
        it0 = 1
        curvature = float((x0 * Hx0).sum())
        if curvature > 0.0:
            alpha = float((x0 * b).sum()) / curvature
            x, r = alpha * x0, b - alpha * Hx0
            rel = float(torch.linalg.norm(r)) / bn
            if rel < tol:
                return CGResult(x, it0, rel)
    z = r / precond if precond is not None else r
    p = z.clone()
    rz = float((r * z).sum())
    it = it0
    for it in range(it0 + 1, max_iter + 1):
        Hp = matvec(p)
        pHp = float((p * Hp).sum())
        if pHp <= 0.0:  # not positive definite along p: keep what we have
            return CGResult(x, it, rel, True)
        alpha = rz / pHp
        x = x + alpha * p
        r = r - alpha * Hp
        rel = float(torch.linalg.norm(r)) / bn
        if rel < tol:
            break
        z = r / precond if precond is not None else r
        rz_new = float((r * z).sum())
        p = z + (rz_new / rz) * p
        rz = rz_new
    return CGResult(x, it, rel)


class OrbitalHessian:
    """H·κ = ∂²E/∂κ² · κ of the model energy at canonical SCF orbitals (DF-J, as the SCF),
    through the TDDFT response machinery: H = 4 (A + B)."""

    def __init__(self, functional, setup: MoleculeSetup, C: torch.Tensor, eps: torch.Tensor, nocc: int):
        self.setup = setup
        self.Co, self.Cv = C[:, :nocc], C[:, nocc:]
        self.nocc, self.nvir = nocc, C.shape[1] - nocc
        P0 = 2.0 * self.Co @ self.Co.T
        self.kernel = XCKernel(functional, setup, P0)  # the shared engine's batching policy
        self.mo_xc = MOResponse(self.kernel, setup, self.Co, self.Cv)
        self.de = eps[nocc:, None] - eps[None, :nocc]  # (nvir, nocc)
        self.products = 0

    def __call__(self, kappa: torch.Tensor) -> torch.Tensor:
        X = kappa.reshape(-1, self.nvir, self.nocc)
        T = self.Cv @ X @ self.Co.T
        dP = T + T.transpose(-1, -2)
        resp = self.Cv.T @ self.setup.coulomb_df(dP) @ self.Co + self.mo_xc(X)
        self.products += X.shape[0]
        return (4.0 * (self.de * X + 2.0 * resp)).reshape(kappa.shape)

    @property
    def diagonal(self) -> torch.Tensor:
        """The Δε part of the diagonal, 4 (ε_a − ε_i): the CG preconditioner."""
        return 4.0 * self.de


def _kappa_gradient(V: torch.Tensor, Co: torch.Tensor, Cv: torch.Tensor) -> torch.Tensor:
    """∂f/∂κ = 4 C_vᵀ V C_o for a symmetric ∂f/∂P = V (equation (1))."""
    Vs = 0.5 * (V + V.T)
    return 4.0 * (Cv.T @ Vs @ Co)


def _density_error_grad(setup: MoleculeSetup, rho: torch.Tensor, rho_ref: torch.Tensor) -> tuple[float, torch.Tensor]:
    """D = Σ_g w_g (ρ − ρ_ref)² and ∂D/∂P (nao, nao)."""
    w = setup.grid_weights
    d = rho - rho_ref
    D = float((w * d * d).sum())
    V = contract_coefficients(setup, (2.0 * w * d).unsqueeze(0))[0]
    return D, V


# ------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------


@dataclass
class LossOutput:
    """Value and diagnostics of one geometry's loss (gradients were accumulated into .grad)."""

    key: str
    loss: float
    terms: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: where this geometry's next SCF and CG start (None: its SCF did not converge)
    warm: WarmStart | None = None


def ed_loss(functional, geom: TrainingGeometry, weights: LossWeights = DEFAULT_WEIGHTS,
            solver: SolverOptions = DEFAULT_SOLVER, backward: bool = True, scale: float = 1.0,
            scf=None, warm: WarmStart | None = None) -> LossOutput:
    """E+D loss of one geometry; with ``backward`` its parameter gradient (times ``scale``) is
    accumulated into the parameters' ``.grad`` (equation (2) of the module docstring).

    ``scf``: a precomputed converged `SCFResult` of this functional (otherwise run here).
    ``warm``: where the SCF (``solver.warm_start``) and the CG (``solver.cg_warm_start``) start;
    default P_ref and 0. The output's ``warm`` is the start for the next call."""
    setup = geom.setup
    if not solver.warm_start:
        warm = None
    t0 = time.perf_counter()
    if scf is None:
        dm0 = warm.dm if warm is not None else geom.dm_ref
        with frozen(functional):
            scf = run_scf(functional, setup, dm0=dm0, max_cycle=solver.scf_max_cycle,
                          conv_tol_energy=solver.scf_conv_tol_energy, conv_tol_grad=solver.scf_conv_tol_grad,
                          exact_j=False)
    t_scf = time.perf_counter() - t0
    nocc = setup.nocc
    C = scf.mo_coeff.detach()
    eps = scf.mo_energy.detach()
    Co, Cv = C[:, :nocc], C[:, nocc:]
    P = 2.0 * Co @ Co.T

    # one get_exc graph at P*: E_xc(θ) and ∂E_xc/∂f(θ) (create_graph for λ·∂g/∂θ)
    engine = XCEngine(functional, setup)
    feats = engine.features_of(P, C_occ=Co)
    leaves = {n: f.detach().requires_grad_(True) for n, f in feats.items()}
    need_graph = backward and scf.converged
    with torch.enable_grad():
        exc = engine.energy(leaves)
        dE_df = torch.autograd.grad(exc, list(leaves.values()), create_graph=need_graph, allow_unused=True)
    dE = {n: g for n, g in zip(leaves, dE_df) if g is not None}
    Vxc = engine.contract({n: g.detach() for n, g in dE.items()}) if dE else torch.zeros_like(P)

    J = exact_coulomb_matrix(setup, P)
    e1 = float((P * setup.hcore).sum())
    ej = 0.5 * float((P * J).sum())
    energy = e1 + ej + float(exc.detach()) + setup.energy_nuc
    dE_mEh = (energy - geom.energy_ref_Eh) / ENERGY_UNIT_EH
    L_E = weights.energy * dE_mEh**2

    rho = 2.0 * leaves["density"].detach()[0] if "density" in leaves else rho_on_grid(setup, P)
    D, V_D = _density_error_grad(setup, rho, geom.rho_ref)
    L_D = weights.density * D / DENSITY_UNIT**2
    loss = L_E + L_D
    metrics = {
        "energy_error_mEh": dE_mEh, "density_l2": math.sqrt(max(D, 0.0)),
        "scf_iterations": float(scf.iterations), "scf_converged": float(scf.converged),
        "scf_s": t_scf,
    }
    next_warm = WarmStart(P.detach().clone(), None if warm is None else warm.lam_ao) if scf.converged else None
    if not need_graph:
        return LossOutput(geom.key, loss, {"energy": L_E, "density": L_D}, metrics, next_warm)

    # ∂L/∂κ and the adjoint solve H λ = ∂L/∂κ
    cE = weights.energy * 2.0 * dE_mEh / ENERGY_UNIT_EH  # ∂L_E/∂E (1/Eh)
    cD = weights.density / DENSITY_UNIT**2  # ∂L_D/∂D
    F_exact = setup.hcore + J + Vxc
    b = cE * _kappa_gradient(F_exact, Co, Cv) + cD * _kappa_gradient(V_D, Co, Cv)
    t1 = time.perf_counter()
    with frozen(functional):
        H = OrbitalHessian(functional, setup, C, eps, nocc)
        x0 = warm.kappa_in(setup.S, Co, Cv) if warm is not None and solver.cg_warm_start else None
        cg = conjugate_gradient(H, b, precond=H.diagonal, tol=solver.cg_tol, max_iter=solver.cg_max_iter, x0=x0)
    lam = cg.x
    metrics.update({"cg_iterations": float(cg.iterations), "cg_residual": cg.residual,
                    "cg_converged": float(cg.residual < solver.cg_tol and not cg.nonpositive_curvature),
                    "cg_nonpositive_curvature": float(cg.nonpositive_curvature),
                    "cg_s": time.perf_counter() - t1})

    # surrogate whose θ-gradient is dL/dθ: cE·E_xc(θ) − Σ_f ∂E_xc/∂f(θ) · f(δP_λ)
    T = Cv @ lam @ Co.T
    next_warm.lam_ao = T.detach().clone()
    dP_lam = 2.0 * (T + T.T)
    dfeat = engine.features_of(dP_lam)
    with torch.enable_grad():
        surrogate = cE * exc
        for n, g in dE.items():
            if g.requires_grad:
                surrogate = surrogate - (g * dfeat[n]).sum()
        if surrogate.requires_grad:
            (scale * surrogate).backward()
    return LossOutput(geom.key, loss, {"energy": L_E, "density": L_D}, metrics, next_warm)


def di_terms(functional, geom: TrainingGeometry, weights: LossWeights = DEFAULT_WEIGHTS,
             backward: bool = True, scale: float = 1.0) -> LossOutput:
    """The DI supervision terms alone (L_g + L_H of the module docstring) at the geometry's
    stored sample points; gradients accumulated with ``backward``."""
    from harness.grassmann import energy_gradient_hvp, fixed_terms, rotate

    if geom.di is None:
        raise ValueError(f"{geom.key}: no DI targets (build the reference with DI targets)")
    di = geom.di
    S = di.n_samples
    nocc = geom.nocc
    Lg = LH = 0.0
    g_err = h_err = 0.0
    for s in range(S):
        C = geom.cache.get(("di_orbitals", s))
        if C is None:
            C = geom.cache[("di_orbitals", s)] = rotate(geom.mo_coeff_ref, nocc, di.kappa[s]).detach()
            geom.cache[("di_fixed", s)] = fixed_terms(geom.setup, C, nocc, di.probes[s])
        with torch.enable_grad():
            _, g, Hv = energy_gradient_hvp(functional, geom.setup, C, nocc, di.probes[s], create_graph=backward,
                                           fixed=geom.cache[("di_fixed", s)])
            rg = g - di.gradient[s]
            rh = Hv - di.hvp[s]
            lg = weights.gradient * (rg * rg).sum() / ENERGY_UNIT_EH**2 / S
            lh = weights.hvp * (rh * rh).sum() / ENERGY_UNIT_EH**2 / (S * max(1, rh.shape[0]))
            if backward:
                total = lg + lh
                if total.requires_grad:
                    (scale * total).backward()
        Lg += float(lg.detach())
        LH += float(lh.detach())
        g_err += float(torch.linalg.norm(rg.detach())) / S
        h_err += float(torch.linalg.norm(rh.detach())) / (S * max(1, rh.shape[0]) ** 0.5)
    return LossOutput(geom.key, Lg + LH, {"gradient": Lg, "hvp": LH},
                      {"gradient_rmse_mEh": g_err / ENERGY_UNIT_EH, "hvp_rmse_mEh": h_err / ENERGY_UNIT_EH})


def di_loss(functional, geom: TrainingGeometry, weights: LossWeights = DEFAULT_WEIGHTS,
            solver: SolverOptions = DEFAULT_SOLVER, backward: bool = True, scale: float = 1.0,
            scf=None, warm: WarmStart | None = None) -> LossOutput:
    """DI loss of one geometry: E+D plus the gradient and Hessian-vector terms."""
    out = ed_loss(functional, geom, weights, solver, backward=backward, scale=scale, scf=scf, warm=warm)
    extra = di_terms(functional, geom, weights, backward=backward, scale=scale)
    out.terms.update(extra.terms)
    out.metrics.update(extra.metrics)
    out.loss += extra.loss
    return out


LOSSES = {"ed": ed_loss, "di": di_loss}


def loss_function(name: str):
    """The per-geometry loss by name: ``ed`` or ``di``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}") from None


__all__ = [
    "CGResult", "DEFAULT_SOLVER", "DEFAULT_WEIGHTS", "DENSITY_UNIT", "DITargets", "ENERGY_UNIT_EH", "LOSSES", "LossOutput",
    "LossWeights", "OrbitalHessian", "SolverOptions", "TrainingGeometry", "conjugate_gradient", "di_loss",
    "WarmStart", "di_terms", "ed_loss", "frozen", "loss_function", "prepare_geometry", "rho_on_grid",
]
