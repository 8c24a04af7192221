"""The harness's closed-shell restricted Kohn–Sham SCF driver (torch, device-agnostic).

F = H_core + J_DF[P] + V_xc[P]; J from the density-fitting factor of the setup, V_xc from
`harness.xc.XCEngine` (any contract functional, one ``get_exc`` call per iteration).

Algorithm
---------
* basis: canonical orthogonalisation X = U s^(-1/2), dropping overlap eigenvalues below
  ``lindep_tol`` (near-linear dependence);
* occupation: aufbau, the ``nocc`` lowest orbitals doubly occupied;
* acceleration: Pulay DIIS on the Fock matrix, error e = Xᵀ(FPS − SPF)X, ``diis_space``
  vectors, from the first iteration;
* fallback ladder, when DIIS stalls (the DIIS error has not reached half of its best value
  for ``stall_window`` iterations, or the energy rose by more than 1e-4 Eh in 3 successive
  iterations), one rung per stall, the DIIS history cleared each time:
    1. ``diis``      plain DIIS;
    2. ``damp``      DIIS + density damping, P ← (1−d) P_new + d P_old, d = ``damping`` (0.5);
    3. ``shift``     DIIS + level shift of the virtual space by ``level_shift`` Eh (0.5);
    4. ``shift+damp`` level shift and damping, no DIIS extrapolation;
* convergence: |ΔE| < ``conv_tol_energy`` AND ‖g‖ < ``conv_tol_grad``, with g the RHF
  orbital gradient of PySCF's ``get_grad``, g_ai = 2 (C_virᵀ F C_occ)_ai (Frobenius norm,
  F built from the density of the orbitals C), so the numbers compare with PySCF's log;
* at most ``max_cycle`` iterations; otherwise ``converged=False`` with the full history.

`SCFResult.energy_df_Eh` is the energy with DF-J; `energy_Eh` re-evaluates the Coulomb
energy with exact 4-centre J at the converged density (PySCF direct-SCF J, the only PySCF
call after setup): E = E_DF − ½ tr(P J_DF) + ½ tr(P J_exact).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from harness.contract import FunctionalError, feature_name, uses_atom_layout
from harness.integrals import MoleculeSetup, build_setup, exact_coulomb_matrix
from harness.xc import XCEngine, declared_features

MODES = ("diis", "damp", "shift", "shift+damp")


@dataclass
class SCFResult:
    """Outcome of `run_scf`. Energies in Hartree, times in seconds."""

    energy_Eh: float | None  # exact J at the converged density (None with exact_j=False)
    energy_df_Eh: float  # DF-J energy (the variational one)
    energy_xc_Eh: float
    energy_coulomb_df_Eh: float
    energy_coulomb_exact_Eh: float | None
    energy_one_electron_Eh: float
    energy_nuc_Eh: float
    dm: torch.Tensor
    mo_energy: torch.Tensor
    mo_coeff: torch.Tensor
    mo_occ: torch.Tensor
    fock: torch.Tensor
    iterations: int
    converged: bool
    history: list[dict] = field(default_factory=list)
    setup_s: float = 0.0
    iterations_s: float = 0.0
    exact_j_s: float = 0.0
    wall_s: float = 0.0
    xc_timings: dict = field(default_factory=dict)
    molecule: str = ""
    functional: str = ""
    nao: int = 0
    ngrid: int = 0

    def summary(self) -> dict:
        return {
            "molecule": self.molecule, "functional": self.functional,
            "energy_Eh": self.energy_Eh, "energy_df_Eh": self.energy_df_Eh,
            "energy_xc_Eh": self.energy_xc_Eh, "iterations": self.iterations,
            "converged": self.converged, "wall_s": self.wall_s, "setup_s": self.setup_s,
            "iterations_s": self.iterations_s, "exact_j_s": self.exact_j_s,
            "nao": self.nao, "ngrid": self.ngrid,
        }


def needs_of(functional) -> dict:
    """What `build_setup` must provide for a functional: AO derivatives (``need_grad``,
    ``need_tau``) and Skala's atom-packed layout (``atom_layout``)."""
    declared = declared_features(functional)
    names = [feature_name(n) for n in declared]
    return {"need_grad": "grad" in names or "kin" in names, "need_tau": "kin" in names,
            "atom_layout": uses_atom_layout(declared)}


def orthogonalizer(S: torch.Tensor, lindep_tol: float = 1e-8) -> torch.Tensor:
    """Canonical orthogonalisation X (nao, nmo): Xᵀ S X = 1, small-eigenvalue directions dropped."""
    s, U = torch.linalg.eigh(S)
    keep = s > lindep_tol * s.max()
    return U[:, keep] / torch.sqrt(s[keep])


class _DIIS:
    def __init__(self, space: int):
        self.space = space
        self.F: list[torch.Tensor] = []
        self.E: list[torch.Tensor] = []

    def reset(self):
        self.F.clear()
        self.E.clear()

    def update(self, F: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        self.F.append(F)
        self.E.append(err)
        if len(self.F) > self.space:
            self.F.pop(0)
            self.E.pop(0)
        n = len(self.F)
        if n < 2:
            return F
        E = torch.stack([e.reshape(-1) for e in self.E])
        B = torch.empty(n + 1, n + 1, dtype=F.dtype, device=F.device)
        B[:n, :n] = E @ E.T
        B[n, :n] = -1.0
        B[:n, n] = -1.0
        B[n, n] = 0.0
        rhs = torch.zeros(n + 1, dtype=F.dtype, device=F.device)
        rhs[n] = -1.0
        # scale for conditioning; least squares handles a singular B
        scale = B[:n, :n].diagonal().abs().max().clamp(min=torch.finfo(F.dtype).tiny)
        B[:n, :n] = B[:n, :n] / scale
        try:
            c = torch.linalg.solve(B, rhs)
        except RuntimeError:
            c = torch.linalg.lstsq(B.cpu(), rhs.cpu().unsqueeze(1)).solution.squeeze(1).to(F.device)
        if not bool(torch.isfinite(c).all()):
            return F
        return sum(ci * Fi for ci, Fi in zip(c[:n], self.F))


def _as_setup(setup_or_molecule, functional, device, dtype, setup_kwargs) -> MoleculeSetup:
    if isinstance(setup_or_molecule, MoleculeSetup):
        setup = setup_or_molecule
        if device is not None or dtype is not None:
            setup = setup.to(device=device, dtype=dtype)
        return setup
    kw = dict(needs_of(functional))
    kw.update(setup_kwargs or {})
    return build_setup(setup_or_molecule, device=device or "cpu", dtype=dtype or torch.float64, **kw)


def run_scf(
    functional,
    setup_or_molecule,
    dm0: torch.Tensor | None = None,
    max_cycle: int = 100,
    conv_tol_energy: float = 1e-9,
    conv_tol_grad: float = 1e-5,
    device=None,
    dtype: torch.dtype | None = None,
    diis_space: int = 8,
    damping: float = 0.5,
    level_shift: float = 0.5,
    stall_window: int = 12,
    lindep_tol: float = 1e-8,
    exact_j: bool = True,
    setup_kwargs: dict | None = None,
    verbose: bool = False,
    threads: int | None = None,
) -> SCFResult:
    """Closed-shell restricted KS SCF of ``functional`` on a `MoleculeSetup`, a
    `harness.molecules.Molecule` or a PySCF ``Mole`` (setup built here, timed as ``setup_s``).

    ``dm0``: initial total density matrix (default: PySCF's ``minao`` guess).
    ``threads``: torch intra-op threads for this call (restored afterwards); None keeps the
    current setting. On a CPU shared with other jobs, 1 is often much faster (see
    docs/performance.md, "SCF driver").
    Raises `FunctionalError` when the functional misbehaves; returns ``converged=False``
    (with the history) when ``max_cycle`` iterations do not converge.
    """
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            return run_scf(functional, setup_or_molecule, dm0=dm0, max_cycle=max_cycle,
                           conv_tol_energy=conv_tol_energy, conv_tol_grad=conv_tol_grad, device=device,
                           dtype=dtype, diis_space=diis_space, damping=damping, level_shift=level_shift,
                           stall_window=stall_window, lindep_tol=lindep_tol, exact_j=exact_j,
                           setup_kwargs=setup_kwargs, verbose=verbose, threads=None)
        finally:
            torch.set_num_threads(before)
    t_wall = time.perf_counter()
    if isinstance(setup_or_molecule, MoleculeSetup):
        setup = _as_setup(setup_or_molecule, functional, device, dtype, setup_kwargs)
        setup_s = 0.0 if setup is setup_or_molecule else time.perf_counter() - t_wall
    else:
        setup = _as_setup(setup_or_molecule, functional, device, dtype, setup_kwargs)
        setup_s = time.perf_counter() - t_wall
    t_iter = time.perf_counter()
    dev, dt = setup.device, setup.dtype
    engine = XCEngine(functional, setup)
    S, H = setup.S, setup.hcore
    X = orthogonalizer(S, lindep_tol)
    nocc = setup.nocc
    if X.shape[1] < nocc:
        raise ValueError(f"{setup.name}: only {X.shape[1]} linearly independent orbitals for {nocc} occupied")

    def build(P, C_occ=None):
        J = setup.coulomb_df(P)
        exc, vxc = engine.exc_vxc(P, C_occ=C_occ)
        F = H + J + vxc
        e1 = float((P * H).sum())
        ej = 0.5 * float((P * J).sum())
        exc_f = float(exc)
        return F, J, e1 + ej + exc_f + setup.energy_nuc, (e1, ej, exc_f)

    def diag(F, shift=0.0, P=None):
        Fo = X.T @ F @ X
        if shift:
            # raise the virtual space: F' + shift (1 − ½ P'), P' the density in the orthogonal basis
            SX = S @ X
            Po = SX.T @ P @ SX
            Fo = Fo + shift * (torch.eye(Fo.shape[0], dtype=dt, device=dev) - 0.5 * Po)
        eps, Co = torch.linalg.eigh(Fo)
        return eps, X @ Co

    def density(C):
        Cocc = C[:, :nocc]
        return 2.0 * Cocc @ Cocc.T

    P = (setup.dm_guess if dm0 is None else torch.as_tensor(dm0)).to(device=dev, dtype=dt)
    P = 0.5 * (P + P.T)
    F, J, E, parts = build(P)
    diis = _DIIS(diis_space)
    mode_i = 0
    best_err = float("inf")
    since_best = 0
    rises = 0
    history: list[dict] = []
    converged = False
    C = eps = None
    for cycle in range(1, max_cycle + 1):
        mode = MODES[mode_i]
        err = X.T @ (F @ P @ S - S @ P @ F) @ X
        err_norm = float(torch.linalg.norm(err))
        F_use = F
        if mode != "shift+damp":
            F_use = diis.update(F, err)
        shift = level_shift if mode in ("shift", "shift+damp") else 0.0
        eps, C = diag(F_use, shift, P)
        P_new = density(C)
        C_occ = C[:, :nocc]
        if mode in ("damp", "shift+damp") and damping > 0:
            P_new = (1.0 - damping) * P_new + damping * P
            C_occ = None  # no longer idempotent: general-P feature path
        F_new, J_new, E_new, parts_new = build(P_new, C_occ)
        g = 2.0 * (C[:, nocc:].T @ F_new @ C[:, :nocc])
        g_norm = float(torch.linalg.norm(g))
        dE = E_new - E
        history.append({"cycle": cycle, "energy_Eh": E_new, "delta_e_Eh": dE, "grad_norm": g_norm,
                        "diis_error": err_norm, "mode": mode})
        if verbose:
            print(f"cycle {cycle:3d} E={E_new:.12f} dE={dE:+.3e} |g|={g_norm:.3e} err={err_norm:.3e} {mode}")
        P, F, J, E, parts = P_new, F_new, J_new, E_new, parts_new
        if abs(dE) < conv_tol_energy and g_norm < conv_tol_grad:
            converged = True
            break
        # stall detection → next rung of the ladder
        if err_norm < 0.5 * best_err:
            best_err, since_best = err_norm, 0
        else:
            since_best += 1
        rises = rises + 1 if dE > 1e-4 else 0
        if (since_best >= stall_window or rises >= 3) and mode_i < len(MODES) - 1:
            mode_i += 1
            diis.reset()
            best_err, since_best, rises = float("inf"), 0, 0
    # canonical orbitals of the final Fock matrix (no extrapolation, no shift)
    mo_energy, mo_coeff = diag(F)
    mo_occ = torch.zeros(mo_energy.shape[0], dtype=dt, device=dev)
    mo_occ[:nocc] = 2.0
    iterations_s = time.perf_counter() - t_iter

    e1, ej_df, exc = parts
    ej_exact = None
    energy = None
    exact_j_s = 0.0
    if exact_j:
        t = time.perf_counter()
        J_exact = exact_coulomb_matrix(setup, P)
        ej_exact = 0.5 * float((P * J_exact).sum())
        energy = E - ej_df + ej_exact
        exact_j_s = time.perf_counter() - t
    return SCFResult(
        energy_Eh=energy, energy_df_Eh=E, energy_xc_Eh=exc, energy_coulomb_df_Eh=ej_df,
        energy_coulomb_exact_Eh=ej_exact, energy_one_electron_Eh=e1, energy_nuc_Eh=setup.energy_nuc,
        dm=P, mo_energy=mo_energy, mo_coeff=mo_coeff, mo_occ=mo_occ, fock=F, iterations=len(history),
        converged=converged, history=history, setup_s=setup_s, iterations_s=iterations_s,
        exact_j_s=exact_j_s, wall_s=time.perf_counter() - t_wall, xc_timings=dict(engine.timings),
        molecule=setup.name, functional=engine.name, nao=setup.nao, ngrid=setup.ngrid,
    )


__all__ = ["SCFResult", "run_scf", "orthogonalizer", "needs_of", "MODES", "FunctionalError"]
