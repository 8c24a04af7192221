import hashlib

import numpy as np
import pytest

from harness.molecules import (
    TINY_MOLECULES,
    Molecule,
    MoleculeError,
    distorted_conformers,
    g2_closed_shell,
    g2_molecule,
    read_xyz,
    read_xyz_folder,
    resolve_molecule,
    split_of,
    to_pyscf,
    validate,
    write_xyz,
)
from harness.reference.build import plan_geometries
from harness.reference.settings import ReferenceSettings


def test_g2_closed_shell_set_has_119_singlets():
    mols = g2_closed_shell()
    assert len(mols) == 119
    for m in mols:
        assert m.n_electrons % 2 == 0
        assert m.spin == 0
    names = [m.name for m in mols]
    assert names == sorted(names)
    # triplets and radicals of G2 are excluded
    assert "O2" not in names and "CH3" not in names and "H2O" in names


def test_split_matches_protocol_formula_and_counts():
    mols = g2_closed_shell()
    for m in mols:
        bucket = int(hashlib.sha256(m.name.encode()).hexdigest(), 16) % 10
        assert split_of(m.name) == ("test" if bucket < 2 else "val" if bucket == 2 else "train")
    counts = {s: sum(split_of(m.name) == s for m in mols) for s in ("train", "val", "test")}
    assert counts == {"train": 74, "val": 17, "test": 28}


def test_split_is_deterministic_and_has_no_overlap_including_conformers():
    plan1 = plan_geometries(settings=ReferenceSettings(conformers=2))
    plan2 = plan_geometries(settings=ReferenceSettings(conformers=2))
    assert [(p.key, p.split) for p in plan1] == [(p.key, p.split) for p in plan2]
    for a, b in zip(plan1, plan2):
        np.testing.assert_array_equal(a.molecule.positions_angstrom, b.molecule.positions_angstrom)
    test_names = {p.molecule.name for p in plan1 if p.split == "test"}
    train_names = {p.molecule.name for p in plan1 if p.split in ("train", "val")}
    assert test_names.isdisjoint(train_names)
    # test molecules never get distorted copies
    assert all(p.molecule.conformer == 0 for p in plan1 if p.split == "test")
    n_trainval = sum(1 for p in plan1 if p.split in ("train", "val") and p.molecule.conformer == 0)
    assert sum(1 for p in plan1 if p.molecule.conformer > 0) == 2 * n_trainval
    # every conformer keeps the name (and so the split) of its parent
    for p in plan1:
        assert split_of(p.molecule.name) == p.split


def test_conformers_are_seeded_and_respect_distance_floor():
    mol = g2_molecule("CH3CH2OH")
    a = distorted_conformers(mol, 3, base_seed=0)
    b = distorted_conformers(mol, 3, base_seed=0)
    c = distorted_conformers(mol, 3, base_seed=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions_angstrom, y.positions_angstrom)
    assert not np.allclose(a[0].positions_angstrom, c[0].positions_angstrom)
    eq = mol.positions_angstrom
    for conf in a:
        disp = conf.positions_angstrom - eq
        assert 0.005 < np.std(disp) < 0.1  # σ = 0.04 Å noise
        d0 = np.linalg.norm(eq[:, None] - eq[None], axis=-1)
        d1 = np.linalg.norm(conf.positions_angstrom[:, None] - conf.positions_angstrom[None], axis=-1)
        iu = np.triu_indices(len(eq), 1)
        assert np.all(d1[iu] >= 0.75 * d0[iu])
    assert [x.key for x in a] == ["CH3CH2OH__c1", "CH3CH2OH__c2", "CH3CH2OH__c3"]


def test_tiny_split_is_from_g2():
    names = {m.name for m in g2_closed_shell()}
    assert set(TINY_MOLECULES) <= names
    plan = plan_geometries(settings=ReferenceSettings(conformers=3), splits={"tiny"})
    assert sorted(p.key for p in plan) == sorted(TINY_MOLECULES)
    assert all(p.subsets == ("tiny",) for p in plan)


def test_read_xyz_roundtrip_and_charge_multiplicity(tmp_path):
    mol = g2_molecule("H2O")
    write_xyz(mol, tmp_path / "w.xyz")
    back = read_xyz(tmp_path / "w.xyz")
    assert back.symbols == mol.symbols and back.charge == 0 and back.spin == 0
    np.testing.assert_allclose(back.positions_angstrom, mol.positions_angstrom, atol=1e-9)
    (tmp_path / "ion.xyz").write_text("1\ncharge=1 multiplicity=1\nLi 0 0 0\n")
    ion = read_xyz(tmp_path / "ion.xyz")
    assert ion.charge == 1 and ion.n_electrons == 2
    (tmp_path / "plain.xyz").write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    assert read_xyz(tmp_path / "plain.xyz").spin == 0  # default: neutral singlet


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("x\n\nH 0 0 0\n", 1, "number of atoms"),
        ("2\n\nH 0 0 0\n", 4, "expected 2 atom lines"),
        ("2\n\nH 0 0 0\nH 0 zero 0.7\n", 4, "not numbers"),
        ("1\n\nH 0 0\n", 3, "symbol x y z"),
        ("1\n\nH 0 0 0\nH 1 1 1\n", 4, "more atom lines"),
    ],
)
def test_malformed_xyz_names_file_and_line(tmp_path, text, line, fragment):
    p = tmp_path / "bad.xyz"
    p.write_text(text)
    with pytest.raises(MoleculeError) as err:
        read_xyz(p)
    msg = str(err.value)
    assert f"{p}:{line}:" in msg and fragment in msg


def test_unknown_element_and_odd_electron_singlet_are_refused(tmp_path):
    (tmp_path / "xx.xyz").write_text("1\n\nXx 0 0 0\n")
    with pytest.raises(MoleculeError, match=r"xx\.xyz: unknown element symbol 'Xx'"):
        read_xyz(tmp_path / "xx.xyz")
    (tmp_path / "oh.xyz").write_text("2\ncharge=0 multiplicity=1\nO 0 0 0\nH 0 0 0.97\n")
    with pytest.raises(MoleculeError, match=r"oh\.xyz: 9 electrons cannot have multiplicity 1"):
        read_xyz(tmp_path / "oh.xyz")
    (tmp_path / "ohd.xyz").write_text("2\ncharge=0 multiplicity=2\nO 0 0 0\nH 0 0 0.97\n")
    assert read_xyz(tmp_path / "ohd.xyz").spin == 1
    with pytest.raises(MoleculeError, match="no atoms"):
        validate(Molecule("empty", (), np.zeros((0, 3))))


def test_xyz_folder_and_resolve(tmp_path, xyz_dir):
    mols = read_xyz_folder(xyz_dir)
    assert [m.name for m in mols] == ["H2", "HF"]
    with pytest.raises(MoleculeError, match="contains no .xyz files"):
        read_xyz_folder(tmp_path / "xyz" / ".." / "xyz" / "..")
    assert resolve_molecule("NH3").name == "NH3"
    assert resolve_molecule(str(xyz_dir / "HF.xyz")).name == "HF"
    with pytest.raises(MoleculeError, match="not a closed-shell"):
        resolve_molecule("O2")


def test_formula_and_pyscf_conversion():
    m = g2_molecule("CH3CH2OH")
    assert m.formula == "C2H6O"
    assert g2_molecule("CO").formula == "CO"
    assert g2_molecule("H2O").formula == "H2O"
    pm = to_pyscf(m)
    assert pm.nao_nr() == 72 and pm.nelectron == 26
    np.testing.assert_allclose(pm.atom_coords(unit="Angstrom"), m.positions_angstrom, atol=1e-10)
