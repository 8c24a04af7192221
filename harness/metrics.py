"""Per-molecule metrics of the evaluation protocol (PROTOCOL §3) and their aggregation.

Every metric compares a closed-shell *model* density matrix ``P_model`` (total AO density
matrix, def2-SVP, same molecule) with the stored B3LYP reference record:

1. total-energy error  ``energy_error_mEh``   E_model − E_B3LYP (signed, mEh)
2. density-driven error ``e_rho_mEh``         E_B3LYP[P_model] − E_B3LYP[P_ref] (mEh, ≥ 0 up to
                                               grid noise by the variational principle)
3. dipole error        ``dipole_error_debye`` |μ(P_model) − μ_ref| (Debye)
4. L2 density error    ``density_l2``         sqrt(Σ_g w_g (ρ_model − ρ_ref)²) (atomic units)
5. SCF-iteration metric ``scf_iter_reduction`` 1 − n_model / n_minao, n = PySCF B3LYP SCF cycles
6. excitation MAE      ``excitation_mae_eV``  mean |ΔE| over the states, compared in order

Grid choice for E_ρ and the L2 error
------------------------------------
PySCF's RKS builds its grid lazily on the first Fock build and, when ``small_rho_cutoff > 0``
(PySCF's default was 1e-7 in older versions; it is 0 in PySCF 2.14 unless configured), drops
points where the density of *that first* density matrix is small, so a fresh RKS object fed
``P_model`` could use a different grid from the one behind the stored reference energy.
`B3LYPEvaluator` therefore builds the level-3 grid once, explicitly, exactly as PySCF's
``initialize_grids`` does (``grids.build(with_non0tab=True)``, default Treutler radii and NWChem
pruning) but never prunes it by density (``small_rho_cutoff = 0``), and evaluates
E_B3LYP[P_ref] and E_B3LYP[P_model] on that one object and grid with ``mf.energy_tot(dm=...)``.
E_ρ(P_ref) is then 0 to round-off (~1e-14 Eh) whatever PySCF's configuration; the stored SCF
energy is not used for E_ρ. The L2 density error uses the same grid (``Grids(mol)``, level 3).

SCF-iteration metric
--------------------
``n_model`` is the cycle count of `harness.reference.compute.b3lyp_cycles` from ``dm0=P_model``
(PySCF RKS B3LYP, DIIS, ``eval_conv_tol``), the run that produced the stored baseline
``scf_cycles_minao`` from ``minao``. `B3LYPEvaluator.run_scf` makes the same PySCF object and
call, sharing the in-core ERIs and (with ``small_rho_cutoff == 0``, where PySCF would build
exactly this grid) the evaluator's grid: cycle counts and energies equal a fresh
``b3lyp_cycles`` call (tested). On the shared grid the SCF's initial energy is literally
``energy_tot(P_model)`` on the evaluator's grid (same calls, same ERIs, same grid; tested to
1e-10 Eh), so `molecule_metrics` takes E_B3LYP[P_model] from it and saves one Fock build.

Row format (`molecule_metrics`) is a flat dict with units in the names; see `ROW_FIELDS`.
The aggregation into summary numbers is `harness.metric_registry.aggregate` (one registry), and
what happened to a molecule is its status (`harness.status`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.molecules import to_pyscf
from harness.reference.compute import ReferenceRecord, make_rks
from harness.reference.settings import ReferenceSettings

#: Hartree → millihartree.
MILLIHARTREE_PER_HARTREE = 1000.0

#: Keys of a per-molecule row, in table order.
ROW_FIELDS: tuple[str, ...] = (
    "key",
    "energy_error_mEh",
    "e_rho_mEh",
    "dipole_error_debye",
    "density_l2",
    "scf_cycles_model_start",
    "scf_cycles_minao",
    "scf_iter_reduction",
    "scf_converged",
    "excitation_mae_eV",
    "wall_s",
)

#: Default block of grid points for AO evaluation in the L2 density error.
DEFAULT_BLOCK_SIZE = 8192

#: Largest |tr(P S) − N| accepted for a model density matrix (electrons).
ELECTRON_COUNT_TOL = 1e-4
#: Largest max|P − Pᵀ| / max(1, max|P|) accepted for a model density matrix.
SYMMETRY_TOL = 1e-6


class MetricsError(HarnessError, ValueError):
    """A metric cannot be computed from the given inputs (shapes, NaN, electron count...)."""


# --------------------------------------------------------------------------------------------
# 1. total energy, 6. excitations: plain numbers
# --------------------------------------------------------------------------------------------


def energy_error_mEh(e_model_Eh: float, e_ref_Eh: float) -> float:
    """Signed total-energy error E_model − E_ref in mEh (inputs in Eh)."""
    e_model_Eh, e_ref_Eh = float(e_model_Eh), float(e_ref_Eh)
    if not (math.isfinite(e_model_Eh) and math.isfinite(e_ref_Eh)):
        raise MetricsError(f"energy is not finite (model {e_model_Eh}, reference {e_ref_Eh})")
    return (e_model_Eh - e_ref_Eh) * MILLIHARTREE_PER_HARTREE


def excitation_mae_eV(model_eV: Sequence[float], ref_eV: Sequence[float]) -> float:
    """Mean |model − reference| (eV) over excitation energies compared state by state, in order.

    Both sequences must have the same nonzero length and be finite.
    """
    m = np.asarray(model_eV, dtype=float).ravel()
    r = np.asarray(ref_eV, dtype=float).ravel()
    if m.size != r.size:
        raise MetricsError(
            f"excitation energies: the model gives {m.size} state(s), the reference {r.size}; "
            "the same states must be compared in order"
        )
    if m.size == 0:
        raise MetricsError("excitation energies: no states to compare")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(r))):
        raise MetricsError("excitation energies: non-finite value")
    return float(np.mean(np.abs(m - r)))


# --------------------------------------------------------------------------------------------
# 3. dipole, 4. density on the grid, 5. SCF ratio: functions of (mol, dm)
# --------------------------------------------------------------------------------------------


def dipole_debye(pmol, dm: np.ndarray) -> np.ndarray:
    """Dipole vector (Debye) of a total density matrix, from PySCF (origin at 0, nuclei included)."""
    from pyscf.scf import hf

    return np.asarray(hf.dip_moment(pmol, dm, unit="Debye", verbose=0), dtype=float)


def dipole_error_debye(pmol, dm_model: np.ndarray, dipole_ref_debye: np.ndarray) -> float:
    """|μ(P_model) − μ_ref| (vector norm, Debye)."""
    ref = np.asarray(dipole_ref_debye, dtype=float).reshape(3)
    return float(np.linalg.norm(dipole_debye(pmol, dm_model) - ref))


def density_grids(pmol, level: int = 3):
    """The level-3 (by default) PySCF grid of the metrics: ``Grids(mol)`` with default radii and
    pruning, built the way PySCF's RKS builds it, never pruned by density."""
    from pyscf.dft import gen_grid

    grids = gen_grid.Grids(pmol)
    grids.level = level
    grids.verbose = 0
    grids.build(with_non0tab=True)
    return grids


def density_l2(pmol, grids, dm_model: np.ndarray, dm_ref: np.ndarray,
               block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """sqrt(Σ_g w_g (ρ_model(r_g) − ρ_ref(r_g))²) in atomic units on ``grids``.

    ρ is linear in P, so ρ_model − ρ_ref = ρ[P_model − P_ref] is evaluated directly (no
    cancellation). AO values come from ``eval_ao`` in blocks of ``block_size`` points without
    AO screening.
    """
    from pyscf.dft import numint

    if block_size < 1:
        raise MetricsError("block_size must be positive")
    ddm = np.asarray(dm_model, dtype=float) - np.asarray(dm_ref, dtype=float)
    coords, weights = grids.coords, grids.weights
    total = 0.0
    for p0 in range(0, weights.size, block_size):
        p1 = min(p0 + block_size, weights.size)
        ao = numint.eval_ao(pmol, coords[p0:p1], deriv=0)
        drho = numint.eval_rho(pmol, ao, ddm, xctype="LDA", hermi=1)
        total += float(np.dot(weights[p0:p1], drho * drho))
    return math.sqrt(total)


def scf_iter_reduction(n_model: int, n_minao: int) -> float:
    """1 − n_model / n_minao (positive: fewer cycles than from the minao guess)."""
    if n_minao <= 0:
        raise MetricsError(f"minao cycle count must be positive, got {n_minao}")
    return 1.0 - float(n_model) / float(n_minao)


# --------------------------------------------------------------------------------------------
# 2. and 5.: the B3LYP evaluator of one molecule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SCFRun:
    """One PySCF B3LYP SCF with the evaluation settings."""

    cycles: int
    converged: bool
    e_init_Eh: float  # energy of dm0 (first Fock build of the SCF), on the SCF's grid
    e_tot_Eh: float
    same_grid: bool  # the SCF ran on the evaluator's grid (no small-density pruning)
    wall_s: float


class B3LYPEvaluator:
    """PySCF B3LYP energy functional of one molecule on a fixed grid, plus the evaluation SCF.

    Create once per molecule. Holds the ``Mole``, one RKS object (``make_rks``: B3LYP, exact
    J/K, grid level from ``settings``) with its grid built once and never density-pruned, and the
    in-core ERIs when PySCF chooses to keep them (``mf._eri``), shared with `run_scf`.
    """

    def __init__(self, pmol, settings: ReferenceSettings = ReferenceSettings(),
                 dm_ref: np.ndarray | None = None):
        self.mol = pmol
        self.settings = settings
        self.mf = make_rks(pmol, settings)
        self.mf.small_rho_cutoff = 0.0  # belt and braces: the grid below is never rebuilt
        self.mf.grids.verbose = 0
        self.mf.grids.build(with_non0tab=True)  # as RKS.initialize_grids, minus the pruning
        self._s = None
        self.dm_ref = None if dm_ref is None else self.check_dm(dm_ref, "reference")
        self._e_ref: float | None = None

    @classmethod
    def from_record(cls, record: ReferenceRecord,
                    settings: ReferenceSettings = ReferenceSettings()) -> "B3LYPEvaluator":
        pmol = to_pyscf(record.molecule, settings.basis)
        if pmol.nao_nr() != record.nao:
            raise MetricsError(
                f"{record.key}: basis {settings.basis} gives {pmol.nao_nr()} AOs, record has {record.nao}"
            )
        return cls(pmol, settings, dm_ref=record.dm)

    @property
    def grids(self):
        return self.mf.grids

    @property
    def nao(self) -> int:
        return int(self.mol.nao_nr())

    def overlap(self) -> np.ndarray:
        if self._s is None:
            self._s = self.mol.intor_symmetric("int1e_ovlp")
        return self._s

    def check_dm(self, dm: Any, what: str = "model") -> np.ndarray:
        """A validated float64 (nao, nao) symmetric density matrix with the right electron count.

        Values are returned unchanged (round-off asymmetry ≤ SYMMETRY_TOL is accepted as is,
        so the same matrix reaches PySCF as in a direct PySCF call).
        """
        dm = np.asarray(dm, dtype=np.float64)
        n = self.nao
        if dm.shape != (n, n):
            raise MetricsError(f"{what} density matrix has shape {dm.shape}, expected ({n}, {n})")
        if not np.all(np.isfinite(dm)):
            raise MetricsError(f"{what} density matrix has non-finite entries")
        asym = float(np.max(np.abs(dm - dm.T))) if n else 0.0
        if asym > SYMMETRY_TOL * max(1.0, float(np.max(np.abs(dm)))):
            raise MetricsError(f"{what} density matrix is not symmetric (max |P − Pᵀ| = {asym:.3g})")
        nelec = float(np.einsum("ij,ji->", dm, self.overlap()))
        if abs(nelec - self.mol.nelectron) > ELECTRON_COUNT_TOL:
            raise MetricsError(
                f"{what} density matrix holds {nelec:.6f} electrons, the molecule {self.mol.nelectron}"
            )
        return np.ascontiguousarray(dm)

    def energy_Eh(self, dm: np.ndarray) -> float:
        """E_B3LYP[P] (Eh): PySCF ``energy_tot`` at P on the fixed grid (no SCF)."""
        return float(self.mf.energy_tot(dm=dm))

    @property
    def e_ref_Eh(self) -> float:
        """E_B3LYP[P_ref] on this evaluator's grid (cached). Not the stored SCF energy."""
        if self.dm_ref is None:
            raise MetricsError("no reference density matrix given to the evaluator")
        if self._e_ref is None:
            self._e_ref = self.energy_Eh(self.dm_ref)
        return self._e_ref

    def e_rho_mEh(self, dm_model: np.ndarray) -> float:
        """E_B3LYP[P_model] − E_B3LYP[P_ref] in mEh, both on the same object and grid."""
        e_model = self.energy_Eh(self.check_dm(dm_model))
        return (e_model - self.e_ref_Eh) * MILLIHARTREE_PER_HARTREE

    def density_l2(self, dm_model: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
        if self.dm_ref is None:
            raise MetricsError("no reference density matrix given to the evaluator")
        return density_l2(self.mol, self.grids, self.check_dm(dm_model), self.dm_ref, block_size)

    def dipole_error_debye(self, dm_model: np.ndarray, dipole_ref_debye: np.ndarray) -> float:
        return dipole_error_debye(self.mol, self.check_dm(dm_model), dipole_ref_debye)

    def run_scf(self, dm0: np.ndarray | None = None) -> SCFRun:
        """`harness.reference.compute.b3lyp_cycles` from ``dm0`` (``minao`` when None): same
        settings, same cycle count and energies, sharing this evaluator's in-core ERIs and grid.

        PySCF builds an RKS grid on the first Fock build and, only when ``small_rho_cutoff > 0``,
        prunes it with that first density matrix. With the cutoff at 0 (PySCF ≥ 2.x default)
        the SCF's grid is this evaluator's grid, which is shared as is (``SCFRun.same_grid``);
        otherwise a copy is pruned with ``dm0`` exactly as PySCF would (for ``dm0=None`` the SCF
        builds its own grid from the ``minao`` guess).
        """
        from pyscf.dft import rks

        t0 = time.perf_counter()
        s = self.settings
        mf = make_rks(self.mol, s, conv_tol=s.eval_conv_tol)
        if not s.eval_diis:  # pragma: no cover - v1 uses DIIS
            mf.diis = None
        if self.mf._eri is not None:
            mf._eri = self.mf._eri
        if dm0 is not None:
            dm0 = self.check_dm(dm0, "initial")
        if mf.small_rho_cutoff <= 1e-20:
            mf.grids = self.grids  # identical to what initialize_grids would build; never modified
        elif dm0 is not None:  # pragma: no cover - not with PySCF's default configuration
            grids = copy.copy(self.grids)  # prune_by_density_ rebinds arrays, never writes them
            mf.grids = rks.prune_small_rho_grids_(mf, self.mol, dm0, grids)
        init: dict[str, float] = {}
        mf.pre_kernel = lambda envs: init.setdefault("e", float(envs["e_tot"]))
        mf.kernel(dm0=dm0)
        if self.mf._eri is None and mf._eri is not None:
            self.mf._eri = mf._eri  # later energy evaluations reuse the ERIs built by the SCF
        return SCFRun(
            cycles=int(mf.cycles),
            converged=bool(mf.converged),
            e_init_Eh=init.get("e", float("nan")),
            e_tot_Eh=float(mf.e_tot),
            same_grid=mf.grids is self.grids,
            wall_s=time.perf_counter() - t0,
        )

    def energy_and_scf(self, dm_model: np.ndarray) -> tuple[float, SCFRun]:
        """E_B3LYP[P_model] (Eh) and the SCF from P_model, with one Fock build saved: the SCF's
        initial energy *is* ``energy_tot(P_model)`` on this grid when the grid is shared (same
        PySCF calls, same ERIs, same grid); otherwise E is evaluated directly."""
        dm = self.check_dm(dm_model)
        run = self.run_scf(dm0=dm)
        if run.same_grid and math.isfinite(run.e_init_Eh):
            return run.e_init_Eh, run
        return self.energy_Eh(dm), run  # pragma: no cover - pruned grids only


# --------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------


def molecule_metrics(
    record: ReferenceRecord,
    dm_model: np.ndarray,
    energy_model_Eh: float,
    settings: ReferenceSettings = ReferenceSettings(),
    *,
    excitations_model_eV: Sequence[float] | None = None,
    evaluator: B3LYPEvaluator | None = None,
    timings: dict | None = None,
) -> dict:
    """Metrics 1–5 (and 6 when ``excitations_model_eV`` is given and the record has
    excitations) of one molecule, as a flat row (`ROW_FIELDS`).

    ``settings`` must be the reference set's settings (``ReferenceSet.settings``). Invalid
    inputs raise `MetricsError`. ``timings``, when
    given, is filled with seconds per stage.
    """
    t_start = time.perf_counter()
    tm = timings if timings is not None else {}

    def lap(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        tm[name] = tm.get(name, 0.0) + (t1 - t0)
        return t1

    exc_mae = None  # cheap checks first
    if excitations_model_eV is not None:
        if record.excitation_energies_eV is None:
            raise MetricsError(f"{record.key}: the reference has no excitation energies")
        exc_mae = excitation_mae_eV(excitations_model_eV, record.excitation_energies_eV)
    e_err = energy_error_mEh(energy_model_Eh, record.energy_Eh)
    t = t_start
    ev = evaluator if evaluator is not None else B3LYPEvaluator.from_record(record, settings)
    t = lap("setup_s", t)
    dm = ev.check_dm(dm_model)
    dip = dipole_error_debye(ev.mol, dm, record.dipole_debye)
    t = lap("dipole_s", t)
    e_model_b3lyp, scf = ev.energy_and_scf(dm)
    t = lap("scf_s", t)
    e_rho = (e_model_b3lyp - ev.e_ref_Eh) * MILLIHARTREE_PER_HARTREE
    t = lap("e_b3lyp_ref_s", t)
    l2 = density_l2(ev.mol, ev.grids, dm, ev.dm_ref)
    t = lap("density_l2_s", t)
    n_minao = int(record.scf_cycles_minao)
    wall = time.perf_counter() - t_start
    tm["wall_s"] = wall
    return {
        "key": record.key,
        "energy_error_mEh": e_err,
        "e_rho_mEh": e_rho,
        "dipole_error_debye": dip,
        "density_l2": l2,
        "scf_cycles_model_start": scf.cycles,
        "scf_cycles_minao": n_minao,
        "scf_iter_reduction": scf_iter_reduction(scf.cycles, n_minao),
        "scf_converged": scf.converged,
        "excitation_mae_eV": exc_mae,
        "wall_s": wall,
    }
