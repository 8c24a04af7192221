"""XC engine (harness.xc): V_xc against PySCF's nr_rks, finite differences, output checks."""

import numpy as np
import pytest
import torch

from harness.contract import FunctionalError
from harness.functionals import LDA, PBE, TPSS
from harness.integrals import build_setup
from harness.molecules import g2_molecule
from harness.xc import XCEngine


@pytest.fixture(scope="module")
def h2o():
    return build_setup(g2_molecule("H2O"))


@pytest.fixture(scope="module")
def pyscf_grids(h2o):
    from pyscf import dft

    g = dft.gen_grid.Grids(h2o.mol)
    g.level = 3
    return g.build()


@pytest.mark.parametrize("cls", [LDA, PBE, TPSS], ids=["lda", "pbe", "tpss"])
def test_vxc_matches_pyscf_nr_rks(h2o, pyscf_grids, cls):
    from pyscf import dft

    fn = cls()
    P = h2o.dm_guess
    e, V = XCEngine(fn, h2o).exc_vxc(P)
    _, e_ref, v_ref = dft.numint.NumInt().nr_rks(h2o.mol, pyscf_grids, fn.libxc_code, P.numpy())
    assert abs(float(e) - e_ref) < 1e-8
    assert np.abs(V.numpy() - v_ref).max() < 1e-7


@pytest.mark.parametrize("cls", [LDA, PBE, TPSS], ids=["lda", "pbe", "tpss"])
def test_vxc_is_gradient_of_exc(h2o, cls):
    eng = XCEngine(cls(), h2o)
    # a physical density: (randomly perturbed, non-physical P make TPSS's τ_W ≤ τ clamp bite)
    P = h2o.dm_guess
    _, V = eng.exc_vxc(P)
    g = torch.Generator().manual_seed(7)
    D = torch.randn(h2o.nao, h2o.nao, generator=g, dtype=torch.float64)
    D = 0.5 * (D + D.T)
    D = D / torch.linalg.norm(D)
    h = 1e-4
    fd = (float(eng.exc(P + h * D)) - float(eng.exc(P - h * D))) / (2 * h)
    an = float((V * D).sum())
    assert abs(fd - an) < 1e-7 * max(1.0, abs(an))


def test_functional_receives_declared_features_only(h2o):
    seen = {}

    class Spy:
        features = ["density", "grid_weights"]

        def get_exc(self, f):
            seen.update({k: tuple(v.shape) for k, v in f.items()})
            return (f["density"].sum(0) * f["grid_weights"]).sum()

    e, V = XCEngine(Spy(), h2o).exc_vxc(h2o.dm_guess)
    assert set(seen) == {"density", "grid_weights"}
    assert seen["density"] == (2, h2o.ngrid)
    # E = ∫ρ, so V = S on the grid (quadrature)
    assert torch.allclose(V, h2o.S, atol=1e-4)


class _Bad:
    def __init__(self, kind):
        self.kind = kind
        self.name = f"bad-{kind}"
        self.features = ["density", "grid_weights"]

    def get_exc(self, f):
        e = (f["density"].sum(0) * f["grid_weights"]).sum()
        if self.kind == "nan":
            return e * float("nan")
        if self.kind == "inf":
            return e + float("inf")
        if self.kind == "shape":
            return torch.stack([e, e])
        if self.kind == "int":
            return torch.tensor(3, dtype=torch.int64)
        if self.kind == "raise":
            raise ValueError("boom")
        raise AssertionError


@pytest.mark.parametrize("kind,needle", [
    ("nan", "non-finite"), ("inf", "non-finite"), ("shape", "shape (2,)"), ("int", "int64"), ("raise", "boom"),
])
def test_bad_functional_raises_functional_error(h2o, kind, needle):
    with pytest.raises(FunctionalError) as info:
        XCEngine(_Bad(kind), h2o).exc_vxc(h2o.dm_guess)
    msg = str(info.value)
    assert f"bad-{kind}" in msg and "H2O" in msg and needle in msg


def test_unnamed_functional_uses_class_name(h2o):
    class MyBrokenFunctional:
        features = ["density"]

        def get_exc(self, f):
            return f["density"].sum() * float("nan")

    with pytest.raises(FunctionalError, match="MyBrokenFunctional.*H2O"):
        XCEngine(MyBrokenFunctional(), h2o).exc_vxc(h2o.dm_guess)
