"""The C allocator's policy for processes that build large autograd graphs.

A training step or a TDDFT kernel allocates and frees thousands of grid-sized float64 arrays:
a hidden layer of 16 units on 20,000 grid points for both spin channels is 2 × 20,000 × 16 × 8
bytes ≈ 5 MB, and a third-order DI graph holds hundreds of them. glibc's ``malloc`` serves a
block above its *mmap threshold* (128 kB at start; it rises after frees, up to 32 MB) with
fresh pages from the kernel, and gives the top of the heap back to the kernel once more than
the *trim threshold* (128 kB) is free there. Either way the next array of the same size is
page-faulted and zeroed by the kernel again, which is system time spent on memory the process
had a moment before.

`tune_allocator` fixes the mmap threshold at glibc's maximum (32 MiB on 64-bit) and the trim
threshold at 2 GiB, so freed blocks stay in the process and are reused. The peak memory is
unchanged: blocks are reused, not added; the resident size simply does not shrink between
steps. Measured in docs/performance.md ("Allocator"). Set when the command line starts and
in each local pool worker (a ``mallopt`` setting is not inherited by a new process); it changes
no number the harness computes, so this module is not scoring code (`harness.provenance`).
Where something watches the resident memory against a limit, the trim threshold is 64 MiB
instead (`WATCHED_TRIM_THRESHOLD_BYTES`), so that memory the process no longer uses still goes
back: the functional process, whose resident size `harness.remote` holds against
``--memory-gb`` (it gets the policy as ``GLIBC_TUNABLES`` from its launcher,
`child_tunables` in `harness.sandbox.child_command`), and Dask workers
(`harness.executor.restore_malloc_defaults`), whose nanny pauses a worker that stays above 80 %
of its limit.

Preloading jemalloc or tcmalloc (``LD_PRELOAD``), as torch's CPU tuning guide suggests, would
do the same, but needs a system package and a wrapper around every process; glibc's own knobs
need neither. Only glibc has ``mallopt``; elsewhere, and where the user sets ``glibc.malloc``
tunables of their own (``GLIBC_TUNABLES``), this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), bytes.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the heap top kept before trimming, bytes (mallopt takes an int).
TRIM_THRESHOLD_BYTES = 2**31 - 1
#: The trim threshold where resident memory is held against a limit, bytes (module docstring).
WATCHED_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def tune_allocator(trim_threshold_bytes: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Keep freed large blocks in this process (module docstring): mmap threshold 32 MiB, trim
    threshold ``trim_threshold_bytes``. Returns whether that is in force: False off glibc or
    when ``GLIBC_TUNABLES`` sets malloc tunables of its own."""
    libc = None if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") else _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold_bytes)))


def child_tunables(trim_threshold_bytes: int = WATCHED_TRIM_THRESHOLD_BYTES, environ=None) -> str | None:
    """The ``GLIBC_TUNABLES`` value that starts a new process with this policy (mmap threshold
    32 MiB, trim threshold ``trim_threshold_bytes``), keeping tunables already set; None off
    Linux or when ``environ`` (default: this process's) sets malloc tunables of its own."""
    current = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "glibc.malloc" in current:
        return None
    mine = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD_BYTES}:glibc.malloc.trim_threshold={int(trim_threshold_bytes)}"
    return f"{current}:{mine}" if current else mine


__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "WATCHED_TRIM_THRESHOLD_BYTES", "child_tunables",
           "tune_allocator"]
