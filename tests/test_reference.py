"""Reference set: builder output against direct PySCF, checksums, resumption, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from pyscf import dft
from pyscf.data.nist import HARTREE2EV

from harness.cli import main
from harness.molecules import read_xyz_folder, to_pyscf
from harness.reference import pins
from harness.reference.build import build_reference, plan_geometries
from harness.reference.settings import ReferenceSettings
from harness.reference.store import ReferenceDataError, ReferenceSet, read_record
from harness.reference.verify import compare_records

SETTINGS = ReferenceSettings(conformers=0)


def direct_pyscf_b3lyp(mol):
    """An independent PySCF B3LYP/def2-SVP run with the protocol settings, straight from minao."""
    mf = dft.RKS(to_pyscf(mol), xc="b3lyp")
    mf.grids.level = 3
    mf.conv_tol = 1e-10
    mf.conv_tol_grad = 1e-8
    mf.verbose = 0
    mf.kernel()
    td = mf.TDDFT()
    td.nstates = 5
    td.conv_tol = 1e-6
    td.verbose = 0
    td.kernel()
    return mf, td


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """H2 and HF built by the builder (from .xyz files) into a fresh folder."""
    d = tmp_path_factory.mktemp("xyz")
    (d / "H2.xyz").write_text("2\ncharge=0 multiplicity=1\nH 0 0 0\nH 0 0 0.74\n")
    (d / "HF.xyz").write_text("2\n0 1\nH 0 0 0\nF 0 0 0.917\n")
    out = tmp_path_factory.mktemp("ref")
    report = build_reference(out, plan_geometries(read_xyz_folder(d), SETTINGS), SETTINGS, progress=False)
    assert report.ok and sorted(report.computed) == ["H2", "HF"]
    return out


def test_builder_equals_direct_pyscf(built):
    refset = ReferenceSet(built)
    assert [e.key for e in refset.entries] == ["H2", "HF"]
    for e in refset.entries:
        rec = refset.load(e.key)
        mf, td = direct_pyscf_b3lyp(rec.molecule)
        assert abs(rec.energy_Eh - mf.e_tot) < 1e-8
        np.testing.assert_allclose(rec.dipole_debye, mf.dip_moment(unit="Debye", verbose=0), atol=1e-6)
        np.testing.assert_allclose(rec.excitation_energies_eV, td.e * HARTREE2EV, atol=1e-5)
        np.testing.assert_allclose(rec.oscillator_strengths, td.oscillator_strength(), atol=1e-5)
        np.testing.assert_allclose(rec.dm, mf.make_rdm1(), atol=1e-6)
        assert rec.excitation_energies_eV.shape == (5,)
        assert np.all(np.diff(rec.excitation_energies_eV) >= -1e-9)
        # cycle count of the evaluation settings (conv_tol 1e-8, DIIS, minao), from PySCF itself
        mf8 = dft.RKS(to_pyscf(rec.molecule), xc="b3lyp")
        mf8.grids.level = 3
        mf8.conv_tol = 1e-8
        mf8.verbose = 0
        mf8.kernel()
        assert rec.scf_cycles_minao == mf8.cycles
        assert rec.nao == mf.mol.nao_nr()


def test_manifest_records_settings_versions_and_checksums(built):
    import pyscf

    data = yaml.safe_load((built / "manifest.yaml").read_text())
    assert data["pyscf_version"] == pyscf.__version__
    assert data["settings"]["xc"] == "b3lyp" and data["settings"]["basis"] == "def2-svp"
    assert data["settings"]["grid_level"] == 3 and data["settings"]["conv_tol"] == 1e-10
    for g in data["geometries"]:
        assert len(g["sha256"]) == 64
        assert (built / g["file"]).is_file()


def test_corrupted_byte_gives_clear_error(built, tmp_path):
    import shutil

    copy = tmp_path / "ref"
    shutil.copytree(built, copy)
    path = copy / "geometries" / "HF.h5"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    refset = ReferenceSet(copy)
    refset.load("H2")  # the untouched file still loads
    with pytest.raises(ReferenceDataError, match=r"HF\.h5: checksum mismatch for HF"):
        refset.load("HF")
    errors = refset.check_all()
    assert len(errors) == 1 and "HF.h5" in errors[0]
    assert main(["reference", "verify", "--reference", str(copy), "--recompute", "0", "--quiet"]) == 1


def test_truncated_file_and_bad_manifest_are_refused(built, tmp_path):
    import shutil

    copy = tmp_path / "ref"
    shutil.copytree(built, copy)
    (copy / "geometries" / "H2.h5").write_bytes(b"not hdf5")
    with pytest.raises(ReferenceDataError, match="H2.h5"):
        read_record(copy / "geometries" / "H2.h5")
    (copy / "manifest.yaml").write_text("geometries: [\n")
    with pytest.raises(ReferenceDataError, match=r"manifest\.yaml: malformed manifest"):
        ReferenceSet(copy)
    with pytest.raises(ReferenceDataError, match="no reference manifest"):
        ReferenceSet(tmp_path / "nowhere")


def test_verify_recomputes_and_passes(built, capsys):
    assert main(["reference", "verify", "--reference", str(built), "--molecule", "H2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "recomputed H2" in out and "OK" in out


def test_compare_records_flags_deviations(built):
    refset = ReferenceSet(built)
    rec = refset.load("HF")
    other = refset.load("HF")
    assert compare_records(rec, other)[1] == []
    other.energy_Eh += 2e-8
    other.excitation_energies_eV = other.excitation_energies_eV + 2e-5
    problems = compare_records(rec, other)[1]
    assert any("energy differs" in p for p in problems) and any("excitations differ" in p for p in problems)


def test_interrupted_build_resumes(tmp_path, xyz_dir):
    """Kill a running build after its first geometry lands; the rerun keeps it and finishes."""
    out = tmp_path / "ref"
    cmd = [sys.executable, "-m", "harness.cli", "reference", "build", "--molecules", str(xyz_dir),
           "--conformers", "0", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    geo = out / "geometries"
    while time.time() < deadline and not (geo.is_dir() and any(geo.glob("*.h5"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_first = sorted(p.stem for p in geo.glob("*.h5"))
    assert done_first, "the first geometry never landed"
    report = build_reference(out, plan_geometries(read_xyz_folder(xyz_dir), SETTINGS), SETTINGS, progress=False)
    assert report.ok
    assert set(done_first) <= set(report.skipped)
    assert sorted(report.skipped + report.computed) == ["H2", "HF"]
    assert not list(out.rglob(".*.tmp"))
    refset = ReferenceSet(out)
    assert refset.check_all() == [] and len(refset) == 2
    # a third run computes nothing
    again = build_reference(out, plan_geometries(read_xyz_folder(xyz_dir), SETTINGS), SETTINGS, progress=False)
    assert again.computed == [] and sorted(again.skipped) == ["H2", "HF"]


def test_resume_with_other_settings_is_refused(built):
    other = ReferenceSettings(conformers=0, grid_level=4)
    with pytest.raises(ReferenceDataError, match="different settings"):
        build_reference(built, [], other, progress=False)


def test_show_json_lists_whole_g2_set(capsys):
    assert main(["reference", "show", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 119
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 74, "val": 17, "test": 28}
    assert sum("tiny" in r["subsets"] for r in rows) == 6
    h2o = next(r for r in rows if r["name"] == "H2O")
    assert h2o["nao"] == 24 and h2o["natm"] == 3 and h2o["formula"] == "H2O"


def test_cli_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["reference", "build", "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert "--workers" in out and "--molecules" in out and "rerun" in out


def test_cached_ao_numint_gives_pyscf_numbers(monkeypatch):
    """The AO-value cache of `make_rks` changes timings only: energy, dipole and excitations
    equal those of PySCF's plain NumInt."""
    from pyscf.dft import numint

    from harness.molecules import g2_molecule
    from harness.reference import compute, rks

    mol = g2_molecule("H2O")
    cached = compute.compute_reference(mol, "train", SETTINGS)
    monkeypatch.setattr(rks, "_cached_numint_class", lambda: numint.NumInt)
    plain = compute.compute_reference(mol, "train", SETTINGS)
    assert abs(cached.energy_Eh - plain.energy_Eh) < 1e-11
    np.testing.assert_allclose(cached.dipole_debye, plain.dipole_debye, atol=1e-10)
    np.testing.assert_allclose(cached.excitation_energies_eV, plain.excitation_energies_eV, atol=1e-9)
    assert cached.scf_cycles_minao == plain.scf_cycles_minao
