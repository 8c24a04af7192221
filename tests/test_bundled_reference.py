"""The bundled reference data: pinned, complete, and equal to an independent PySCF run."""

import shutil

import numpy as np
import pytest
import yaml
from pyscf.data.nist import HARTREE2EV

from harness.cli import main
from harness.io import sha256_file
from harness.molecules import TINY_MOLECULES, g2_closed_shell, split_of
from harness.reference import pins
from harness.reference.store import ReferenceDataError, ReferenceSet
from tests.test_reference import direct_pyscf_b3lyp

BUNDLED = pins.BUNDLED_REFERENCE_DIR


def test_bundled_manifest_matches_pin():
    assert sha256_file(BUNDLED / "manifest.yaml") == pins.BUNDLED_MANIFEST_SHA256
    refset = ReferenceSet(BUNDLED)
    assert refset.check_all() == []


def test_bundled_set_holds_test_and_tiny_splits():
    refset = ReferenceSet(BUNDLED)
    test_names = sorted(m.name for m in g2_closed_shell() if split_of(m.name) == "test")
    assert sorted(e.name for e in refset.select("test")) == test_names and len(test_names) == 28
    assert sorted(e.name for e in refset.select("tiny")) == sorted(TINY_MOLECULES)
    assert all(e.conformer == 0 for e in refset.entries)
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total < 30e6


@pytest.mark.parametrize("key", ["HF", "ClF"])
def test_bundled_values_equal_independent_pyscf(key):
    rec = ReferenceSet(BUNDLED).load(key)
    mf, td = direct_pyscf_b3lyp(rec.molecule)
    assert abs(rec.energy_Eh - mf.e_tot) < 1e-8
    np.testing.assert_allclose(rec.dipole_debye, mf.dip_moment(unit="Debye", verbose=0), atol=1e-6)
    np.testing.assert_allclose(rec.excitation_energies_eV, td.e * HARTREE2EV, atol=1e-5)


def test_flipped_byte_in_bundled_copy_fails_verify(tmp_path, capsys):
    copy = tmp_path / "g2-b3lyp-svp-v1"
    shutil.copytree(BUNDLED, copy)
    target = copy / "geometries" / "CS2.h5"
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0x01
    target.write_bytes(bytes(raw))
    assert main(["reference", "verify", "--reference", str(copy), "--recompute", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "CS2.h5" in err and "checksum mismatch" in err


def test_modified_bundled_manifest_breaks_pin(tmp_path, monkeypatch):
    copy = tmp_path / "g2-b3lyp-svp-v1"
    shutil.copytree(BUNDLED, copy)
    monkeypatch.setattr(pins, "BUNDLED_REFERENCE_DIR", copy.resolve())
    data = yaml.safe_load((copy / "manifest.yaml").read_text())
    data["settings"]["grid_level"] = 4
    (copy / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ReferenceDataError, match="differs from the pinned"):
        ReferenceSet(copy)


def test_show_bundled_json(capsys):
    import json

    assert main(["reference", "show", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 34
