"""Shared fixtures. Threads are capped so tests behave on a 2-core machine: the cores are shared
among pytest-xdist's workers (``-n``), one share per worker, so two workers on two cores do not
each start two OpenMP threads."""

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
    # the controller knows -n (xdist resolves "auto" to a number first); its workers inherit the
    # variable it sets here
    workers = getattr(config.option, "numprocesses", None)
    workers = workers if isinstance(workers, int) and workers > 0 else 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
