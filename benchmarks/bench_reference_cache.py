"""PySCF B3LYP SCF (reference settings, conv_tol 1e-8 from minao) with and without the
AO-value cache that `harness.reference.rks.make_rks` installs, interleaved.

    python benchmarks/bench_reference_cache.py [MOLECULE] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

from pyscf import lib
from pyscf.dft import numint

from harness.molecules import g2_molecule, to_pyscf
from harness.reference import compute, rks
from harness.reference.settings import ReferenceSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("molecule", nargs="?", default="CH3CH2OH", help="G2 name (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    lib.num_threads(args.threads)
    pmol = to_pyscf(g2_molecule(args.molecule))
    settings = ReferenceSettings()
    cached_cls = rks._cached_numint_class
    for rep in range(args.repeats):
        for label, cls in (("cached", cached_cls), ("plain", lambda: numint.NumInt)):
            rks._cached_numint_class = cls
            t0 = time.perf_counter()
            cycles, _, mf = compute.b3lyp_cycles(pmol, settings)
            print(f"{args.molecule} rep {rep} {label:6s} {time.perf_counter() - t0:6.2f} s  "
                  f"cycles {cycles}  E {mf.e_tot:.12f}")
    rks._cached_numint_class = cached_cls


if __name__ == "__main__":
    main()
