"""The PySCF RKS object of the reference settings (PROTOCOL §1), with AO values cached.

Shared by the reference computation (`harness.reference.compute`), the DI-Loss targets
(`harness.reference.di_targets`) and the B3LYP side of the metrics. It sits below all of them
and imports only the settings, so none of them has to import another for it.
"""

from __future__ import annotations

from harness.reference.settings import ReferenceSettings


def _cached_numint_class():
    from pyscf.dft import numint

    class CachedAONumInt(numint.NumInt):
        """PySCF's NumInt that keeps the AO values of each grid block between calls.

        The numbers are PySCF's own (the same ``eval_ao`` call, made once); only the repeated
        evaluation in every SCF cycle and every TDDFT product is saved. The cache is bounded
        by ``max_cache_bytes``; past it, blocks are evaluated as usual.
        """

        max_cache_bytes = 3 * 1024**3

        def block_loop(self, mol, grids, nao=None, deriv=0, max_memory=2000, non0tab=None, blksize=None, buf=None):
            if non0tab is not None or buf is not None or deriv > 1:
                yield from super().block_loop(mol, grids, nao, deriv, max_memory, non0tab, blksize, buf)
                return
            cache = self.__dict__.setdefault("_ao_cache", {})
            key = (nao, deriv, blksize)
            hit = cache.get(key)
            # the cached blocks belong to one molecule and one grid array (held, so never stale)
            if hit is not None and hit[0] is mol and hit[1] is grids.coords:
                yield from hit[2]
                return
            blocks, size = [], 0
            for ao, mask, weight, coords in super().block_loop(mol, grids, nao, deriv, max_memory, None, blksize, None):
                size += ao.nbytes
                if blocks is not None and size <= self.max_cache_bytes:
                    blocks.append((ao.copy(order="K"), mask, weight, coords))
                else:
                    blocks = None
                yield ao, mask, weight, coords
            if blocks is not None:
                cache[key] = (mol, grids.coords, blocks)

    return CachedAONumInt


def make_rks(pmol, settings: ReferenceSettings, conv_tol: float | None = None):
    """A PySCF RKS object with the reference settings (grid level, xc, exact JK).

    AO values on the grid are cached across SCF cycles and TDDFT products (same numbers,
    less time)."""
    from pyscf import dft

    mf = dft.RKS(pmol, xc=settings.xc)
    mf._numint = _cached_numint_class()()
    mf.grids.level = settings.grid_level
    mf.conv_tol = settings.conv_tol if conv_tol is None else conv_tol
    mf.init_guess = settings.init_guess
    mf.verbose = 0
    if settings.density_fitting:  # pragma: no cover - v1 uses exact J and K
        mf = mf.density_fit()
    return mf


__all__ = ["make_rks"]
