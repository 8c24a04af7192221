"""How the functional's process is started: under bubblewrap where it works, else plain.

``bwrap`` (Debian's ``bubblewrap``, the sandbox Flatpak uses) runs the child with

* every namespace unshared (``--unshare-all``): no network, its own PIDs and IPC;
* the whole filesystem read-only (``--ro-bind / /``), a private ``/tmp`` and ``$HOME``;
* the reference data, the results and the leaderboard folders covered by empty tmpfs mounts,
  so the functional cannot read the answers;
* ``--die-with-parent`` and ``--new-session``.

Either way the child's ``PYTHONPATH`` starts with the folder the parent imported ``harness``
from, so both processes run the same harness code. Without it the child finds ``harness`` through
the environment's install, which may point at another checkout: a virtual environment shared
between clones, installed editable from the last one, starts another checkout's functional server
(or none, when that checkout is gone).

`resolve_sandbox("auto")` probes once whether ``bwrap`` can create its namespaces here (it
cannot in some containers) and falls back to ``"none"``: a separate process with the same
limits but no isolation, which the summary records (``provenance.sandbox``).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from harness.allocator import child_tunables
from harness.errors import HarnessError

SANDBOXES = ("auto", "bwrap", "none")


@functools.lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """True when ``bwrap`` is on PATH and can start a process with every namespace unshared."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        p = subprocess.run([exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                            "--die-with-parent", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0


def resolve_sandbox(choice: str) -> str:
    """``"bwrap"`` or ``"none"`` for a ``--sandbox`` choice; ``"bwrap"`` that cannot work here
    is an error naming the cause."""
    if choice not in SANDBOXES:
        raise HarnessError(f"--sandbox must be one of {', '.join(SANDBOXES)}, got {choice!r}")
    if choice == "none":
        return "none"
    if bwrap_works():
        return "bwrap"
    if choice == "bwrap":
        why = "is not installed (apt-get install bubblewrap)" if shutil.which("bwrap") is None else \
            "cannot create namespaces on this machine"
        raise HarnessError(f"--sandbox bwrap: bwrap {why}")
    return "none"


def default_hidden() -> list[Path]:
    """Folders no submission may read: the bundled reference data and the committed leaderboard."""
    from harness.reference.pins import BUNDLED_REFERENCE_DIR

    repo = Path(__file__).resolve().parents[1]
    return [BUNDLED_REFERENCE_DIR.parent, repo / "leaderboard", repo / "results"]


def child_command(folder: Path, *, fd: int, threads: int, sandbox: str, hide: Sequence[Path] = ()) -> list[str]:
    """The command line that starts `harness.functional_server` for the submission ``folder``."""
    import os

    # the parent's pid means nothing inside bwrap's PID namespace (--die-with-parent covers it)
    parent = os.getpid() if sandbox == "none" else 0
    server = [sys.executable, "-m", "harness.functional_server", "--fd", str(fd), "--threads", str(threads),
              "--parent-pid", str(parent), str(folder)]
    harness_root = Path(__file__).resolve().parents[1]  # the folder `import harness` found
    setenv = {"PYTHONPATH": os.pathsep.join(filter(None, [str(harness_root), os.environ.get("PYTHONPATH")]))}
    tunables = child_tunables()  # the C allocator's policy (harness.allocator), set before Python starts
    if tunables is not None:
        setenv["GLIBC_TUNABLES"] = tunables
    if sandbox == "none":
        return [shutil.which("env") or "env", *(f"{k}={v}" for k, v in setenv.items()), *server]
    cmd = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
           "--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--new-session",
           "--setenv", "HOME", "/tmp", "--setenv", "XDG_CACHE_HOME", "/tmp/.cache"]
    for k, v in setenv.items():
        cmd += ["--setenv", k, v]
    folder = folder.resolve()
    # what the child needs, mounted again (read-only) in case it lies under the private /tmp: the
    # submission, the harness package and the Python environment; the covered folders go on top
    for keep in dict.fromkeys([folder, harness_root, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]):
        if keep.exists() and keep != Path("/"):
            cmd += ["--ro-bind", str(keep), str(keep)]
    for h in sorted({Path(p).resolve() for p in [*default_hidden(), *hide]}):
        if h == folder or h in folder.parents or not h.exists():
            continue  # never cover the submission itself
        cmd += ["--tmpfs", str(h)] if h.is_dir() else ["--ro-bind", "/dev/null", str(h)]
    cmd += ["--chdir", str(folder), "--"]
    return cmd + server


__all__ = ["SANDBOXES", "bwrap_works", "child_command", "default_hidden", "resolve_sandbox"]
