"""The four baseline ML exchange-correlation architectures of PROTOCOL §5, as torch modules
in the functional contract (``features`` + ``get_exc(features) -> E_xc`` in Hartree).

============  ==========  =========================================================  ======  =======
name          class       idea (paper)                                               quick   full
============  ==========  =========================================================  ======  =======
``xcdiff``    XCDiff      constrained neural meta-GGA, separate F_x / F_c networks      740    9,092
                          (Dick & Fernández-Serra, PRB 104, L161109, 2021); base PBE
``nagai``     Nagai       MLP meta-GGA enhancing the LDA energy density                 745   20,801
                          (Nagai, Akashi & Sugino, npj Comput. Mater. 6, 43, 2020);
                          base TPSS
``nlmp``      NLMP        semi-local MLP + non-local message passing through          1,373   29,177
                          atom-centred points, in the spirit of Skala (Luise et al.,
                          2025) but not Skala; base PBE
``egxc``      EGXC        semi-local base × equivariant nuclei-centred density graph  1,977   39,921
                          (Gao, Eberhard & Günnemann, ICLR 2025); base PBE
============  ==========  =========================================================  ======  =======

Every model is float64, device-agnostic, finite (with finite first and second derivatives)
at vanishing density, twice differentiable with respect to the density features and once
more with respect to its parameters, and starts **exactly at its physical base functional**
(zero-initialised last layers): the SCF energy at step 0 is that of the base.

``build_architecture(name, preset="quick", seed=0, **overrides)`` builds one (the global
torch RNG is left untouched); ``overrides`` replace constructor arguments of the preset
(e.g. ``base="pbe"``).
"""

from __future__ import annotations

from torch import nn

from ._common import count_parameters, seeded
from .egxc import EGXC
from .nagai import Nagai
from .nlmp import NLMP
from .xcdiff import XCDiff

#: name -> class
ARCHITECTURES: dict[str, type] = {"xcdiff": XCDiff, "nagai": Nagai, "nlmp": NLMP, "egxc": EGXC}
PRESETS = ("quick", "full")

__all__ = ["ARCHITECTURES", "PRESETS", "architecture_sha256", "build_architecture", "count_parameters", "XCDiff", "Nagai", "NLMP", "EGXC"]


def build_architecture(name: str, preset: str = "quick", seed: int = 0, **overrides) -> nn.Module:
    """A freshly initialised float64 architecture ``name`` with the ``preset`` sizes.

    Deterministic in ``seed``. The module gets ``name`` (e.g. "xcdiff-quick"), ``arch``,
    ``preset`` and ``seed`` attributes. Raises ``KeyError`` for an unknown name or preset.
    """
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}") from None
    try:
        kwargs = dict(cls.PRESETS[preset])
    except KeyError:
        raise KeyError(f"unknown preset {preset!r} for {name!r}; choose from {sorted(cls.PRESETS)}") from None
    kwargs.update(overrides)
    with seeded(seed):
        model = cls(**kwargs)
    model = model.double()
    model.arch = name
    model.preset = preset
    model.seed = int(seed)
    model.name = f"{name}-{preset}"
    return model


def architecture_sha256(name: str) -> str:
    """sha256 of the source of architecture ``name`` (its module and the shared `_common`), so
    a trained submission can pin the code its weights were made for."""
    import hashlib
    import importlib
    from pathlib import Path

    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    here = Path(__file__).resolve().parent
    module = importlib.import_module(ARCHITECTURES[name].__module__)
    h = hashlib.sha256()
    for path in (Path(module.__file__).resolve(), here / "_common.py"):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
