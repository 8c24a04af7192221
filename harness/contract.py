"""The functional contract (PROTOCOL §2): grid features in, E_xc (Hartree) out.

Feature names and shapes follow Skala's conventions, so a Skala-style torch module runs
unchanged. G is the number of grid points; index 0/1 of the first axis is spin α/β
(closed shell: each holds half of the total).

=================  ============  =====================================================
name               shape         meaning (atomic units)
=================  ============  =====================================================
``density``        (2, G)        ρ_α, ρ_β
``grad``           (2, 3, G)     ∇ρ_α, ∇ρ_β
``kin``            (2, G)        τ_σ = ½ Σ_i |∇φ_iσ|²
``grid_coords``    (G, 3)        grid points, bohr
``grid_weights``   (G,)          quadrature weights
``atomic_coords``  (natm, 3)     nuclei, bohr
``atomic_numbers`` (natm,)       nuclear charges (int64)
=================  ============  =====================================================

Skala's atom-packed layout (contract v1 extension, the meaning the ``skala`` package's own
PySCF integration gives these names; `ATOM_LAYOUT_FEATURES`):

================================  ==================  ==========================================
name                              shape               meaning
================================  ==================  ==========================================
``atomic_grid_weights``           (G,)                raw per-atom quadrature weights (radial ×
                                                      angular, before the Becke partition)
``atomic_grid_sizes``             (natm,) int64       points of each atom's grid
``atomic_grid_size_bound_shape``  (max size, 0) int64 only its shape counts: the largest atom grid
``coarse_0_atomic_coords``        (natm, 3)           the coarse (atom-centred) points, bohr
================================  ==================  ==========================================

A functional that asks for any of these four receives *every* per-point feature (``density``,
``grad``, ``kin``, ``grid_coords``, ``grid_weights``, ``atomic_grid_weights``) in Skala's
per-atom order: atom 0's points, then atom 1's, …, each atom's points in PySCF's own
(radial-major) order, zero-weight points included, so that Σ ``atomic_grid_sizes`` = G. The
harness keeps its own block layout internally and permutes at the call; gradients flow back
through the permutation (`harness.xc.XCEngine`).

Names may be given as plain strings or as members of Skala's ``Feature`` str-Enum; the dict
the functional receives is keyed by exactly the objects it declared.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from harness.errors import SubmissionFault

#: Features that depend on the density matrix P (and so carry gradients).
DENSITY_FEATURES: tuple[str, ...] = ("density", "grad", "kin")
#: Skala's atom-packed layout: asking for any of these puts every point in per-atom order.
ATOM_LAYOUT_FEATURES: tuple[str, ...] = (
    "atomic_grid_weights", "atomic_grid_sizes", "atomic_grid_size_bound_shape", "coarse_0_atomic_coords",
)
#: Features fixed by the molecule and grid.
STATIC_FEATURES: tuple[str, ...] = (
    "grid_coords", "grid_weights", "atomic_coords", "atomic_numbers",
) + ATOM_LAYOUT_FEATURES
#: Per-point features (last axis G): permuted into per-atom order for atom-layout functionals.
POINT_FEATURES: tuple[str, ...] = DENSITY_FEATURES + ("grid_coords", "grid_weights", "atomic_grid_weights")
#: Every feature the harness can build.
ALL_FEATURES: tuple[str, ...] = DENSITY_FEATURES + STATIC_FEATURES
#: What a functional receives when it declares no ``features``.
STANDARD_FEATURES: tuple[str, ...] = DENSITY_FEATURES + ("grid_coords", "grid_weights", "atomic_coords", "atomic_numbers")


class FunctionalError(SubmissionFault, RuntimeError):
    """A submitted functional misbehaved (raised, NaN/inf, wrong shape or dtype).

    The message names the functional, the molecule and the problem.
    """


@runtime_checkable
class ExcFunctional(Protocol):
    """What the drivers call: a torch-differentiable map from features to a scalar E_xc in Eh."""

    features: list[str]

    def get_exc(self, features: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - protocol
        ...


def feature_name(name) -> str:
    """The plain string of a feature name (a str, or a str-Enum member such as Skala's
    ``Feature.DENSITY``, whose ``str()`` may differ from its value)."""
    value = getattr(name, "value", name)
    return value if isinstance(value, str) else str(value)


def check_feature_names(names, owner: str) -> list:
    """Validate a functional's declared feature names; returns them as declared (strings or
    str-Enum members), so the feature dict can be keyed by the functional's own objects."""
    names = list(names)
    unknown = [feature_name(n) for n in names if feature_name(n) not in ALL_FEATURES]
    if unknown:
        raise FunctionalError(
            f"{owner}: unknown feature(s) {', '.join(unknown)}; the harness provides "
            f"{', '.join(ALL_FEATURES)}"
        )
    return names


def uses_atom_layout(names) -> bool:
    """Whether a functional declaring ``names`` gets Skala's per-atom point order."""
    return any(feature_name(n) in ATOM_LAYOUT_FEATURES for n in names)
