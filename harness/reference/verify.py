"""`harness reference verify`: checksums of every file, then N geometries recomputed with PySCF."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from harness.reference.compute import compute_reference
from harness.reference.store import ReferenceDataError, ReferenceSet

#: Agreement demanded of a recomputed geometry (PROTOCOL §1; issue 2).
ENERGY_TOL_EH = 1e-8
DIPOLE_TOL_DEBYE = 1e-6
EXCITATION_TOL_EV = 1e-5


@dataclass
class VerifyReport:
    checked_files: int = 0
    errors: list[str] = field(default_factory=list)
    recomputed: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def compare_records(stored, fresh) -> tuple[dict[str, float], list[str]]:
    """Max deviations of a fresh record from a stored one, and the failures (tolerances above)."""
    dev = {
        "energy_Eh": abs(stored.energy_Eh - fresh.energy_Eh),
        "dipole_debye": float(np.max(np.abs(stored.dipole_debye - fresh.dipole_debye))),
    }
    problems = []
    if dev["energy_Eh"] > ENERGY_TOL_EH:
        problems.append(f"energy differs by {dev['energy_Eh']:.2e} Eh (tolerance {ENERGY_TOL_EH:g})")
    if dev["dipole_debye"] > DIPOLE_TOL_DEBYE:
        problems.append(f"dipole differs by {dev['dipole_debye']:.2e} D (tolerance {DIPOLE_TOL_DEBYE:g})")
    if stored.excitation_energies_eV is not None:
        if fresh.excitation_energies_eV is None or fresh.excitation_energies_eV.shape != stored.excitation_energies_eV.shape:
            problems.append("excitation energies missing from the recomputation")
        else:
            dev["excitation_eV"] = float(np.max(np.abs(stored.excitation_energies_eV - fresh.excitation_energies_eV)))
            if dev["excitation_eV"] > EXCITATION_TOL_EV:
                problems.append(
                    f"excitations differ by {dev['excitation_eV']:.2e} eV (tolerance {EXCITATION_TOL_EV:g})"
                )
    return dev, problems


def verify_reference(
    refset: ReferenceSet,
    n_recompute: int = 2,
    seed: int | None = None,
    split: str | None = None,
    keys: list[str] | None = None,
    progress: bool = True,
) -> VerifyReport:
    """Check every checksum, then recompute ``n_recompute`` random geometries (or ``keys``)."""
    from tqdm.auto import tqdm

    report = VerifyReport()
    report.checked_files = len(refset.entries)
    report.errors.extend(refset.check_all())
    if report.errors:
        return report
    if keys is None:
        pool = [e.key for e in refset.select(split, conformers=split is None)]
        rng = random.Random(seed)
        keys = rng.sample(pool, min(n_recompute, len(pool)))
    for key in tqdm(keys, desc="recompute", unit="geom", disable=not progress):
        try:
            stored = refset.load(key)
        except ReferenceDataError as exc:
            report.errors.append(str(exc))
            continue
        fresh = compute_reference(
            stored.molecule, stored.split, refset.settings,
            with_excitations=stored.excitation_energies_eV is not None,
        )
        dev, problems = compare_records(stored, fresh)
        report.recomputed[key] = dev
        for p in problems:
            report.errors.append(f"{refset.path(refset.entry(key))}: {key}: {p}")
    return report
