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
gradients (finite, and present: an E_xc with no gradient is refused as ``no gradient``, never
scored with V_xc = 0); a violation raises `harness.contract.FunctionalError` naming the
functional, the molecule and the problem.

For response work, `XCEngine.features_of` and `XCEngine.contract` accept a leading batch
axis (perturbations dP of shape (n, nao, nao) → features (n, 2, G), …; ∂E/∂features with a
leading n → (n, nao, nao)).

Feature layout. The engine always works in the setup's internal block order. A functional
that asks for Skala's atom-packed features (`harness.contract.ATOM_LAYOUT_FEATURES`) is
handed every per-point feature permuted into per-atom order (``setup.atom_order``) inside
the autograd graph, so ∂E/∂features comes back in the internal order by itself.

Second derivatives (`XCHessian`). At a fixed P0 one ``get_exc`` graph is built with
``create_graph=True``; `XCHessian.hvp` then gives H_f·δf for a *batch* of n feature tangents
(`hessian_vector_products`, also called by the DI-Loss terms of `harness.grassmann`). The
batching policy lives here (`default_batched`): a jax functional gets the whole batch in one
``jax.vmap``-ed forward-over-reverse pass (the primal is shared); a torch functional gets one
``is_grads_batched`` backward off the CPU and a loop on the CPU, where that measured faster.
"""

from __future__ import annotations

import time

import torch

from harness.contract import (
    DENSITY_FEATURES,
    POINT_FEATURES,
    STANDARD_FEATURES,
    STATIC_FEATURES,
    FunctionalError,
    check_feature_names,
    feature_name,
    uses_atom_layout,
)
from harness.errors import SubmissionFault
from harness.features import build_features, contract_features
from harness.integrals import MoleculeSetup


#: The problem reported for a functional whose E_xc does not depend on its density features
#: (a detached torch output, a jax ``stop_gradient``): V_xc would silently be zero.
NO_GRADIENT = ("no gradient: E_xc does not depend on the density features (dE_xc/dfeatures is missing or "
               "identically zero; a detached output or stop_gradient?), so V_xc would be zero")


def functional_name(functional) -> str:
    """A functional's display name: its ``name`` attribute, else its class name."""
    name = getattr(functional, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(functional).__name__


def declared_features(functional) -> list:
    """The features a functional asks for, as declared (``STANDARD_FEATURES`` when it declares
    none); `harness.contract.feature_name` gives their plain names."""
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
        declared = declared_features(functional)
        #: plain name -> the key object the functional declared (str or a str-Enum member)
        self.keys = {feature_name(n): n for n in declared}
        self.feature_names = list(self.keys)
        self.density_names = [n for n in self.feature_names if n in DENSITY_FEATURES]
        self.static_names = [n for n in self.feature_names if n in STATIC_FEATURES]
        if any(n in ("grad", "kin") for n in self.density_names) and setup.ao_deriv < 1:
            raise FunctionalError(
                f"{self.name} on {setup.name}: needs {self.density_names} but the setup was built "
                "without AO derivatives"
            )
        self.atom_layout = uses_atom_layout(declared)
        if self.atom_layout and not setup.has_atom_layout:
            raise ValueError(
                f"{self.name} on {setup.name}: the functional asks for Skala's atom-packed features but the "
                "setup was built without them (build_setup(..., atom_layout=True); harness.scf.needs_of does this)"
            )
        self._perm = setup.atom_order if self.atom_layout else None
        static = setup.static_features()
        self._static = {}
        for n in self.static_names:
            t = static[n]
            if self._perm is not None and n in POINT_FEATURES:
                t = t.index_select(0, self._perm)
            self._static[self.keys[n]] = t
        self.timings: dict[str, float] = {"features_s": 0.0, "functional_s": 0.0, "contract_s": 0.0}
        self.calls = 0

    # -- what the functional sees ----------------------------------------------------------
    def inputs(self, density: dict[str, torch.Tensor]) -> dict:
        """The functional's input dict: the density features ``density`` (internal order, any
        leading batch axis) permuted into per-atom order when the functional uses that layout
        (inside the autograd graph), plus the static features; keyed by the declared objects."""
        out = dict(self._static)
        for n, t in density.items():
            if self._perm is not None:
                t = t.index_select(-1, self._perm)
            out[self.keys[n]] = t
        return out

    def energy(self, density: dict[str, torch.Tensor]) -> torch.Tensor:
        """E_xc of the density features ``density`` (internal order), through the validated call;
        differentiable when they require grad."""
        return self._call(self.inputs(density))

    # -- batched building blocks ------------------------------------------------------------
    def features_of(self, P: torch.Tensor, C_occ: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Density features (only those the functional declares) of P (…, nao, nao); linear in P.

        ``C_occ`` (nao, nocc), optional, with P = 2 C_occ C_occᵀ: faster orbital path."""
        return build_features(self.setup, P, self.density_names, C_occ=C_occ)

    def contract(self, dE_dfeatures: dict[str, torch.Tensor]) -> torch.Tensor:
        """(∂features/∂P)ᵀ applied to ∂E/∂features (optional leading batch axis) → (…, nao, nao)."""
        return contract_features(self.setup, dE_dfeatures)

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
        except SubmissionFault:
            raise
        except Exception as exc:  # a crashing submission is the submission's error
            raise self._fail(f"get_exc raised {type(exc).__name__}: {exc}") from exc
        return self._check_exc(e)

    # -- evaluation -------------------------------------------------------------------------
    def exc(self, P: torch.Tensor, C_occ: torch.Tensor | None = None) -> torch.Tensor:
        """E_xc[P] (detached scalar tensor)."""
        feats = self.features_of(P, C_occ)
        with torch.no_grad():
            return self.energy(feats).detach()

    def exc_vxc(self, P: torch.Tensor, return_features: bool = False, C_occ: torch.Tensor | None = None):
        """(E_xc, V_xc) at P (nao, nao); with ``return_features`` also the leaf features.

        ``C_occ``: optional occupied orbitals with P = 2 C_occ C_occᵀ (faster features)."""
        t0 = time.perf_counter()
        feats = self.features_of(P, C_occ)
        t1 = time.perf_counter()
        leaves = {n: f.requires_grad_(True) for n, f in feats.items()}
        with torch.enable_grad():
            e = self.energy(leaves)
            if leaves and not e.requires_grad:
                raise self._fail(NO_GRADIENT)
            if leaves:
                try:
                    grads = torch.autograd.grad(e, list(leaves.values()), allow_unused=True)
                except Exception as exc:
                    raise self._fail(f"backward through get_exc failed: {type(exc).__name__}: {exc}") from exc
            else:
                grads = []
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
        if leaves and not any(bool(g.ne(0).any()) for g in dE.values()):
            raise self._fail(NO_GRADIENT)
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


def default_batched(functional, setup: MoleculeSetup) -> bool:
    """The batching policy for Hessian-vector products: batched for a jax functional (one
    ``jax.vmap``-ed call shares the primal work) and off the CPU; a loop for torch on the
    CPU, where torch's vmap over a double backward measured slower (docs/performance.md).
    A functional says which it prefers with ``batched_hvp`` (jax and remote functionals do)."""
    return bool(getattr(functional, "batched_hvp", False)) or setup.device.type != "cpu"


def hessian_vector_products(grads, leaves, tangents, n: int, batched: bool, create_graph: bool = False):
    """Σ_j (∂²E/∂x_i∂x_j) t_j for a batch of n tangents, given first derivatives ``grads``
    (built with ``create_graph=True``) of E with respect to ``leaves``; ``tangents`` pairs
    with ``grads``, each with a leading axis n. Returns (list over leaves of (n, …) or None,
    whether the batched pass was used). A batched pass that fails (a functional torch cannot
    vmap through) falls back to the loop."""
    if batched and n > 1:
        try:
            out = torch.autograd.grad(grads, leaves, grad_outputs=tangents, retain_graph=True,
                                      create_graph=create_graph, allow_unused=True, is_grads_batched=True)
            return list(out), True
        except SubmissionFault:
            raise
        except Exception:
            pass
    per = [torch.autograd.grad(grads, leaves, grad_outputs=[t[k] for t in tangents], retain_graph=True,
                               create_graph=create_graph, allow_unused=True) for k in range(n)]
    out = [None if per[0][j] is None else torch.stack([p[j] for p in per]) for j in range(len(leaves))]
    return out, False


class XCHessian:
    """Hessian-vector products of E_xc at a fixed ground-state density P0 (one graph, reused).

    ``names``/``leaves``: the density features at P0 (internal order) as leaf tensors;
    ``active``: indices of the leaves E_xc is non-linear in (``grads`` pairs with them).
    """

    def __init__(self, functional, setup: MoleculeSetup, P0: torch.Tensor, batched: bool | None = None,
                 engine: XCEngine | None = None):
        self.engine = engine or XCEngine(functional, setup)
        self.batched = default_batched(functional, setup) if batched is None else bool(batched)
        feats = self.engine.features_of(P0)
        self.names = list(feats.keys())
        self.leaves = [feats[n].detach().clone().requires_grad_(True) for n in self.names]
        with torch.enable_grad():
            e = self.engine.energy(dict(zip(self.names, self.leaves)))
            if self.leaves and e.requires_grad:
                grads = torch.autograd.grad(e, self.leaves, create_graph=True, allow_unused=True)
            else:
                grads = [None] * len(self.leaves)
        # a feature E_xc does not depend on (or only linearly) has no second derivative
        self.active = [j for j, g in enumerate(grads) if g is not None and g.requires_grad]
        self.grads = [grads[j] for j in self.active]
        self.hvp_s = 0.0
        self.products = 0
        self.batched_calls = 0

    def hvp(self, tangents: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """H·t for tangents paired with ``active`` (each (n, …)); one entry per leaf (or None)."""
        n = tangents[0].shape[0]
        t0 = time.perf_counter()
        with torch.enable_grad():
            out, used = hessian_vector_products(self.grads, self.leaves, tangents, n, self.batched)
        if self.batched and not used and n > 1:
            self.batched = False  # not vmap-able: loop from now on
        self.batched_calls += int(used)
        self.products += n
        self.hvp_s += time.perf_counter() - t0
        out = [None if o is None else o.detach() for o in out]
        bad = [self.names[j] for j, o in enumerate(out) if o is not None and not bool(torch.isfinite(o).all())]
        if bad:
            raise self.engine._fail(f"the second derivative (Hessian-vector product) of E_xc with respect to "
                                    f"{bad} is not finite")
        return out

    def apply(self, dP: torch.Tensor) -> torch.Tensor:
        """K_xc[dP] = contract(H_f · f(dP)) for dP (n, nao, nao) → (n, nao, nao)."""
        if not self.grads:
            return torch.zeros_like(dP)
        df = self.engine.features_of(dP)  # each (n, ...)
        out = self.hvp([df[self.names[j]] for j in self.active])
        dE = {nm: o for nm, o in zip(self.names, out) if o is not None}
        if not dE:
            return torch.zeros_like(dP)
        return self.engine.contract(dE)


def exc_vxc(functional, setup: MoleculeSetup, P: torch.Tensor):
    """One-shot (E_xc, V_xc) of ``functional`` at P."""
    return XCEngine(functional, setup).exc_vxc(P)
