"""Bundled submission: the harness's reference jax PBE (harness.functionals.jax_classic)."""


def make_functional():
    """Factory named by submission.yaml's entry_point; returns the (exc, params) pair."""
    from harness.functionals.jax_classic import make_pbe

    return make_pbe()
