"""Compute the stored B3LYP/def2-SVP quantities of one geometry with PySCF (PROTOCOL §1)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.molecules import Molecule, to_pyscf
from harness.reference.settings import ReferenceSettings

if TYPE_CHECKING:  # pragma: no cover
    from harness.reference.di_targets import DITargets


class ReferenceComputeError(RuntimeError):
    """PySCF failed to produce a converged reference for a geometry."""


@dataclass
class ReferenceRecord:
    """Everything stored for one geometry. Energies in Eh, dipole in Debye,
    excitations in eV; matrices are (nao, nao) in the AO basis of ``basis``."""

    key: str
    name: str
    conformer: int
    split: str
    symbols: tuple[str, ...]
    atomic_numbers: np.ndarray  # (natm,)
    positions_angstrom: np.ndarray  # (natm, 3)
    charge: int
    spin: int
    source: str
    nao: int
    energy_Eh: float
    dm: np.ndarray  # (nao, nao), total density matrix
    mo_energy_Eh: np.ndarray  # (nmo,)
    mo_coeff: np.ndarray  # (nao, nmo)
    mo_occ: np.ndarray  # (nmo,)
    dipole_debye: np.ndarray  # (3,)
    scf_cycles_minao: int
    scf_converged: bool
    excitation_energies_eV: np.ndarray | None = None  # (nstates,)
    oscillator_strengths: np.ndarray | None = None  # (nstates,)
    wall_s: float = 0.0
    di: DITargets | None = None  # DI-Loss targets (train/val geometries; harness.reference.di_targets)

    @property
    def molecule(self) -> Molecule:
        return Molecule(
            self.name, tuple(self.symbols), np.asarray(self.positions_angstrom),
            int(self.charge), int(self.spin), self.source, int(self.conformer),
        )


def _cached_numint_class():
    from pyscf.dft import numint

    class CachedAONumInt(numint.NumInt):
        """PySCF's NumInt that keeps the AO values of each grid block between calls.

        The numbers are PySCF's own (the same ``eval_ao`` call, made once); only the repeated
        evaluation in every SCF cycle and every TDDFT product is saved. The cache is bounded
        by ``max_cache_bytes``; past it, blocks are evaluated as usual.
        """

        max_cache_bytes = 3 * 1024**3

        def block_loop(self, mol, grids, nao=None, deriv=0, max_memory=2000, non0tab=None, blksize=None, buf=None):
            if non0tab is not None or buf is not None or deriv > 1:
                yield from super().block_loop(mol, grids, nao, deriv, max_memory, non0tab, blksize, buf)
                return
            cache = self.__dict__.setdefault("_ao_cache", {})
            key = (nao, deriv, blksize)
            hit = cache.get(key)
            # the cached blocks belong to one molecule and one grid array (held, so never stale)
            if hit is not None and hit[0] is mol and hit[1] is grids.coords:
                yield from hit[2]
                return
            blocks, size = [], 0
            for ao, mask, weight, coords in super().block_loop(mol, grids, nao, deriv, max_memory, None, blksize, None):
                size += ao.nbytes
                if blocks is not None and size <= self.max_cache_bytes:
                    blocks.append((ao.copy(order="K"), mask, weight, coords))
                else:
                    blocks = None
                yield ao, mask, weight, coords
            if blocks is not None:
                cache[key] = (mol, grids.coords, blocks)

    return CachedAONumInt


def make_rks(pmol, settings: ReferenceSettings, conv_tol: float | None = None):
    """A PySCF RKS object with the reference settings (grid level, xc, exact JK).

    AO values on the grid are cached across SCF cycles and TDDFT products (same numbers,
    less time)."""
    from pyscf import dft

    mf = dft.RKS(pmol, xc=settings.xc)
    mf._numint = _cached_numint_class()()
    mf.grids.level = settings.grid_level
    mf.conv_tol = settings.conv_tol if conv_tol is None else conv_tol
    mf.init_guess = settings.init_guess
    mf.verbose = 0
    if settings.density_fitting:  # pragma: no cover - v1 uses exact J and K
        mf = mf.density_fit()
    return mf


def b3lyp_cycles(pmol, settings: ReferenceSettings, dm0=None) -> tuple[int, bool, object]:
    """PySCF B3LYP SCF with the evaluation settings (DIIS, ``eval_conv_tol``) from ``minao``
    or from ``dm0``. Returns (cycles, converged, mf)."""
    mf = make_rks(pmol, settings, conv_tol=settings.eval_conv_tol)
    if not settings.eval_diis:  # pragma: no cover
        mf.diis = None
    mf.kernel(dm0=dm0)
    return int(mf.cycles), bool(mf.converged), mf


def tddft_singlets(mf, nstates: int, conv_tol: float, tda: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Lowest singlet excitation energies (eV) and oscillator strengths from PySCF."""
    from pyscf.data.nist import HARTREE2EV

    td = mf.TDA() if tda else mf.TDDFT()
    td.nstates = nstates
    td.singlet = True
    td.conv_tol = conv_tol
    td.verbose = 0
    td.kernel()
    if not np.all(td.converged):
        raise ReferenceComputeError("TDDFT Davidson did not converge")
    e = np.asarray(td.e, dtype=float) * HARTREE2EV
    f = np.asarray(td.oscillator_strength(gauge="length"), dtype=float)
    return e, f


def compute_reference(
    mol: Molecule,
    split: str,
    settings: ReferenceSettings = ReferenceSettings(),
    with_excitations: bool | None = None,
) -> ReferenceRecord:
    """Run the reference protocol on one geometry.

    Excitations are computed for equilibrium geometries (``conformer == 0``) unless
    ``with_excitations`` says otherwise.
    """
    t0 = time.perf_counter()
    if with_excitations is None:
        with_excitations = mol.conformer == 0
    pmol = to_pyscf(mol, settings.basis)
    cycles, conv_eval, mf = b3lyp_cycles(pmol, settings)
    if not conv_eval:
        raise ReferenceComputeError(f"{mol.key}: B3LYP did not converge from minao to {settings.eval_conv_tol}")
    mf.conv_tol = settings.conv_tol
    mf.conv_tol_grad = settings.conv_tol_grad
    mf.kernel(dm0=mf.make_rdm1())
    if not mf.converged:
        raise ReferenceComputeError(f"{mol.key}: B3LYP did not converge to {settings.conv_tol}")
    exc = osc = None
    if with_excitations:
        exc, osc = tddft_singlets(mf, settings.nstates, settings.tddft_conv_tol)
    return ReferenceRecord(
        key=mol.key,
        name=mol.name,
        conformer=mol.conformer,
        split=split,
        symbols=tuple(mol.symbols),
        atomic_numbers=mol.atomic_numbers,
        positions_angstrom=np.asarray(mol.positions_angstrom, dtype=float),
        charge=mol.charge,
        spin=mol.spin,
        source=mol.source,
        nao=int(pmol.nao_nr()),
        energy_Eh=float(mf.e_tot),
        dm=np.asarray(mf.make_rdm1()),
        mo_energy_Eh=np.asarray(mf.mo_energy),
        mo_coeff=np.asarray(mf.mo_coeff),
        mo_occ=np.asarray(mf.mo_occ),
        dipole_debye=np.asarray(mf.dip_moment(unit="Debye", verbose=0), dtype=float),
        scf_cycles_minao=cycles,
        scf_converged=True,
        excitation_energies_eV=exc,
        oscillator_strengths=osc,
        wall_s=time.perf_counter() - t0,
    )
