"""Pinned sha256 of the bundled reference manifest; the manifest in turn pins every data file."""

from __future__ import annotations

from pathlib import Path

from harness.reference.errors import ReferenceDataError

#: Folder of the bundled reference data (test and tiny splits), at the repository root.
BUNDLED_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_data" / "g2-b3lyp-svp-v1"

#: sha256 of ``reference_data/g2-b3lyp-svp-v1/manifest.yaml``. Update together with the data.
BUNDLED_MANIFEST_SHA256 = "2f4f3eaa45a32cf8b1da10e53072324bf97cc0c0aa3c62194c6fd46f81d41c1f"


def check_manifest(root: str | Path, manifest_sha256: str) -> None:
    """Refuse a bundled manifest whose sha256 differs from the pin. Other folders are not pinned."""
    if Path(root).resolve() != BUNDLED_REFERENCE_DIR:
        return
    if BUNDLED_MANIFEST_SHA256 != manifest_sha256:
        raise ReferenceDataError(
            f"{Path(root) / 'manifest.yaml'}: sha256 {manifest_sha256[:12]}… differs from the pinned "
            f"{BUNDLED_MANIFEST_SHA256[:12]}…; the bundled manifest was modified"
        )
