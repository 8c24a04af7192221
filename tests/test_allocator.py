"""harness.allocator: glibc's malloc keeps freed large blocks once tuned, checked against
glibc's own accounting (``mallinfo2``) in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

def _has_mallinfo2() -> bool:
    try:
        import ctypes

        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_mallinfo2(),
                                reason="glibc ≥ 2.33 only (mallinfo2)")

#: Runs SETUP, then reports (a) how many bytes one 8 MiB malloc adds to mmapped memory and
#: (b) the heap's size after 256 blocks of 1 MiB were allocated and freed again.
PROBE = """
import ctypes, json, os
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
result = {{}}
{setup}
before = libc.mallinfo2().hblkhd
p = libc.malloc(8 << 20)
result["mmapped_bytes"] = libc.mallinfo2().hblkhd - before
libc.free(p)
blocks = [None] * 256  # made first: a list grown in the loop would sit above the blocks
for i in range(256):
    blocks[i] = libc.malloc(1 << 20)
for b in blocks:
    libc.free(b)
result["heap_after_free_bytes"] = libc.mallinfo2().arena
print(json.dumps(result))
"""

MiB = 1 << 20


def probe(setup: str, env_extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_")}
    env.update(env_extra or {})
    code = PROBE.format(setup=textwrap.dedent(setup))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_glibc_defaults_mmap_and_trim():
    """The control: without tuning, 8 MiB is mmapped and a freed heap is trimmed."""
    r = probe("")
    assert r["mmapped_bytes"] >= 8 * MiB
    assert r["heap_after_free_bytes"] < 64 * MiB


def test_tune_allocator_keeps_freed_blocks():
    r = probe("from harness.allocator import tune_allocator\nresult['ok'] = tune_allocator()")
    assert r["ok"] is True
    assert r["mmapped_bytes"] == 0  # served from the heap
    assert r["heap_after_free_bytes"] >= 256 * MiB  # nothing given back


def test_tune_allocator_leaves_the_users_tunables_alone():
    r = probe("from harness.allocator import tune_allocator\nresult['ok'] = tune_allocator()",
              {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})
    assert r["ok"] is False
    assert r["mmapped_bytes"] >= 8 * MiB


def test_command_line_and_pool_workers_tune():
    cli = probe("from harness.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass")
    worker = probe("from harness.executor import _init_pool_worker\n_init_pool_worker(1)")
    for r in (cli, worker):
        assert r["mmapped_bytes"] == 0 and r["heap_after_free_bytes"] >= 256 * MiB


def test_functional_process_keeps_trimming():
    """The functional process's resident memory is held against --memory-gb: it is started with
    tunables (both sandboxes) under which large blocks come from the heap, but freed memory
    above 64 MiB goes back."""
    from pathlib import Path

    from harness.allocator import child_tunables
    from harness.sandbox import child_command

    tunables = child_tunables(environ={})
    assert child_tunables(environ={"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None
    assert child_tunables(environ={"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}).startswith("glibc.pthread.rseq=0:")
    r = probe("", {"GLIBC_TUNABLES": tunables})
    assert r["mmapped_bytes"] == 0
    assert r["heap_after_free_bytes"] < 128 * MiB
    for sandbox in ("none", "bwrap"):
        cmd = child_command(Path("submissions/pbe"), fd=3, threads=1, sandbox=sandbox)
        env = [a for a in cmd if a.startswith("GLIBC_TUNABLES=")] if sandbox == "none" else \
            [cmd[i + 2] for i, a in enumerate(cmd) if a == "--setenv" and cmd[i + 1] == "GLIBC_TUNABLES"]
        assert env and env[0].endswith(tunables), (sandbox, cmd[:12])


def test_dask_workers_keep_trimming():
    """Under Dask's nanny (MALLOC_TRIM_THRESHOLD_ set) the mmap threshold is raised but the heap
    is still trimmed above 64 MiB, so the nanny sees memory come back."""
    r = probe("from harness.executor import restore_malloc_defaults\nrestore_malloc_defaults()\n"
              "result['env_left'] = 'MALLOC_TRIM_THRESHOLD_' in os.environ",
              {"MALLOC_TRIM_THRESHOLD_": "65536"})
    assert r["env_left"] is False
    assert r["mmapped_bytes"] == 0
    assert r["heap_after_free_bytes"] < 128 * MiB
