"""Benchmarks of xc-harness.

The ``asv_*`` modules hold the airspeed-velocity (asv) benchmarks (``asv run`` from the
repository root, see ``asv.conf.json`` and ``benchmarks/README.md``); ``micro/`` holds
pytest-benchmark micro-benchmarks; ``bench_scf.py`` and ``bench_reference_cache.py`` are
stand-alone scripts (``python benchmarks/bench_scf.py ...``).
"""
