"""Feature builder (harness.features) against PySCF's eval_rho, linearity and batching."""

import numpy as np
import pytest
import torch

from harness.features import build_features, contract_features, total_features
from harness.integrals import build_setup
from harness.molecules import g2_molecule


@pytest.fixture(scope="module")
def h2o():
    return build_setup(g2_molecule("H2O"))


def _random_dm(setup, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(setup.nao, setup.nao, generator=g, dtype=torch.float64)
    return 0.01 * (A + A.T) + setup.dm_guess


def test_setup_shapes(h2o):
    s = h2o
    assert s.nao == 24 and s.nocc == 5
    assert s.S.shape == (24, 24) and s.hcore.shape == (24, 24)
    assert s.grid_coords.shape == (s.ngrid, 3) and s.grid_weights.shape == (s.ngrid,)
    assert s.atomic_numbers.dtype == torch.int64 and s.atomic_numbers.tolist() == [8, 1, 1]
    # the blocks tile the grid
    assert s.ao_blocks[0].start == 0 and s.ao_blocks[-1].stop == s.ngrid
    assert all(b.ao.is_contiguous() and b.ao.shape[0] == 4 and b.ao.shape[2] == b.stop - b.start
               for b in s.ao_blocks)  # (ncomp, nb, Gb)
    # minao guess carries the electrons
    assert abs(float((s.dm_guess * s.S).sum()) - 10.0) < 0.05  # minao: roughly N electrons
    assert s.timings["setup_s"] > 0


def test_features_match_pyscf_eval_rho(h2o):
    from pyscf import dft

    s = h2o
    P = _random_dm(s)
    f = build_features(s, P)
    ao = dft.numint.eval_ao(s.mol, s.grid_coords.numpy(), deriv=1)
    ref = dft.numint.eval_rho(s.mol, ao, P.numpy(), xctype="MGGA", with_lapl=False)
    # ref rows: rho, ∂xρ, ∂yρ, ∂zρ, τ (τ = ½ Σ |∇φ_i|², total density)
    assert torch.allclose(f["density"][0], f["density"][1])
    np.testing.assert_allclose(2 * f["density"][0].numpy(), ref[0], atol=1e-10)
    np.testing.assert_allclose(2 * f["grad"][0].numpy(), ref[1:4], atol=1e-10)
    np.testing.assert_allclose(2 * f["kin"][0].numpy(), ref[4], atol=1e-10)
    # electron count of the guess
    n = float((f["density"].sum(0) * s.grid_weights).sum())
    assert abs(n - float((P * s.S).sum())) < 1e-4


def test_batched_features_and_contraction(h2o):
    s = h2o
    P1, P2 = _random_dm(s, 1), _random_dm(s, 2)
    fb = build_features(s, torch.stack([P1, P2]))
    f1, f2 = build_features(s, P1), build_features(s, P2)
    for k in ("density", "grad", "kin"):
        assert fb[k].shape[0] == 2
        torch.testing.assert_close(fb[k][0], f1[k], rtol=0, atol=1e-12)
        torch.testing.assert_close(fb[k][1], f2[k], rtol=0, atol=1e-12)
    # linearity: features of a sum
    f12 = build_features(s, P1 + P2)
    for k in f12:
        torch.testing.assert_close(f12[k], f1[k] + f2[k], rtol=0, atol=1e-10)
    # contraction is the adjoint: <dE, features(D)> == <contract(dE), D>
    g = torch.Generator().manual_seed(3)
    dE = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) * s.grid_weights for k, v in f1.items()}
    D = _random_dm(s, 4) - s.dm_guess
    lhs = sum(float((dE[k] * v).sum()) for k, v in build_features(s, D).items())
    V = contract_features(s, dE)
    assert abs(lhs - float((V * D).sum())) < 1e-9 * max(1.0, abs(lhs))
    Vb = contract_features(s, {k: torch.stack([v, 2 * v]) for k, v in dE.items()})
    torch.testing.assert_close(Vb[1], 2 * V, rtol=1e-12, atol=1e-12)


def test_screening_is_exact_enough(h2o):
    """Block AO screening (PySCF's shell mask) changes ρ only below the mask cutoff."""
    s2 = build_setup(g2_molecule("H2O"), screen=False, block_size=4096)
    P = _random_dm(h2o)
    a = total_features(h2o, P)
    b = total_features(s2, P)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-12)


def test_orbital_path_matches_density_path(h2o):
    s = h2o
    g = torch.Generator().manual_seed(5)
    C = torch.linalg.qr(torch.randn(s.nao, 5, generator=g, dtype=torch.float64))[0]
    P = 2 * C @ C.T
    a = build_features(s, P)
    b = build_features(s, None, C_occ=C)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["H2O", "CH3CH2OH"])
def test_build_grid_is_pyscfs_grid(name):
    """Our grid (faster grouping step) is PySCF's level-3 grid, bit for bit and in order."""
    from pyscf import dft

    from harness.integrals import build_grid, group_grid_points
    from harness.molecules import to_pyscf

    pmol = to_pyscf(g2_molecule(name))
    ref = dft.gen_grid.Grids(pmol)
    ref.level = 3
    ref.build(with_non0tab=False)
    coords, weights = build_grid(pmol, 3)
    n = coords.shape[0]
    assert n > 10_000
    # PySCF only appends zero-weight alignment padding after our points
    assert np.array_equal(coords, ref.coords[:n]) and np.array_equal(weights, ref.weights[:n])
    assert not ref.weights[n:].any()
    # the grouping permutation itself, on shuffled points
    pts = np.random.default_rng(0).permutation(coords)
    np.testing.assert_array_equal(group_grid_points(pmol, pts), dft.gen_grid.arg_group_grids(pmol, pts))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("block_size", [56 * 20, 56 * 3])
def test_contract_coefficients_matches_dense_sum(B, block_size):
    """V_b = Σ_g φ(½a φ + b·∇φ + ½c ∇φ·∇φ)ᵀ + transpose, against one dense numpy sum over the
    grid (two block sizes: different screened AO sets per block; B = 1 the single-matrix
    path, B = 3 the stacked one)."""
    from pyscf import dft

    from harness.features import contract_coefficients

    s = build_setup(g2_molecule("H2O"), block_size=block_size)
    ao = dft.numint.eval_ao(s.mol, s.grid_coords.numpy(), deriv=1)  # (4, G, nao)
    g = torch.Generator().manual_seed(7)
    a = torch.randn(B, s.ngrid, generator=g, dtype=torch.float64)
    b = torch.randn(B, 3, s.ngrid, generator=g, dtype=torch.float64)
    c = torch.randn(B, s.ngrid, generator=g, dtype=torch.float64)
    for with_b, with_c in ((False, False), (True, False), (True, True)):
        V = contract_coefficients(s, a, b if with_b else None, c if with_c else None)
        for k in range(B):
            W = 0.5 * a[k].numpy()[:, None] * ao[0]
            if with_b:
                W = W + np.einsum("xg,xgn->gn", b[k].numpy(), ao[1:])
            M = ao[0].T @ W
            if with_c:
                M = M + 0.5 * np.einsum("g,xgm,xgn->mn", c[k].numpy(), ao[1:], ao[1:])
            ref = M + M.T
            np.testing.assert_allclose(V[k].numpy(), ref, rtol=0, atol=1e-13 * np.abs(ref).max())


def test_runs_of_kept_aos():
    from harness.integrals import _runs

    assert _runs(np.array([0, 1, 2, 5, 6, 9])) == [(0, 3, 0), (5, 7, 3), (9, 10, 5)]
    assert _runs(np.array([4])) == [(4, 5, 0)]
