"""Classic reference XC functionals in the harness functional contract.

Torch modules :class:`LDA` (Perdew & Wang, PRB 45, 13244 (1992)), :class:`PBE` (Perdew, Burke
& Ernzerhof, PRL 77, 3865 (1996)) and :class:`TPSS` (Tao, Perdew, Staroverov & Scuseria,
PRL 91, 146401 (2003)), each matching Libxc point by point. A jax PBE lives in
:mod:`harness.functionals.jax_classic`; it is not imported here so that jax stays optional.
"""

from __future__ import annotations

from .torch_classic import LDA, PBE, TPSS

#: name -> torch functional class
TORCH_FUNCTIONALS = {"lda": LDA, "pbe": PBE, "tpss": TPSS}

__all__ = ["LDA", "PBE", "TPSS", "TORCH_FUNCTIONALS"]
