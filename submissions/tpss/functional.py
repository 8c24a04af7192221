"""Bundled submission: the harness's reference torch TPSS (harness.functionals.TPSS)."""

from harness.functionals import TPSS


def make_functional():
    """Factory named by submission.yaml's entry_point; returns a torch module."""
    return TPSS()
