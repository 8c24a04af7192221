"""Bundled submission: the harness's reference torch LDA (harness.functionals.LDA)."""

from harness.functionals import LDA


def make_functional():
    """Factory named by submission.yaml's entry_point; returns a torch module."""
    return LDA()
