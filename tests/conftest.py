"""Shared fixtures. PySCF threads are capped so tests behave on a 2-core machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def xyz_dir(tmp_path: Path) -> Path:
    """A folder with two tiny molecules as .xyz files (H2 and HF)."""
    d = tmp_path / "xyz"
    d.mkdir()
    (d / "H2.xyz").write_text("2\ncharge=0 multiplicity=1\nH 0 0 0\nH 0 0 0.74\n")
    (d / "HF.xyz").write_text("2\n0 1\nH 0 0 0\nF 0 0 0.917\n")
    return d


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
