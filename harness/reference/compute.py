"""Compute the stored B3LYP/def2-SVP quantities of one geometry with PySCF (PROTOCOL §1).

The PySCF RKS object itself (`make_rks`, re-exported here) lives in `harness.reference.rks`,
below this module and `harness.reference.di_targets`, which both use it: the record here holds
DI targets, so di_targets must not import this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import HarnessError
from harness.molecules import Molecule, to_pyscf
from harness.reference.rks import make_rks
from harness.reference.settings import ReferenceSettings

if TYPE_CHECKING:  # pragma: no cover
    from harness.reference.di_targets import DITargets


class ReferenceComputeError(HarnessError, RuntimeError):
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
