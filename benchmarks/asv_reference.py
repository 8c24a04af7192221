"""asv: the reference protocol on one molecule — ``compute_reference`` for H2O (PySCF
B3LYP/def2-SVP from minao to 1e-8, continued to 1e-10, then TD-B3LYP with 5 states), the
per-geometry unit of ``harness reference build``. H2O is the smallest molecule of the
G2 set that exercises every step of it.
"""

from __future__ import annotations

from ._common import molecule


class TimeReference:
    number = 1
    repeat = (1, 3, 60.0)
    rounds = 1
    warmup_time = 0.0
    min_run_count = 1
    timeout = 900

    def setup(self):
        self.mol = molecule("H2O")

    def time_compute_reference_h2o(self):
        from harness.reference.compute import compute_reference

        rec = compute_reference(self.mol, "test")
        if rec.excitation_energies_eV is None or len(rec.excitation_energies_eV) != 5:
            raise RuntimeError("H2O reference record without 5 excitations")
