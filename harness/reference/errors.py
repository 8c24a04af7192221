"""`ReferenceDataError`, in a module of its own below `harness.reference.store` and
`harness.reference.pins`: both raise it, and the store imports the pins to check the bundled
manifest, so the error can live in neither without an import cycle. `harness.reference.store`
re-exports it, which is where callers import it from.
"""

from __future__ import annotations

from harness.errors import HarnessError


class ReferenceDataError(HarnessError, RuntimeError):
    """A reference file or manifest is missing, corrupt or inconsistent. The message names the file."""


__all__ = ["ReferenceDataError"]
