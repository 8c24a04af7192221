"""XC engine: E_xc[P] and V_xc = ∂E_xc/∂P for any contract functional.

One evaluation:

1. build the density features of P on the FULL grid (`harness.features`, blocked matmuls,
   no autograd graph through the AO products);
2. make them leaf tensors with ``requires_grad`` and call ``functional.get_exc`` ONCE on the
   whole grid (non-local models see every point), with only the features it declares;
3. ``torch.autograd.grad`` gives ∂E/∂features;
4. the map P → features is linear, so V = (∂features/∂P)ᵀ ∂E/∂features exactly; that
   contraction is done by hand (`harness.features.contract_features`).

Every call checks the functional's output (scalar, floating, finite) and its feature
gradients (finite); a violation raises `harness.contract.FunctionalError` naming the
functional, the molecule and the problem.

For response work, `XCEngine.features_of` and `XCEngine.contract` accept a leading batch
axis (perturbations dP of shape (n, nao, nao) → features (n, 2, G), …; ∂E/∂features with a
leading n → (n, nao, nao)).
"""

from __future__ import annotations

import time

import torch

from harness.contract import DENSITY_FEATURES, STANDARD_FEATURES, STATIC_FEATURES, FunctionalError, check_feature_names
from harness.features import build_features, contract_features
from harness.integrals import MoleculeSetup


def functional_name(functional) -> str:
    """A functional's display name: its ``name`` attribute, else its class name."""
    name = getattr(functional, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(functional).__name__


def declared_features(functional) -> list[str]:
    """The features a functional asks for (``STANDARD_FEATURES`` when it declares none)."""
    names = getattr(functional, "features", None)
    if names is None:
        return list(STANDARD_FEATURES)
    return check_feature_names(names, functional_name(functional))


class XCEngine:
    """E_xc and V_xc of one functional on one `MoleculeSetup`."""

    def __init__(self, functional, setup: MoleculeSetup):
        self.functional = functional
        self.setup = setup
        self.name = functional_name(functional)
        self.feature_names = declared_features(functional)
        self.density_names = [n for n in self.feature_names if n in DENSITY_FEATURES]
        self.static_names = [n for n in self.feature_names if n in STATIC_FEATURES]
        if any(n in ("grad", "kin") for n in self.density_names) and setup.ao_deriv < 1:
            raise FunctionalError(
                f"{self.name} on {setup.name}: needs {self.density_names} but the setup was built "
                "without AO derivatives"
            )
        static = setup.static_features()
        self._static = {n: static[n] for n in self.static_names}
        self.timings: dict[str, float] = {"features_s": 0.0, "functional_s": 0.0, "contract_s": 0.0}
        self.calls = 0

    # -- batched building blocks ------------------------------------------------------------
    def features_of(self, P: torch.Tensor, C_occ: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Density features (only those the functional declares) of P (…, nao, nao); linear in P.

        ``C_occ`` (nao, nocc), optional, with P = 2 C_occ C_occᵀ: faster orbital path."""
        return build_features(self.setup, P, self.density_names, C_occ=C_occ)

    def contract(self, dE_dfeatures: dict[str, torch.Tensor]) -> torch.Tensor:
        """(∂features/∂P)ᵀ applied to ∂E/∂features (optional leading batch axis) → (…, nao, nao)."""
        return contract_features(self.setup, dE_dfeatures)

    def static_features(self) -> dict[str, torch.Tensor]:
        return dict(self._static)

    # -- checks ---------------------------------------------------------------------------
    def _fail(self, problem: str) -> FunctionalError:
        return FunctionalError(f"functional {self.name!r} on molecule {self.setup.name!r}: {problem}")

    def _check_exc(self, e) -> torch.Tensor:
        if not isinstance(e, torch.Tensor):
            raise self._fail(f"get_exc returned {type(e).__name__}, expected a scalar torch.Tensor")
        if e.dim() != 0:
            raise self._fail(f"get_exc returned shape {tuple(e.shape)}, expected a scalar (shape ())")
        if not e.dtype.is_floating_point:
            raise self._fail(f"get_exc returned dtype {e.dtype}, expected a floating-point scalar")
        if not bool(torch.isfinite(e.detach())):
            raise self._fail(f"get_exc returned a non-finite energy ({float(e.detach())})")
        return e

    def _call(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        try:
            e = self.functional.get_exc(feats)
        except FunctionalError:
            raise
        except Exception as exc:  # a crashing submission is the submission's error
            raise self._fail(f"get_exc raised {type(exc).__name__}: {exc}") from exc
        return self._check_exc(e)

    # -- evaluation -------------------------------------------------------------------------
    def exc(self, P: torch.Tensor, C_occ: torch.Tensor | None = None) -> torch.Tensor:
        """E_xc[P] (detached scalar tensor)."""
        feats = self.features_of(P, C_occ)
        feats.update(self._static)
        with torch.no_grad():
            return self._call(feats).detach()

    def exc_vxc(self, P: torch.Tensor, return_features: bool = False, C_occ: torch.Tensor | None = None):
        """(E_xc, V_xc) at P (nao, nao); with ``return_features`` also the leaf features.

        ``C_occ``: optional occupied orbitals with P = 2 C_occ C_occᵀ (faster features)."""
        t0 = time.perf_counter()
        feats = self.features_of(P, C_occ)
        t1 = time.perf_counter()
        leaves = {n: f.requires_grad_(True) for n, f in feats.items()}
        call = dict(leaves)
        call.update(self._static)
        with torch.enable_grad():
            e = self._call(call)
            if leaves and e.requires_grad:
                try:
                    grads = torch.autograd.grad(e, list(leaves.values()), allow_unused=True)
                except Exception as exc:
                    raise self._fail(f"backward through get_exc failed: {type(exc).__name__}: {exc}") from exc
            else:
                grads = [None] * len(leaves)
        dE = {}
        for (n, f), g in zip(leaves.items(), grads):
            if g is None:
                continue
            if g.dtype != f.dtype:
                g = g.to(f.dtype)
            dE[n] = g
        t2 = time.perf_counter()
        bad = [n for n, g in dE.items() if not bool(torch.isfinite(g).all())]
        if bad:
            raise self._fail(f"the derivative of E_xc with respect to {bad} is not finite")
        if dE:
            V = self.contract(dE)
        else:
            V = torch.zeros(self.setup.nao, self.setup.nao, dtype=self.setup.dtype, device=self.setup.device)
        t3 = time.perf_counter()
        self.timings["features_s"] += t1 - t0
        self.timings["functional_s"] += t2 - t1
        self.timings["contract_s"] += t3 - t2
        self.calls += 1
        e = e.detach().to(self.setup.dtype)
        if return_features:
            return e, V, {n: f.detach() for n, f in leaves.items()}
        return e, V


def exc_vxc(functional, setup: MoleculeSetup, P: torch.Tensor):
    """One-shot (E_xc, V_xc) of ``functional`` at P."""
    return XCEngine(functional, setup).exc_vxc(P)
