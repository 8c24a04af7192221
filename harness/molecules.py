"""The molecule set: G2 closed-shell singlets, the deterministic split, `.xyz` input
and the seeded distorted training conformers (PROTOCOL §1).

Geometries are in Å at this boundary; `to_pyscf` converts to a PySCF ``Mole``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

#: Molecules of the bundled ``tiny`` split: small G2 molecules for quick checks.
TINY_MOLECULES: tuple[str, ...] = ("H2O", "NH3", "CH4", "HF", "N2", "CO")

#: Split names in the order used in tables.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Standard deviation of the Cartesian noise of the training conformers, Å.
CONFORMER_SIGMA_ANGSTROM = 0.04
#: A conformer is rejected when a distance falls below this fraction of its equilibrium value.
CONFORMER_MIN_DISTANCE_RATIO = 0.75


class MoleculeError(HarnessError, ValueError):
    """A molecule that cannot be used: bad file, unknown element, impossible spin."""


@dataclass(frozen=True)
class Molecule:
    """One geometry.

    ``positions_angstrom`` has shape (natm, 3). ``spin`` is 2S (0 for a singlet).
    ``conformer`` is 0 for the equilibrium geometry and k ≥ 1 for the k-th distorted copy.
    """

    name: str
    symbols: tuple[str, ...]
    positions_angstrom: np.ndarray = field(compare=False)
    charge: int = 0
    spin: int = 0
    source: str = "g2"
    conformer: int = 0

    @property
    def key(self) -> str:
        """Unique key of this geometry: the name, with ``__c<k>`` for conformer k."""
        return self.name if self.conformer == 0 else f"{self.name}__c{self.conformer}"

    @property
    def formula(self) -> str:
        return hill_formula(self.symbols)

    @property
    def atomic_numbers(self) -> np.ndarray:
        from pyscf.data.elements import charge

        return np.array([charge(s) for s in self.symbols], dtype=np.int64)

    @property
    def n_electrons(self) -> int:
        return int(self.atomic_numbers.sum()) - self.charge


def hill_formula(symbols) -> str:
    """Hill formula: C, then H, then the rest alphabetically (all alphabetical without C)."""
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    order = sorted(counts)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + [s for s in order if s not in ("C", "H")]
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def split_of(name: str) -> str:
    """Deterministic split of a molecule name: sha256 mod 10 → 0–1 test, 2 val, else train."""
    bucket = int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % 10
    if bucket <= 1:
        return "test"
    if bucket == 2:
        return "val"
    return "train"


def validate(mol: Molecule, origin: str | None = None) -> Molecule:
    """Refuse unknown elements and spin states incompatible with the electron count."""
    from pyscf.data.elements import ELEMENTS

    where = origin or mol.name
    known = {e.upper() for e in ELEMENTS[1:]}
    for s in mol.symbols:
        if s.upper() not in known:
            raise MoleculeError(f"{where}: unknown element symbol {s!r}")
    if len(mol.symbols) == 0:
        raise MoleculeError(f"{where}: no atoms")
    if mol.spin < 0:
        raise MoleculeError(f"{where}: negative spin 2S={mol.spin}")
    n_elec = mol.n_electrons
    if n_elec <= 0:
        raise MoleculeError(f"{where}: charge {mol.charge} leaves {n_elec} electrons")
    if (n_elec - mol.spin) % 2 != 0:
        mult = mol.spin + 1
        raise MoleculeError(
            f"{where}: {n_elec} electrons cannot have multiplicity {mult} "
            f"(odd electron count with an even multiplicity, or the reverse)"
        )
    pos = np.asarray(mol.positions_angstrom, dtype=float)
    if pos.shape != (len(mol.symbols), 3) or not np.all(np.isfinite(pos)):
        raise MoleculeError(f"{where}: positions must be finite with shape ({len(mol.symbols)}, 3)")
    return mol


def g2_closed_shell() -> list[Molecule]:
    """The 119 closed-shell singlet molecules of ``ase.collections.g2``, sorted by name.

    Excluded: odd-electron molecules and those with nonzero initial magnetic moments (triplets).
    """
    from ase.collections import g2

    out = []
    for name in sorted(g2.names):
        atoms = g2[name]
        if np.any(np.abs(atoms.get_initial_magnetic_moments()) > 0):
            continue
        if int(atoms.get_atomic_numbers().sum()) % 2 != 0:
            continue
        out.append(
            Molecule(
                name=name,
                symbols=tuple(atoms.get_chemical_symbols()),
                positions_angstrom=np.array(atoms.get_positions(), dtype=float),
            )
        )
    return out


def g2_molecule(name: str) -> Molecule:
    """One closed-shell G2 molecule by name (case-sensitive, as ase spells it)."""
    for mol in g2_closed_shell():
        if mol.name == name:
            return mol
    raise MoleculeError(f"{name!r} is not a closed-shell singlet molecule of the G2 set")


_CHARGE_MULT = re.compile(r"(charge|multiplicity|mult|spin)\s*=\s*([+-]?\d+)", re.IGNORECASE)


def _parse_comment(comment: str, origin: str) -> tuple[int, int]:
    """Charge and multiplicity from an xyz comment: ``charge=0 multiplicity=1`` or ``0 1``."""
    charge, mult = 0, 1
    pairs = _CHARGE_MULT.findall(comment)
    if pairs:
        for key, val in pairs:
            if key.lower() == "charge":
                charge = int(val)
            elif key.lower() == "spin":
                mult = int(val) + 1
            else:
                mult = int(val)
    else:
        tokens = comment.split()
        if len(tokens) >= 2 and all(re.fullmatch(r"[+-]?\d+", t) for t in tokens[:2]):
            charge, mult = int(tokens[0]), int(tokens[1])
    if mult < 1:
        raise MoleculeError(f"{origin}:2: multiplicity must be ≥ 1, got {mult}")
    return charge, mult


def read_xyz(path: str | Path) -> Molecule:
    """Read a single-geometry ``.xyz`` file (Å). Errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MoleculeError(f"{path}: cannot read: {exc}") from exc
    if not lines or not lines[0].strip():
        raise MoleculeError(f"{path}:1: expected the number of atoms on the first line")
    try:
        natm = int(lines[0].split()[0])
    except ValueError:
        raise MoleculeError(f"{path}:1: expected the number of atoms, got {lines[0].strip()!r}") from None
    if natm <= 0:
        raise MoleculeError(f"{path}:1: number of atoms must be positive, got {natm}")
    comment = lines[1] if len(lines) > 1 else ""
    charge, mult = _parse_comment(comment, str(path))
    body = lines[2:]
    symbols, positions = [], []
    for i in range(natm):
        lineno = i + 3
        if i >= len(body) or not body[i].strip():
            raise MoleculeError(f"{path}:{lineno}: expected {natm} atom lines, found {i}")
        parts = body[i].split()
        if len(parts) < 4:
            raise MoleculeError(f"{path}:{lineno}: expected 'symbol x y z', got {body[i].strip()!r}")
        try:
            xyz = [float(p) for p in parts[1:4]]
        except ValueError:
            raise MoleculeError(f"{path}:{lineno}: coordinates are not numbers: {body[i].strip()!r}") from None
        sym = parts[0]
        sym = sym[:1].upper() + sym[1:].lower()
        symbols.append(sym)
        positions.append(xyz)
    extra = [ln for ln in body[natm:] if ln.strip()]
    if extra:
        raise MoleculeError(f"{path}:{natm + 3}: more atom lines than the {natm} declared")
    mol = Molecule(
        name=path.stem,
        symbols=tuple(symbols),
        positions_angstrom=np.array(positions, dtype=float),
        charge=charge,
        spin=mult - 1,
        source=f"xyz:{path.name}",
    )
    return validate(mol, origin=str(path))


def write_xyz(mol: Molecule, path: str | Path) -> None:
    """Write a geometry in the format `read_xyz` reads."""
    lines = [str(len(mol.symbols)), f"charge={mol.charge} multiplicity={mol.spin + 1}"]
    for s, (x, y, z) in zip(mol.symbols, mol.positions_angstrom):
        lines.append(f"{s:2s} {x: .10f} {y: .10f} {z: .10f}")
    Path(path).write_text("\n".join(lines) + "\n")


def read_xyz_folder(folder: str | Path) -> list[Molecule]:
    """All ``*.xyz`` files of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MoleculeError(f"{folder}: not a folder of .xyz files")
    files = sorted(folder.glob("*.xyz"))
    if not files:
        raise MoleculeError(f"{folder}: contains no .xyz files")
    return [read_xyz(f) for f in files]


def resolve_molecule(spec: str) -> Molecule:
    """A G2 name or a path to an ``.xyz`` file."""
    if spec.endswith(".xyz") or Path(spec).is_file():
        return read_xyz(spec)
    return g2_molecule(spec)


def _pair_distances(pos: np.ndarray) -> np.ndarray:
    diff = pos[:, None, :] - pos[None, :, :]
    iu = np.triu_indices(len(pos), k=1)
    return np.linalg.norm(diff, axis=-1)[iu]


def conformer_seed(name: str, k: int, base_seed: int = 0) -> int:
    """Seed of conformer k of a molecule: a stable function of name, k and the base seed."""
    digest = hashlib.sha256(f"{name}|{k}|{base_seed}".encode()).hexdigest()
    return int(digest[:16], 16)


def distorted_conformers(
    mol: Molecule,
    k: int,
    base_seed: int = 0,
    sigma_angstrom: float = CONFORMER_SIGMA_ANGSTROM,
    min_ratio: float = CONFORMER_MIN_DISTANCE_RATIO,
    max_tries: int = 1000,
) -> list[Molecule]:
    """K seeded copies with Gaussian Cartesian noise (σ in Å); each interatomic distance
    stays ≥ ``min_ratio`` × its equilibrium value."""
    eq = _pair_distances(mol.positions_angstrom)
    out = []
    for j in range(1, k + 1):
        rng = np.random.default_rng(conformer_seed(mol.name, j, base_seed))
        for _ in range(max_tries):
            pos = mol.positions_angstrom + rng.normal(0.0, sigma_angstrom, mol.positions_angstrom.shape)
            if eq.size == 0 or np.all(_pair_distances(pos) >= min_ratio * eq):
                break
        else:  # pragma: no cover - needs σ far above the default
            raise MoleculeError(f"{mol.name}: no acceptable conformer {j} after {max_tries} draws")
        out.append(
            Molecule(mol.name, mol.symbols, pos, mol.charge, mol.spin, mol.source, conformer=j)
        )
    return out


def to_pyscf(mol: Molecule, basis: str = "def2-svp"):
    """A built PySCF ``Mole`` (Å input, bohr inside)."""
    from pyscf import gto

    atom = [(s, tuple(float(c) for c in p)) for s, p in zip(mol.symbols, mol.positions_angstrom)]
    return gto.M(atom=atom, basis=basis, charge=mol.charge, spin=mol.spin, unit="Angstrom", verbose=0)
