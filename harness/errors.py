"""The one base class of the harness's own errors.

Every error the harness raises on purpose derives from `HarnessError`; the command line
catches it and prints one line (``error: ...``) with exit status 1. Anything else that
escapes is a bug of the harness and keeps its traceback.

`SubmissionFault` marks the errors that are the *submission's* doing (a functional that
raises, returns NaN, has no gradient, crashes, hangs or exhausts memory). The evaluation
records those as the molecule's failure, with a status (`harness.status`); any other
`HarnessError` during a molecule is the harness's own and is reported as ``harness_error``.
"""

from __future__ import annotations


class HarnessError(Exception):
    """An error the harness reports as one clear line (the CLI exits with status 1)."""


class SubmissionFault(HarnessError):
    """Something the submitted functional did; ``status`` is its `harness.status.Status`."""

    status: str = "functional_error"


__all__ = ["HarnessError", "SubmissionFault"]
