"""On-disk reference set: one compressed HDF5 file per geometry plus a YAML manifest
holding the settings, versions and a sha256 for every data file (PROTOCOL §1).

Layout of a reference folder::

    manifest.yaml
    geometries/<key>.h5

A train/val geometry file may hold the DI-Loss targets (PROTOCOL §4) in an HDF5 group ``di``
(datasets ``kappa`` (S, nvir, nocc), ``energy_Eh`` (S,), ``gradient`` (S, nvir, nocc),
``probes`` (S, P, nvir, nocc), ``hvp`` (S, P, nvir, nocc); attributes: the `DISettings`
fields, ``xc``, ``format_version`` and ``parametrisation``). It lives in the same file, so
the file's sha256 in the manifest covers it. Files without the group read back with
``record.di = None``.

The bundled set's manifest is itself pinned by sha256 in `harness.reference.pins`. Reading a
folder that is not a valid reference raises `ReferenceDataError` (defined in
`harness.reference.errors`, which both this module and the pins import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from harness.io import atomic_path, atomic_write_yaml, sha256_file
from harness.reference import pins
from harness.reference.compute import ReferenceRecord
from harness.reference.di_targets import DI_FORMAT_VERSION, DI_PARAMETRISATION, DISettings, DITargets
from harness.reference.errors import ReferenceDataError
from harness.reference.settings import ReferenceSettings

FILE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.yaml"
GEOMETRY_DIR = "geometries"

_ARRAYS = (
    "atomic_numbers", "positions_angstrom", "dm", "mo_energy_Eh", "mo_coeff", "mo_occ", "dipole_debye",
)
_OPTIONAL_ARRAYS = ("excitation_energies_eV", "oscillator_strengths")
_SCALARS = (
    "key", "name", "conformer", "split", "charge", "spin", "source", "nao",
    "energy_Eh", "scf_cycles_minao", "scf_converged", "wall_s",
)
DI_GROUP = "di"
_DI_ARRAYS = ("kappa", "energy_Eh", "gradient", "probes", "hvp")


def write_record(record: ReferenceRecord, path: str | Path) -> None:
    """Write one geometry atomically as compressed HDF5."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["format_version"] = FILE_FORMAT_VERSION
            for k in _SCALARS:
                v = getattr(record, k)
                f.attrs[k] = v if not isinstance(v, (np.generic,)) else v.item()
            f.attrs["symbols"] = " ".join(record.symbols)
            for k in _ARRAYS + _OPTIONAL_ARRAYS:
                v = getattr(record, k)
                if v is None:
                    continue
                v = np.asarray(v)
                kw = dict(compression="gzip", compression_opts=9, shuffle=True) if v.size > 16 else {}
                f.create_dataset(k, data=v, track_times=False, **kw)
            if record.di is not None:
                _write_di(f, record.di)


def _write_di(f: h5py.File, di: DITargets) -> None:
    di.check_shapes()
    g = f.create_group(DI_GROUP, track_order=True)
    g.attrs["format_version"] = DI_FORMAT_VERSION
    g.attrs["parametrisation"] = DI_PARAMETRISATION
    g.attrs["xc"] = str(di.xc)
    for k, v in di.settings.to_dict().items():
        g.attrs[k] = v
    for k in _DI_ARRAYS:
        v = np.asarray(getattr(di, k), dtype=np.float64)
        kw = dict(compression="gzip", compression_opts=9, shuffle=True) if v.size > 16 else {}
        g.create_dataset(k, data=v, track_times=False, **kw)


def _read_di(f: h5py.File) -> DITargets | None:
    if DI_GROUP not in f:
        return None
    g = f[DI_GROUP]
    version = int(g.attrs["format_version"])
    if version != DI_FORMAT_VERSION:
        raise ValueError(f"DI group format version {version}, this harness reads {DI_FORMAT_VERSION}")
    settings = DISettings.from_dict({k: g.attrs[k] for k in DISettings.__dataclass_fields__ if k in g.attrs})
    arrays = {k: np.asarray(g[k][()], dtype=np.float64) for k in _DI_ARRAYS}
    di = DITargets(**arrays, settings=settings, xc=str(g.attrs["xc"]))
    di.check_shapes()
    return di


def read_record(path: str | Path) -> ReferenceRecord:
    """Read one geometry file. Corrupt or incomplete files raise `ReferenceDataError`."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            data = {k: f.attrs[k] for k in _SCALARS}
            data["symbols"] = tuple(str(f.attrs["symbols"]).split())
            for k in _ARRAYS:
                data[k] = f[k][()]
            for k in _OPTIONAL_ARRAYS:
                data[k] = f[k][()] if k in f else None
            data["di"] = _read_di(f)
    except (OSError, KeyError, ValueError) as exc:
        raise ReferenceDataError(f"{path}: unreadable reference file ({exc})") from exc
    for k in ("key", "name", "split", "source"):
        data[k] = str(data[k])
    for k in ("conformer", "charge", "spin", "nao", "scf_cycles_minao"):
        data[k] = int(data[k])
    for k in ("energy_Eh", "wall_s"):
        data[k] = float(data[k])
    data["scf_converged"] = bool(data["scf_converged"])
    di = data["di"]
    if di is not None and (di.nocc + di.nvir != np.shape(data["mo_coeff"])[1]
                           or di.nocc != int(np.count_nonzero(np.asarray(data["mo_occ"]) > 0))):
        raise ReferenceDataError(f"{path}: DI targets of shape (nvir={di.nvir}, nocc={di.nocc}) do not fit the orbitals")
    return ReferenceRecord(**data)


@dataclass(frozen=True)
class ManifestEntry:
    """One geometry as the manifest lists it."""

    key: str
    name: str
    conformer: int
    split: str
    subsets: tuple[str, ...]
    file: str
    sha256: str
    formula: str
    natm: int
    nao: int

    def to_dict(self) -> dict:
        return {
            "key": self.key, "name": self.name, "conformer": self.conformer, "split": self.split,
            "subsets": list(self.subsets), "file": self.file, "sha256": self.sha256,
            "formula": self.formula, "natm": self.natm, "nao": self.nao,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ManifestEntry":
        return cls(
            key=str(d["key"]), name=str(d["name"]), conformer=int(d["conformer"]), split=str(d["split"]),
            subsets=tuple(d.get("subsets") or ()), file=str(d["file"]), sha256=str(d["sha256"]),
            formula=str(d["formula"]), natm=int(d["natm"]), nao=int(d["nao"]),
        )

    def in_split(self, split: str) -> bool:
        return self.split == split or split in self.subsets


def write_manifest(root: str | Path, header: dict, entries: list[ManifestEntry]) -> None:
    """Write the manifest atomically, entries sorted by key."""
    data = dict(header)
    data["geometries"] = [e.to_dict() for e in sorted(entries, key=lambda e: e.key)]
    atomic_write_yaml(Path(root) / MANIFEST_NAME, data)


class ReferenceSet:
    """A verified reference folder. Every file's sha256 is checked before it is read."""

    def __init__(self, root: str | Path, check_pin: bool = True):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST_NAME
        if not self.manifest_path.is_file():
            raise ReferenceDataError(f"{self.manifest_path}: no reference manifest here")
        self.manifest_sha256 = sha256_file(self.manifest_path)
        if check_pin:
            pins.check_manifest(self.root, self.manifest_sha256)
        try:
            data = yaml.safe_load(self.manifest_path.read_text())
            self.header = {k: v for k, v in data.items() if k != "geometries"}
            self.entries = [ManifestEntry.from_dict(d) for d in data["geometries"]]
            self.settings = ReferenceSettings.from_dict(self.header["settings"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReferenceDataError(f"{self.manifest_path}: malformed manifest ({exc})") from exc
        for what, values in (("key", [e.key for e in self.entries]), ("file", [e.file for e in self.entries])):
            seen: set = set()
            dups = sorted({v for v in values if v in seen or seen.add(v)})
            if dups:  # a molecule listed twice would be scored (and counted) twice
                raise ReferenceDataError(f"{self.manifest_path}: duplicate geometry {what}(s) {dups}; each geometry "
                                         "is listed once")
        self._by_key = {e.key: e for e in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def select(self, split: str | None = None, conformers: bool = False) -> list[ManifestEntry]:
        """Entries of a split (``train``/``val``/``test``/``tiny``), equilibrium only unless ``conformers``."""
        out = [e for e in self.entries if (split is None or e.in_split(split))]
        if not conformers:
            out = [e for e in out if e.conformer == 0]
        if split is not None and not out:
            available = sorted({e.split for e in self.entries} | {s for e in self.entries for s in e.subsets})
            raise ReferenceDataError(
                f"{self.manifest_path}: split {split!r} has no geometries here (available: {', '.join(available)})"
            )
        return out

    def entry(self, key: str) -> ManifestEntry:
        try:
            return self._by_key[key]
        except KeyError:
            raise ReferenceDataError(f"{self.manifest_path}: no geometry {key!r} in this reference set") from None

    def path(self, entry: ManifestEntry) -> Path:
        return self.root / entry.file

    def check_file(self, entry: ManifestEntry) -> None:
        """Raise `ReferenceDataError` naming the file when its sha256 differs from the manifest."""
        path = self.path(entry)
        if not path.is_file():
            raise ReferenceDataError(f"{path}: missing reference file for {entry.key}")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ReferenceDataError(
                f"{path}: checksum mismatch for {entry.key} (manifest {entry.sha256[:12]}…, file {actual[:12]}…); "
                "the file is corrupt or was modified"
            )

    def load(self, key: str) -> ReferenceRecord:
        """The record of one geometry, after its checksum is verified."""
        entry = self.entry(key)
        self.check_file(entry)
        record = read_record(self.path(entry))
        if record.key != entry.key:
            raise ReferenceDataError(f"{self.path(entry)}: holds {record.key!r}, manifest says {entry.key!r}")
        return record

    def check_all(self) -> list[str]:
        """Verify every file's checksum. Returns the list of error messages (empty when all pass)."""
        errors = []
        for e in self.entries:
            try:
                self.check_file(e)
            except ReferenceDataError as exc:
                errors.append(str(exc))
        return errors
