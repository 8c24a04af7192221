"""Adapters that put submitted functionals behind one call: ``get_exc(features) -> E_xc``.

The drivers (SCF, TDDFT, ...) only ever talk to the two classes here:

:class:`TorchFunctional`
    wraps any torch ``nn.Module`` (or duck-typed object) that has ``features`` and
    ``get_exc`` — a Skala-style module runs unchanged, it need not inherit anything from
    the harness.
:class:`JaxFunctional`
    bridges a pure jax function ``exc(params, features) -> scalar`` into torch autograd
    (DLPack zero-copy on CPU), with first *and* second derivatives: torch double backward
    works, so Hessian-vector products ``autograd.grad(autograd.grad(E, x,
    create_graph=True), x, grad_outputs=v)`` go through the bridge — also with a batch of
    v (``is_grads_batched=True`` or ``torch.func.vmap`` over the second ``autograd.grad``:
    one ``jax.vmap``-ed HVP call). Third derivatives are not supported.

Both validate what the functional returns (a finite floating scalar tensor) and turn any
misbehaviour into :class:`~harness.contract.FunctionalError` whose message names the
functional, the molecule and the problem, e.g.::

    functional 'my-net' on molecule 'H2O': returned NaN
    functional 'my-net' on molecule 'H2O': returned shape (2,)
    functional 'my-net' on molecule 'H2O': raised ValueError: bad input

The molecule name is context the *caller* provides, in either of two ways:

* set the attribute once per molecule, ``functional.molecule = "H2O"`` (what the drivers
  do; the call signature ``get_exc(features)`` stays the Skala one), or
* pass it per call, ``functional.get_exc(features, molecule="H2O")`` (overrides the
  attribute for that call).

When neither is given, messages say ``on an unnamed molecule``. :meth:`Functional.on`
is a small context manager doing the attribute dance (restores the old value).

jax is imported lazily (only when a :class:`JaxFunctional` is built), so this module imports
fine without jax installed.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from .contract import STANDARD_FEATURES, FunctionalError, check_feature_names, feature_name
from .errors import SubmissionFault

__all__ = ["BridgedFunctional", "Functional", "TorchFunctional", "JaxFunctional", "as_functional"]


def _describe_molecule(molecule: str | None) -> str:
    return f"molecule {molecule!r}" if molecule else "an unnamed molecule"


class Functional:
    """What the two adapters share: ``name``, ``features``, ``molecule`` and validation."""

    name: str
    features: list[str]
    #: Name of the molecule currently being evaluated (set by the caller; used in errors).
    molecule: str | None = None

    # -- error reporting -------------------------------------------------------------
    def _where(self, molecule: str | None = None) -> str:
        mol = molecule if molecule is not None else self.molecule
        return f"functional {self.name!r} on {_describe_molecule(mol)}"

    def error(self, problem: str, molecule: str | None = None) -> FunctionalError:
        """A :class:`FunctionalError` naming this functional, the molecule and ``problem``."""
        return FunctionalError(f"{self._where(molecule)}: {problem}")

    def _raised(self, exc: BaseException, molecule: str | None = None) -> FunctionalError:
        text = str(exc).strip()
        if len(text) > 2000:
            text = text[:2000] + " ..."
        return self.error(f"raised {type(exc).__name__}: {text}", molecule)

    @contextlib.contextmanager
    def on(self, molecule: str | None) -> Iterator["Functional"]:
        """``with functional.on("H2O"): ...`` — name the molecule for errors inside the block."""
        old = self.molecule
        self.molecule = molecule
        try:
            yield self
        finally:
            self.molecule = old

    # -- validation ------------------------------------------------------------------
    def _validate(self, E: Any, molecule: str | None) -> torch.Tensor:
        """Return ``E`` as a 0-dim tensor, or raise FunctionalError. One sync (isfinite)."""
        if not isinstance(E, torch.Tensor):
            raise self.error(f"returned {type(E).__name__}, expected a scalar torch.Tensor", molecule)
        if E.numel() != 1:
            raise self.error(f"returned shape {tuple(E.shape)}, expected a scalar", molecule)
        if not E.is_floating_point():
            raise self.error(f"returned dtype {E.dtype}, expected a floating dtype", molecule)
        if E.dim() != 0:
            E = E.reshape(())
        if not bool(torch.isfinite(E)):
            value = float(E.detach())
            raise self.error("returned NaN" if value != value else f"returned {value}", molecule)
        return E

    def __call__(self, features: Mapping[str, torch.Tensor], molecule: str | None = None) -> torch.Tensor:
        return self.get_exc(features, molecule=molecule)

    def get_exc(self, features: Mapping[str, torch.Tensor], molecule: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, features={self.features!r})"


# =====================================================================================
# torch
# =====================================================================================


class TorchFunctional(Functional):
    """Wrap a torch module with ``features`` (list of names) and ``get_exc(features)``.

    The module is called exactly as Skala's drivers call it — ``module.get_exc(features)``
    with the harness feature dict — and its result is validated (see module docstring).
    ``to``/``parameters``/``state_dict``/``eval``... pass through to the module.
    """

    def __init__(self, module: Any, name: str | None = None, molecule: str | None = None):
        if isinstance(module, Functional):
            raise TypeError("TorchFunctional: already adapted; use the object as it is")
        get_exc = getattr(module, "get_exc", None)
        if not callable(get_exc):
            raise TypeError(
                f"TorchFunctional: {type(module).__name__} has no callable get_exc(features)"
            )
        self.name = name or getattr(module, "name", None) or type(module).__name__
        if not isinstance(self.name, str):
            self.name = str(self.name)
        if not hasattr(module, "features"):
            raise FunctionalError(
                f"functional {self.name!r}: the module has no 'features' attribute "
                "(a list of the feature names it needs)"
            )
        feats = module.features
        if isinstance(feats, str):
            raise FunctionalError(f"functional {self.name!r}: 'features' must be a list of names, not a string")
        self.features = check_feature_names(feats, f"functional {self.name!r}")
        self.module = module
        self.molecule = molecule

    def get_exc(self, features: Mapping[str, torch.Tensor], molecule: str | None = None) -> torch.Tensor:
        """E_xc (Hartree, 0-dim tensor, differentiable) for one molecule's grid features."""
        try:
            E = self.module.get_exc(features)
        except Exception as exc:
            raise self._raised(exc, molecule) from exc
        return self._validate(E, molecule)

    # -- passthroughs ------------------------------------------------------------------
    def to(self, *args, **kwargs) -> "TorchFunctional":
        """``module.to(device, dtype)``; returns self (the adapter), like ``nn.Module.to``."""
        if hasattr(self.module, "to"):
            out = self.module.to(*args, **kwargs)
            if out is not None and out is not self.module and hasattr(out, "get_exc"):
                self.module = out
        return self

    def parameters(self, recurse: bool = True):
        if hasattr(self.module, "parameters"):
            return self.module.parameters(recurse)
        return iter(())

    def named_parameters(self, *args, **kwargs):
        if hasattr(self.module, "named_parameters"):
            return self.module.named_parameters(*args, **kwargs)
        return iter(())

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict=strict)

    def eval(self) -> "TorchFunctional":
        if hasattr(self.module, "eval"):
            self.module.eval()
        return self

    def train(self, mode: bool = True) -> "TorchFunctional":
        if hasattr(self.module, "train"):
            self.module.train(mode)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "TorchFunctional":
        if hasattr(self.module, "requires_grad_"):
            self.module.requires_grad_(requires_grad)
        return self


# =====================================================================================
# jax
# =====================================================================================

_JAX_LOCK = threading.Lock()
_JAX_READY = False


def _import_jax():
    """Import jax (lazily) and enable float64 once."""
    global _JAX_READY
    try:
        import jax  # noqa: F401
        import jax.numpy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "JaxFunctional needs jax; install it with `pip install 'jax[cpu]'` "
            "(or the project's [jax] extra)"
        ) from exc
    with _JAX_LOCK:
        if not _JAX_READY:
            jax.config.update("jax_enable_x64", True)
            _JAX_READY = True
    return jax


class _Bridge:
    """Moves arrays between torch and jax: DLPack when it works, numpy copies otherwise.

    DLPack is zero-copy on CPU in both directions. If an export/import fails (an odd dtype,
    a torch device jax cannot see) the bridge falls back to a numpy copy and warns once.
    """

    def __init__(self, owner: "JaxFunctional"):
        self.owner = owner
        self.fallbacks: set[str] = set()

    def _fallback(self, what: str, exc: BaseException) -> None:
        if what not in self.fallbacks:
            self.fallbacks.add(what)
            warnings.warn(
                f"JaxFunctional {self.owner.name!r}: DLPack {what} failed ({type(exc).__name__}: {exc}); "
                "falling back to numpy copies",
                RuntimeWarning,
                stacklevel=4,
            )

    def to_jax(self, t: torch.Tensor):
        jax = self.owner._jax
        t = t.detach()
        if t.is_conj() or t.is_neg():  # lazy complex views cannot be exported
            t = t.resolve_conj().resolve_neg()
        try:
            if t.device.type != "cpu":
                raise RuntimeError(f"torch tensor on {t.device}; jax runs on {jax.default_backend()}")
            return jax.dlpack.from_dlpack(t.contiguous())
        except Exception as exc:
            self._fallback(f"torch->jax ({t.dtype}, {t.device})", exc)
            return jax.numpy.asarray(t.cpu().numpy())

    def to_torch(self, a, like: torch.Tensor | None = None) -> torch.Tensor:
        try:
            t = torch.utils.dlpack.from_dlpack(a)
        except Exception as exc:
            import numpy as np

            self._fallback(f"jax->torch ({a.dtype})", exc)
            t = torch.from_numpy(np.array(a))
        if like is not None and (t.dtype != like.dtype or t.device != like.device):
            t = t.to(device=like.device, dtype=like.dtype)
        return t


class _BridgeExc(torch.autograd.Function):
    """E = fn(features) for a bridged functional (`BridgedFunctional`: jax, or a functional in
    another process). Forward also computes dE/dx (one call).

    Inputs: (fn, diff_names, rest, *diff_tensors) where ``rest`` maps the other feature
    names to torch tensors (not differentiated: int features, tensors without grad).
    backward returns ``gE * dE/dx``; under ``create_graph=True`` dE/dx comes from
    :class:`_BridgeGrad`, whose own backward is the functional's Hessian-vector product — so
    torch double backward works.
    """

    @staticmethod
    def forward(ctx, fn: "BridgedFunctional", diff_names: tuple, rest: dict, *diff_tensors):
        E, grads = fn._value_and_grad(diff_names, diff_tensors, rest)
        ctx.fn = fn
        ctx.diff_names = diff_names
        ctx.rest_names = tuple(rest)
        ctx.point = fn._last_point
        ctx.grads = grads
        # saved (not just referenced) so that torch flags in-place edits before backward
        ctx.save_for_backward(*diff_tensors, *rest.values())
        return E

    @staticmethod
    def backward(ctx, gE):
        fn = ctx.fn
        saved = ctx.saved_tensors
        n = len(ctx.diff_names)
        xs, rest = saved[:n], dict(zip(ctx.rest_names, saved[n:]))
        if torch.is_grad_enabled():
            G = _BridgeGrad.apply(fn, ctx.diff_names, rest, ctx.grads, ctx.point, *xs)
        else:
            G = ctx.grads
        return (None, None, None) + tuple(gE * g for g in G)


class _BridgeGrad(torch.autograd.Function):
    """dE/dx as a differentiable torch op: forward hands over the gradient computed with E;
    backward is the functional's Hessian-vector product H·v (jax: forward-over-reverse)."""

    @staticmethod
    def forward(ctx, fn: "BridgedFunctional", diff_names: tuple, rest: dict, grads: tuple, point, *diff_tensors):
        ctx.fn = fn
        ctx.diff_names = diff_names
        ctx.rest_names = tuple(rest)
        ctx.point = point
        ctx.save_for_backward(*diff_tensors, *rest.values())
        return tuple(g.clone() for g in grads)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *vs):
        fn = ctx.fn
        saved = ctx.saved_tensors
        n = len(ctx.diff_names)
        xs, rest = saved[:n], dict(zip(ctx.rest_names, saved[n:]))
        kinds = {_batch_kind(v) for v in vs} - {None}
        if kinds:
            kind = "legacy" if "legacy" in kinds else "functorch"
            return (None,) * 5 + _batched_hvp(fn, ctx.diff_names, xs, rest, vs, kind, ctx.point)
        vs = tuple(torch.zeros_like(x) if v is None else v for v, x in zip(vs, xs))
        hv = fn._hvp(ctx.diff_names, xs, rest, vs, point=ctx.point)
        return (None,) * 5 + hv


def _batch_kind(t) -> str | None:
    """'legacy' (torch.autograd.grad(is_grads_batched=True)), 'functorch' (torch.func.vmap)
    or None for a plain tensor."""
    if t is None:
        return None
    F = getattr(torch._C, "_functorch", None)
    try:
        if F is not None and F.is_legacy_batchedtensor(t):
            return "legacy"
        if F is not None and F.is_batchedtensor(t):
            return "functorch"
    except Exception:  # pragma: no cover - torch without these helpers
        return None
    return None


def _batched_hvp(fn: "BridgedFunctional", names, xs, rest, vs, kind: str, point=None):
    """HVPs for batched cotangents: ``torch.autograd.grad(..., is_grads_batched=True)``
    (torch's legacy vmap) or ``torch.func.vmap`` over the second ``autograd.grad``.

    The cotangents arrive as batched tensors that cannot cross DLPack. Unwrap them to
    (B, ...) physical tensors, run one ``jax.vmap``-ed HVP, and wrap the results back at the
    same vmap level. Uses torch internals (``_remove_batch_dim``/``_add_batch_dim`` and
    their functorch counterparts); a clear FunctionalError if those change. One vmap level
    only (nested vmaps are refused).
    """
    F = torch._C._functorch
    try:
        phys: dict[int, torch.Tensor] = {}
        if kind == "legacy":
            level = torch._C._vmapmode_increment_nesting()
            torch._C._vmapmode_decrement_nesting()
            level -= 1  # the level the engine is running under
            for i, v in enumerate(vs):
                if _batch_kind(v) == "legacy":
                    phys[i] = torch._remove_batch_dim(v, level, 1, 0)
        else:
            levels = {F.maybe_get_level(v) for v in vs if _batch_kind(v) == "functorch"}
            if len(levels) != 1:
                raise RuntimeError(f"cotangents batched at several vmap levels {sorted(levels)}")
            (level,) = levels
            for i, v in enumerate(vs):
                if _batch_kind(v) == "functorch":
                    phys[i] = F.get_unwrapped(v).movedim(F.maybe_get_bdim(v), 0)
        if any(_batch_kind(p) is not None for p in phys.values()):
            raise RuntimeError("nested vmap levels are not supported")
        B = next(iter(phys.values())).shape[0]
        V = []
        for i, (v, x) in enumerate(zip(vs, xs)):
            if i in phys:
                V.append(phys[i])
            elif v is None:
                V.append(torch.zeros((B,) + tuple(x.shape), dtype=x.dtype, device=x.device))
            else:
                V.append(v.unsqueeze(0).expand((B,) + tuple(v.shape)))
    except SubmissionFault:
        raise
    except Exception as exc:
        raise fn.error(
            f"batched grad_outputs ({kind} vmap) could not be unwrapped for the bridge "
            f"({type(exc).__name__}: {exc}); loop over the vectors instead"
        ) from exc
    hv = fn._hvp(names, xs, rest, tuple(V), batched=True, point=point)
    if kind == "legacy":
        return tuple(torch._add_batch_dim(h, 0, level) for h in hv)
    return tuple(F._add_batch_dim(h, 0, level) for h in hv)


# -- padding to bucket sizes (one compilation serves many molecules) -----------------------

#: per-point features and per-atom features, and the value a padding entry gets: a padded
#: point repeats the density features of the first real point (so the functional is finite
#: there), carries zero weight and sits far from every atom; a padded atom has Z = 0 and sits
#: far from every point. None: a copy of the first real point.
PAD_POINT_VALUES = {"density": None, "grad": None, "kin": None, "grid_coords": 1.0e4, "grid_weights": 0.0}
PAD_ATOM_VALUES = {"atomic_coords": -1.0e4, "atomic_numbers": 0, "coarse_0_atomic_coords": -1.0e4}
#: smallest point bucket; successive buckets grow by PAD_RATIO (rounded up to 64 points): at most
#: 12.5 % of padded work, about 6 % on average, against one compilation per molecule
PAD_MIN_POINTS = 2048
PAD_RATIO = 1.125
#: atoms are padded to a multiple of this: 1 (off), since a non-local model's cost grows with
#: points × atoms and one more atom costs 1/natm of every call (measured for Skala-1.0, whose
#: compilation costs about as much as 2–3 calls)
PAD_ATOMS = 1
#: batched Hessian-vector products run in chunks of these sizes (each compiled once per bucket);
#: at most 4, as memory grows with the chunk (Skala-1.0, ethanol: 23.2 GB peak RSS with chunks of
#: 8) while the time per vector gains little beyond 4 (H2O: 4.5, 3.6, 3.1 s for 1, 4, 8 vectors)
HVP_CHUNKS = (4, 2, 1)


def point_bucket(G: int) -> int:
    """The padded size of a grid of G points: the first of 2048, 2304, 2624, 3008, … (×1.125,
    rounded up to 64) that holds it."""
    b = PAD_MIN_POINTS
    while b < G:
        b = -(-int(b * PAD_RATIO) // 64) * 64
    return b


def atom_bucket(natm: int) -> int:
    return -(-natm // PAD_ATOMS) * PAD_ATOMS


def hvp_chunks(n: int) -> list[int]:
    """n split into chunk sizes of `HVP_CHUNKS` (greedy): 11 → [4, 4, 2, 1]."""
    out = []
    for c in HVP_CHUNKS:
        while n >= c:
            out.append(c)
            n -= c
    return out


def _pad_last(t: torch.Tensor, size: int, value) -> torch.Tensor:
    extra = size - t.shape[-1]
    if extra <= 0:
        return t
    if value is None:
        fill = t[..., :1].expand(tuple(t.shape[:-1]) + (extra,))
    else:
        fill = torch.full(tuple(t.shape[:-1]) + (extra,), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, fill], dim=-1)


def _pad_first(t: torch.Tensor, size: int, value) -> torch.Tensor:
    extra = size - t.shape[0]
    if extra <= 0:
        return t
    fill = torch.full((extra,) + tuple(t.shape[1:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, fill], dim=0)


class BridgedFunctional(Functional):
    """A functional computed outside torch autograd — in jax (`JaxFunctional`) or in another
    process (`harness.remote.RemoteFunctional`) — joined to the graph by `_BridgeExc`.

    A subclass implements, on torch tensors in feature space:

    * ``_value_and_grad(names, tensors, rest) -> (E 0-dim tensor, tuple of dE/dx)`` for the
      differentiable features ``names``/``tensors`` and the others ``rest``;
    * ``_hvp(names, tensors, rest, vs, batched=False, point=None) -> tuple of H·v`` (each v
      with a leading batch axis when ``batched``); ``point`` is the value of ``_last_point``
      when the primal was evaluated (a subclass may use it to reuse work at that point).

    ``batched_hvp``: whether a batch of products in one call is the fast path
    (`harness.xc.default_batched`).
    """

    batched_hvp = True
    _last_point: int = 0

    def _value_and_grad(self, names, tensors, rest):  # pragma: no cover - abstract
        raise NotImplementedError

    def _hvp(self, names, tensors, rest, vs, batched: bool = False, point=None):  # pragma: no cover
        raise NotImplementedError

    def get_exc(self, features: Mapping[str, torch.Tensor], molecule: str | None = None) -> torch.Tensor:
        """E_xc (Hartree, 0-dim torch tensor); differentiable twice w.r.t. the float features."""
        missing = [n for n in self.features if n not in features]
        if missing:
            raise self.error(f"missing feature(s) {missing} in the input", molecule)
        grad_on = torch.is_grad_enabled()
        diff_names, diff_tensors, rest = [], [], {}
        for n in self.features:
            t = features[n]
            if not isinstance(t, torch.Tensor):
                raise self.error(f"feature {n!r} is {type(t).__name__}, expected a torch.Tensor", molecule)
            if grad_on and t.requires_grad and t.is_floating_point():
                diff_names.append(n)
                diff_tensors.append(t)
            else:
                rest[n] = t.detach()
        old = self.molecule
        if molecule is not None:
            self.molecule = molecule
        try:
            self._last_point += 1
            E = _BridgeExc.apply(self, tuple(diff_names), rest, *diff_tensors)
        finally:
            self.molecule = old
        return self._validate(E, molecule)


class JaxFunctional(BridgedFunctional):
    """Bridge a pure jax ``exc(params, features) -> scalar`` into torch autograd.

    Parameters
    ----------
    exc:
        pure function of ``(params, features)``; ``features`` is a dict of jax arrays
        keyed by the names in :attr:`features`. Must be jax-traceable (it is jit-compiled).
    params:
        a pytree of arrays/numbers, passed to every call as a (traced) jit argument; not
        trained through the bridge (``parameters()`` is empty).
    features:
        the feature names the function needs; ``None`` means the standard set
        (:data:`~harness.contract.STANDARD_FEATURES`).
    name:
        used in error messages and results.

    ``get_exc(features)`` returns a 0-dim torch tensor connected to the floating-point
    feature tensors that require grad. The forward pass computes E and dE/dx in one jitted
    ``jax.value_and_grad`` call; backward scales the stored gradient; double backward calls
    a jitted forward-over-reverse HVP. Tensor shapes (grid size G, number of atoms) are part
    of the jit cache key, so each new shape compiles once. :attr:`n_traces` counts traces.

    ``pad`` (default True): the inputs are padded to bucket sizes (`point_bucket`,
    `atom_bucket`) with inert entries (`PAD_POINT_VALUES`, `PAD_ATOM_VALUES`: zero weight,
    vanishing density, far away; Z = 0), so molecules of similar size share one compilation;
    derivatives are cut back to the real points. Functionals using Skala's packed per-atom
    grids (``atomic_grid_sizes`` and kin) are never padded: their sizes must sum to G. A batched
    Hessian-vector product runs in chunks of `HVP_CHUNKS` vectors, so Davidson's varying
    batch sizes reuse a few compilations.
    """

    def __init__(
        self,
        exc: Callable,
        params: Any = None,
        features: Sequence[str] | None = None,
        name: str = "jax-functional",
        molecule: str | None = None,
        pad: bool = True,
    ):
        if not callable(exc):
            raise TypeError(f"JaxFunctional {name!r}: exc must be callable, got {type(exc).__name__}")
        self.name = str(name)
        if isinstance(features, str):
            raise FunctionalError(f"functional {self.name!r}: features must be a list of names, not a string")
        self.features = check_feature_names(
            STANDARD_FEATURES if features is None else features, f"functional {self.name!r}"
        )
        self.exc = exc
        self.params = params
        self.molecule = molecule
        self._names = {feature_name(n) for n in self.features}
        # Skala's packed per-atom grids (sizes that must sum to G) cannot take extra points
        self.pad = bool(pad) and not (self._names & {"atomic_grid_weights", "atomic_grid_sizes",
                                                     "atomic_grid_size_bound_shape"})
        self._jax = _import_jax()
        self._bridge = _Bridge(self)
        #: number of times the jax function has been traced (jit cache misses)
        self.n_traces = 0
        self._build()

    def _build(self) -> None:
        jax = self._jax
        exc = self.exc

        def energy(params, diff, rest):
            self.n_traces += 1  # runs at trace time only
            return exc(params, {**rest, **diff})

        grad_fn = jax.grad(energy, argnums=1)

        def hvp(params, diff, rest, v):
            return jax.jvp(lambda d: grad_fn(params, d, rest), (diff,), (v,))[1]

        self._value_and_grad_jit = jax.jit(jax.value_and_grad(energy, argnums=1))
        self._value_jit = jax.jit(energy)
        self._hvp_jit = jax.jit(hvp)
        self._hvp_batched_jit = jax.jit(jax.vmap(hvp, in_axes=(None, None, None, 0)))

    # -- jax calls (torch tensors in, torch tensors out) ---------------------------------
    def _padded(self, name: str, t: torch.Tensor, G: int | None, natm: int | None,
                tangent: bool = False) -> torch.Tensor:
        """``t`` padded to the bucket sizes; a tangent (HVP direction) is padded with zeros."""
        if not self.pad:
            return t
        key = feature_name(name)
        if tangent:
            return _pad_last(t, point_bucket(G), 0.0) if key in PAD_POINT_VALUES and G is not None else t
        if key == "grid_coords" and G is not None:  # (G, 3): the point axis is the first
            return _pad_first(t, point_bucket(G), PAD_POINT_VALUES[key])
        if key in PAD_POINT_VALUES and G is not None:
            return _pad_last(t, point_bucket(G), PAD_POINT_VALUES[key])
        if key in PAD_ATOM_VALUES and natm is not None:
            return _pad_first(t, atom_bucket(natm), PAD_ATOM_VALUES[key])
        return t

    def _sizes(self, names, tensors, rest) -> tuple[int | None, int | None]:
        """(G, natm) of one call's inputs, from the features that carry them."""
        G = natm = None
        for n, t in list(zip(names, tensors)) + list(rest.items()):
            key = feature_name(n)
            if key == "grid_weights" or (G is None and key in ("density", "kin")):
                G = int(t.shape[-1])
            elif G is None and key == "grid_coords":
                G = int(t.shape[0])
            elif key in PAD_ATOM_VALUES:
                natm = int(t.shape[0])
        return G, natm

    def _jax_inputs(self, names, tensors, rest):
        b = self._bridge
        G, natm = self._sizes(names, tensors, rest)
        diff = {n: b.to_jax(self._padded(n, t, G, natm)) for n, t in zip(names, tensors)}
        rest_j = {n: b.to_jax(self._padded(n, t, G, natm)) for n, t in rest.items()}
        return diff, rest_j


    def _value_and_grad(self, names, tensors, rest):
        """(E torch 0-dim, tuple of torch gradients in ``names`` order; zero-copy from jax)."""
        diff, rest_j = self._jax_inputs(names, tensors, rest)
        like = tensors[0] if tensors else None
        try:
            if names:
                E, g = self._value_and_grad_jit(self.params, diff, rest_j)
                grads = tuple(g[n] if g[n].shape == tuple(x.shape) else g[n][..., :x.shape[-1]]
                              for n, x in zip(names, tensors))
                E = self._jax.block_until_ready(E)
            else:
                E = self._jax.block_until_ready(self._value_jit(self.params, diff, rest_j))
                grads = ()
        except SubmissionFault:
            raise
        except Exception as exc:
            raise self._raised(exc) from exc
        E_t = self._bridge.to_torch(E)
        if like is not None:
            E_t = E_t.to(device=like.device) if E_t.device != like.device else E_t
        return E_t, tuple(self._bridge.to_torch(g, like=x) for g, x in zip(grads, tensors))

    def _hvp(self, names, tensors, rest, vs, batched: bool = False, point=None):
        """H·v per differentiable feature; with ``batched`` each v has a leading batch axis
        (run in chunks of `HVP_CHUNKS` vectors)."""
        diff, rest_j = self._jax_inputs(names, tensors, rest)
        G, natm = self._sizes(names, tensors, rest)
        jnp = self._jax.numpy

        def tangents(lo=None, hi=None):
            out = {}
            for n, t, x in zip(names, vs, tensors):
                t = t.to(dtype=x.dtype)
                if lo is not None:
                    t = t[lo:hi]
                out[n] = self._bridge.to_jax(self._padded(n, t.contiguous(), G, natm, tangent=True))
            return out

        try:
            if not batched:
                hv = self._jax.block_until_ready(self._hvp_jit(self.params, diff, rest_j, tangents()))
            else:
                parts, lo = [], 0
                for c in hvp_chunks(int(vs[0].shape[0])):
                    parts.append(self._hvp_batched_jit(self.params, diff, rest_j, tangents(lo, lo + c)))
                    lo += c
                hv = {n: jnp.concatenate([p[n] for p in parts], axis=0) if len(parts) > 1 else parts[0][n]
                      for n in names}
                hv = self._jax.block_until_ready(hv)
        except SubmissionFault:
            raise
        except Exception as exc:
            raise self._raised(exc) from exc
        out = []
        for n, x in zip(names, tensors):
            h = hv[n]
            if self.pad and h.shape[-1] != x.shape[-1]:
                h = h[..., :x.shape[-1]]
            out.append(self._bridge.to_torch(h, like=x))
        return tuple(out)

    # -- public ----------------------------------------------------------------------------
    def to(self, *args, **kwargs) -> "JaxFunctional":
        """No-op (jax computes on its own device in the dtype of the inputs); returns self."""
        return self

    def parameters(self, recurse: bool = True):
        """jax params are not torch parameters: empty."""
        return iter(())

    def named_parameters(self, *args, **kwargs):
        return iter(())

    def eval(self) -> "JaxFunctional":
        return self

    def train(self, mode: bool = True) -> "JaxFunctional":
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "JaxFunctional":
        return self

    @property
    def transfer_mode(self) -> str:
        """'dlpack' while every transfer went zero-copy, else 'numpy-fallback (...)'."""
        if not self._bridge.fallbacks:
            return "dlpack"
        return "numpy-fallback (" + "; ".join(sorted(self._bridge.fallbacks)) + ")"


# =====================================================================================


def as_functional(obj: Any, name: str | None = None) -> TorchFunctional | JaxFunctional:
    """Adapt ``obj``: a torch module (``features`` + ``get_exc``) -> :class:`TorchFunctional`;
    an ``(exc, params)`` pair of a jax function and its params -> :class:`JaxFunctional`
    (standard features); an adapter -> itself (renamed if ``name`` is given)."""
    if isinstance(obj, Functional):
        if name is not None:
            obj.name = name
        return obj
    if callable(getattr(obj, "get_exc", None)):
        return TorchFunctional(obj, name=name)
    if isinstance(obj, tuple) and len(obj) == 2 and callable(obj[0]):
        exc, params = obj
        return JaxFunctional(exc, params, name=name or getattr(exc, "__name__", "jax-functional"))
    raise TypeError(
        f"as_functional: cannot adapt {type(obj).__name__}; expected a torch module with "
        "'features' and 'get_exc(features)', or an (exc, params) tuple of a jax function "
        "exc(params, features) -> scalar and its params"
    )
