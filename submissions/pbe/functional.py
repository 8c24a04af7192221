"""Bundled submission: the harness's reference torch PBE (harness.functionals.PBE)."""

from harness.functionals import PBE


def make_functional():
    """Factory named by submission.yaml's entry_point; returns a torch module."""
    return PBE()
