"""`harness reference build`: compute a reference set with PySCF, resumably and in parallel.

Each geometry is one task of `harness.executor` (this process, a local pool, or Dask
workers: the task carries the geometry and the settings, and returns the record). This process
writes each finished geometry atomically and rewrites the manifest after it, so an interrupted
build loses at most the geometries in flight and a rerun continues from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import harness
from harness.executor import Executor, Outcome, Task, make_executor
from harness.io import remove_stale_temporaries, sha256_file
from harness.molecules import (
    TINY_MOLECULES,
    Molecule,
    distorted_conformers,
    g2_closed_shell,
    split_of,
)
from harness.reference.compute import ReferenceComputeError, ReferenceRecord, compute_reference
from harness.reference.di_targets import DISettings, di_targets_for_record
from harness.reference.settings import REFERENCE_SET_NAME, REFERENCE_SET_VERSION, ReferenceSettings
from harness.reference.store import (
    GEOMETRY_DIR,
    MANIFEST_NAME,
    ManifestEntry,
    ReferenceDataError,
    read_record,
    write_manifest,
    write_record,
)


@dataclass(frozen=True)
class PlannedGeometry:
    """A geometry to compute, with its split and extra subsets (``tiny``); ``di``: whether its
    DI-Loss targets are computed too."""

    molecule: Molecule
    split: str
    subsets: tuple[str, ...] = ()
    di: bool = False

    @property
    def key(self) -> str:
        return self.molecule.key


@dataclass
class BuildReport:
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    compute_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_geometries(
    molecules: list[Molecule] | None = None,
    settings: ReferenceSettings = ReferenceSettings(),
    splits: set[str] | None = None,
    di: bool = False,
) -> list[PlannedGeometry]:
    """Geometries of a build: equilibrium geometries of the selected splits, plus the
    distorted conformers of train and val molecules. ``molecules=None`` means G2.

    ``di``: mark the train and val geometries of the selected splits for DI-Loss targets
    (never test geometries, nor a geometry selected only as a member of ``tiny``)."""
    is_g2 = molecules is None
    mols = g2_closed_shell() if is_g2 else molecules
    out: list[PlannedGeometry] = []
    for mol in mols:
        split = split_of(mol.name)
        subsets = ("tiny",) if is_g2 and mol.name in TINY_MOLECULES else ()
        selected = splits is None or split in splits or any(s in splits for s in subsets)
        if not selected:
            continue
        wants_conformers = split in ("train", "val") and (splits is None or split in splits)
        with_di = bool(di) and wants_conformers
        out.append(PlannedGeometry(mol, split, subsets, with_di))
        if wants_conformers and settings.conformers > 0:
            for conf in distorted_conformers(
                mol, settings.conformers, settings.conformer_seed,
                settings.conformer_sigma_angstrom, settings.conformer_min_distance_ratio,
            ):
                out.append(PlannedGeometry(conf, split, (), with_di))
    return out


def _entry_for(record: ReferenceRecord, planned: PlannedGeometry, path: Path, root: Path) -> ManifestEntry:
    mol = record.molecule
    return ManifestEntry(
        key=record.key, name=record.name, conformer=record.conformer, split=record.split,
        subsets=tuple(planned.subsets), file=str(path.relative_to(root)), sha256=sha256_file(path),
        formula=mol.formula, natm=len(mol.symbols), nao=record.nao,
    )


def _header(settings: ReferenceSettings, name: str, entries: list[ManifestEntry],
            di_settings: DISettings | None = None) -> dict:
    import numpy
    import pyscf

    counts: dict[str, int] = {}
    for e in entries:
        if e.conformer == 0:
            counts[e.split] = counts.get(e.split, 0) + 1
            for s in e.subsets:
                counts[s] = counts.get(s, 0) + 1
    header = {
        "name": name,
        "version": REFERENCE_SET_VERSION,
        "protocol_version": harness.PROTOCOL_VERSION,
        "harness_version": harness.__version__,
        "pyscf_version": pyscf.__version__,
        "numpy_version": numpy.__version__,
        "method": f"PySCF RKS xc={settings.xc!r} basis={settings.basis!r} grid level {settings.grid_level}, "
        "exact J and K, full TDDFT singlets",
        "settings": settings.to_dict(),
        "equilibrium_counts": dict(sorted(counts.items())),
        "n_geometries": len(entries),
    }
    if di_settings is not None:  # only builds with DI targets carry this key
        header["di_settings"] = di_settings.to_dict()
    return header


def _load_existing(root: Path, settings: ReferenceSettings,
                   di_settings: DISettings | None = None) -> dict[str, ManifestEntry]:
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return {}
    try:
        data = yaml.safe_load(manifest.read_text())
        old = ReferenceSettings.from_dict(data["settings"])
        entries = [ManifestEntry.from_dict(d) for d in data.get("geometries") or []]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ReferenceDataError(f"{manifest}: cannot resume from a malformed manifest ({exc})") from exc
    if old.compute_key() != settings.compute_key():
        raise ReferenceDataError(
            f"{manifest}: was built with different settings; use a new --out folder to build with these"
        )
    old_di = data.get("di_settings")
    if di_settings is not None and old_di is not None and DISettings.from_dict(old_di) != di_settings:
        raise ReferenceDataError(
            f"{manifest}: was built with different DI settings; use a new --out folder to build with these"
        )
    return {e.key: e for e in entries}


def _recorded_di_settings(root: Path) -> DISettings | None:
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return None
    data = yaml.safe_load(manifest.read_text()) or {}
    old = data.get("di_settings")
    return DISettings.from_dict(old) if old else None


def _has_di(path: Path) -> bool:
    import h5py

    from harness.reference.store import DI_GROUP

    try:
        with h5py.File(path, "r") as f:
            return DI_GROUP in f
    except OSError:
        return False


def _compute(planned: PlannedGeometry, settings: ReferenceSettings,
             di_settings: DISettings | None = None) -> ReferenceRecord:
    rec = compute_reference(planned.molecule, planned.split, settings)
    if planned.di and di_settings is not None:
        t0 = time.perf_counter()
        rec.di = di_targets_for_record(rec, di_settings, settings)
        if abs(rec.di.energy_Eh[0] - rec.energy_Eh) > 1e-7:
            raise ReferenceComputeError(
                f"{rec.key}: DI energy at the reference orbitals {rec.di.energy_Eh[0]!r} differs from the SCF "
                f"energy {rec.energy_Eh!r}"
            )
        rec.wall_s += time.perf_counter() - t0
    return rec


def build_reference(
    out: str | Path,
    planned: list[PlannedGeometry],
    settings: ReferenceSettings = ReferenceSettings(),
    workers: int = 1,
    name: str = REFERENCE_SET_NAME,
    progress: bool = True,
    max_geometries: int | None = None,
    di_settings: DISettings | None = None,
    scheduler: str | None = None,
    executor: Executor | None = None,
) -> BuildReport:
    """Compute every planned geometry not already present and verified in ``out``.

    The geometries are independent tasks of `harness.executor`: in this process (``workers``
    1), a local pool (``workers`` > 1), or on Dask (``scheduler``; or a running ``executor``).
    Only this process writes files: each geometry as it arrives, then the manifest.

    ``max_geometries`` stops after that many new geometries (for tests and partial builds).
    ``di_settings``: DI-Loss targets are computed for the planned geometries marked ``di``
    with these settings (default `DISettings()` when any is marked); recorded in the manifest.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    root = Path(out)
    geo_dir = root / GEOMETRY_DIR
    geo_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    if any(p.di for p in planned):
        di_settings = di_settings or DISettings()
    else:
        di_settings = None
    existing = _load_existing(root, settings, di_settings)
    header_di = di_settings or _recorded_di_settings(root)  # a rerun without DI keeps the record
    report = BuildReport()
    entries: dict[str, ManifestEntry] = {}
    todo: list[PlannedGeometry] = []
    for p in planned:
        path = geo_dir / f"{p.key}.h5"
        old = existing.get(p.key)
        lacks_di = p.di and path.is_file() and not _has_di(path)  # wanted now, not there: recompute
        if old is not None and not lacks_di and path.is_file() and sha256_file(path) == old.sha256:
            entries[p.key] = ManifestEntry(**{**old.to_dict(), "subsets": tuple(p.subsets)})
            report.skipped.append(p.key)
            continue
        if path.is_file():  # written, but the manifest update was lost: adopt if readable
            try:
                rec = read_record(path)
                if rec.key == p.key and not lacks_di:
                    entries[p.key] = _entry_for(rec, p, path, root)
                    report.skipped.append(p.key)
                    continue
            except ReferenceDataError:
                pass
            path.unlink()
        todo.append(p)
    if max_geometries is not None:
        todo = todo[:max_geometries]

    def commit(p: PlannedGeometry, rec: ReferenceRecord) -> None:
        path = geo_dir / f"{p.key}.h5"
        write_record(rec, path)
        entries[p.key] = _entry_for(rec, p, path, root)
        write_manifest(root, _header(settings, name, list(entries.values()), header_di), list(entries.values()))
        report.computed.append(p.key)
        report.compute_s += rec.wall_s

    write_manifest(root, _header(settings, name, list(entries.values()), header_di), list(entries.values()))
    bar = tqdm(total=len(todo), desc="reference build", unit="geom", disable=not progress, smoothing=0.1)

    def done(outcome: Outcome) -> None:
        p = planned_by_key[outcome.task.key]
        if outcome.ok:
            try:
                commit(p, outcome.value)
            except Exception as exc:  # pragma: no cover - a write failure of one geometry
                report.failed[p.key] = f"{type(exc).__name__}: {exc}"
        else:  # one bad geometry must not stop the build
            report.failed[p.key] = outcome.reason
        bar.set_postfix_str(p.key)
        bar.update()

    planned_by_key = {p.key: p for p in todo}
    own = executor is None
    executor = executor if executor is not None else make_executor(workers, scheduler)
    try:
        executor.map([Task(p.key, _compute, (p, settings, di_settings)) for p in todo], done)
    finally:
        if own:
            executor.close()
        bar.close()
        report.wall_s = time.perf_counter() - t0
    return report
