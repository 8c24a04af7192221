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
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

#: Features that depend on the density matrix P (and so carry gradients).
DENSITY_FEATURES: tuple[str, ...] = ("density", "grad", "kin")
#: Features fixed by the molecule and grid.
STATIC_FEATURES: tuple[str, ...] = ("grid_coords", "grid_weights", "atomic_coords", "atomic_numbers")
#: Every feature the harness can build.
ALL_FEATURES: tuple[str, ...] = DENSITY_FEATURES + STATIC_FEATURES
#: What a functional receives when it declares no ``features``.
STANDARD_FEATURES: tuple[str, ...] = ALL_FEATURES


class FunctionalError(RuntimeError):
    """A submitted functional misbehaved (raised, NaN/inf, wrong shape or dtype).

    The message names the functional, the molecule and the problem.
    """


@runtime_checkable
class ExcFunctional(Protocol):
    """What the drivers call: a torch-differentiable map from features to a scalar E_xc in Eh."""

    features: list[str]

    def get_exc(self, features: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - protocol
        ...


def check_feature_names(names, owner: str) -> list[str]:
    """Validate a functional's declared feature names."""
    names = list(names)
    unknown = [n for n in names if n not in ALL_FEATURES]
    if unknown:
        raise FunctionalError(
            f"{owner}: unknown feature(s) {unknown}; the harness provides {list(ALL_FEATURES)}"
        )
    return names
