"""What happened to one molecule of an evaluation: the status taxonomy (PROTOCOL §3.7).

=====================  =========================================================  ==========
status                 meaning                                                    metrics
=====================  =========================================================  ==========
``ok``                 every stage ran                                            1–6
``excitations_failed`` SCF and metrics 1–5 ran; the TDDFT stage failed or was     1–5
                       unstable (negative ω²)
``not_converged``      the model's own SCF did not converge within 100 cycles     none
``functional_error``   the functional raised, returned NaN/inf, a wrong shape     none
                       or dtype, or has no gradient
``timeout``            the molecule ran past ``--timeout-s``                      none
``crashed``            the functional's process died (exit status or signal)      none
``memory``             the functional's process went past ``--memory-gb``         none
``harness_error``      the harness itself failed on this molecule (a bug or bad   none
                       infrastructure; never cached)
=====================  =========================================================  ==========

Every status but ``ok`` counts as a failure of the molecule (``n_failed``). A result covers a
molecule when that molecule has metrics 1–5 (``ok`` or ``excitations_failed``).
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    OK = "ok"
    EXCITATIONS_FAILED = "excitations_failed"
    NOT_CONVERGED = "not_converged"
    FUNCTIONAL_ERROR = "functional_error"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    MEMORY = "memory"
    HARNESS_ERROR = "harness_error"

    def __str__(self) -> str:  # so f-strings and CSV cells read "ok", not "Status.OK"
        return self.value

    @property
    def has_metrics(self) -> bool:
        """Metrics 1–5 are present."""
        return self in (Status.OK, Status.EXCITATIONS_FAILED)

    @property
    def cacheable(self) -> bool:
        """May be stored in the per-molecule cache: everything but the harness's own failure
        (a rerun must retry it)."""
        return self is not Status.HARNESS_ERROR


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


def parse_status(value: object, where: str = "row") -> Status:
    """``value`` as a `Status`, or a `harness.errors.HarnessError` naming ``where``."""
    from harness.errors import HarnessError

    try:
        return Status(str(value))
    except ValueError:
        raise HarnessError(f"{where}: unknown status {value!r} (expected one of {', '.join(STATUSES)})") from None


__all__ = ["STATUSES", "Status", "parse_status"]
