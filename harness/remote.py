"""The process boundary (PROTOCOL §2): a submitted functional runs in its own process.

The harness process never imports submission code. `RemoteFunctional` starts
``python -m harness.functional_server`` — inside a `bubblewrap <https://github.com/containers/bubblewrap>`_
sandbox where ``bwrap`` works (`harness.sandbox`) — and asks it only feature-space questions:

* ``value_and_grad``: E_xc and ∂E_xc/∂features at one set of features;
* ``hvp``: Hessian-vector products H_f·t for a batch of feature tangents t at a point.

Everything else — the SCF, TDDFT, every metric — runs here, on the numbers that come back.
`RemoteFunctional` is a `harness.adapter.BridgedFunctional`, so the XC engine, TDDFT and the
DI-Loss terms use it exactly as an in-process functional (first and second derivatives through
torch autograd).

Wire format. Messages are length-prefixed JSON over a Unix socket pair (never pickle: a
hostile reply could run code here). Tensors travel through one shared-memory arena (a
``memfd``, mapped by both processes and handed to the child over the socket with
``SCM_RIGHTS``): the request names every tensor's offset, dtype and shape; the child writes its
answers at offsets the harness chose, and the harness reads them back with the shapes *it*
expects. Each crossing costs one copy each way.

Limits. Every wait for the child checks, four times a second:

* the molecule's deadline (`begin`; ``timeout_s``, shared by SCF and TDDFT) → `FunctionalTimeout`;
* the resident memory of the child's process tree against ``memory_gb`` → `FunctionalMemory`;
* whether the child is alive → `FunctionalCrashed`, naming the exit status or signal.

On any of these the child's process group is killed; the next request starts a fresh child.
The child dies with its parent (``bwrap --die-with-parent``, else ``PR_SET_PDEATHSIG``), so a
killed harness leaves no orphans.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from harness.adapter import BridgedFunctional
from harness.errors import SubmissionFault

#: Largest JSON header accepted from the child (bytes): a reply is a few hundred bytes.
MAX_HEADER_BYTES = 1 << 20
#: Tensor offsets in the arena are aligned to this many bytes.
ALIGN = 64
#: How often a wait checks the deadline, memory and liveness (s).
POLL_S = 0.25
#: How long a fresh child may take to import the submission and answer (s), on top of the
#: molecule deadline (imports of torch, jax and a model can take a while on a loaded machine).
START_TIMEOUT_S = 600.0

_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


class FunctionalTimeout(SubmissionFault):
    """The molecule ran past its wall-time limit."""

    status = "timeout"


class FunctionalCrashed(SubmissionFault):
    """The functional's process died (exit status or signal in the message)."""

    status = "crashed"


class FunctionalMemory(SubmissionFault):
    """The functional's process went past its memory limit."""

    status = "memory"


class StartError(SubmissionFault):
    """The functional's process could not load the submission (a `SubmissionError` there)."""

    status = "functional_error"


# --------------------------------------------------------------------------------------------
# wire format (both sides)
# --------------------------------------------------------------------------------------------


def send_msg(sock: socket.socket, header: dict, fds: Sequence[int] = ()) -> None:
    """One length-prefixed JSON message, optionally carrying file descriptors."""
    data = json.dumps(header, allow_nan=True).encode()
    payload = struct.pack("<Q", len(data)) + data
    if fds:
        socket.send_fds(sock, [payload[:8]], list(fds))
        sock.sendall(payload[8:])
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int, fds: list[int]) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk, got, _flags, _addr = socket.recv_fds(sock, n - len(buf), 4)
        fds.extend(got)
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> tuple[dict, list[int]]:
    """(header, received file descriptors); EOFError when the peer is gone; ValueError for a
    malformed message."""
    fds: list[int] = []
    (n,) = struct.unpack("<Q", _recv_exact(sock, 8, fds))
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"message header of {n} bytes (at most {MAX_HEADER_BYTES})")
    header = json.loads(_recv_exact(sock, n, fds))
    if not isinstance(header, dict):
        raise ValueError("message header is not a JSON object")
    return header, fds


class Arena:
    """A shared-memory region (memfd + mmap) that holds the tensors of one request/reply."""

    def __init__(self, size: int, fd: int | None = None):
        self.size = int(size)
        if fd is None:
            fd = os.memfd_create("xc-harness-arena", os.MFD_CLOEXEC)
            os.ftruncate(fd, self.size)
        self.fd = fd
        self.mm = mmap.mmap(fd, self.size)

    def view(self, offset: int, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
        """A tensor over the arena's bytes at ``offset`` (shares memory; copy before reuse)."""
        count = 1
        for s in shape:
            count *= int(s)
        if count == 0:
            return torch.empty(tuple(shape), dtype=dtype)
        elem = torch.empty((), dtype=dtype).element_size()
        if offset < 0 or offset % ALIGN or offset + count * elem > self.size:
            raise ValueError(f"tensor at offset {offset} ({count} x {elem} bytes) outside the arena of {self.size}")
        return torch.frombuffer(self.mm, dtype=dtype, count=count, offset=offset).view(tuple(int(s) for s in shape))

    def write(self, offset: int, t: torch.Tensor) -> None:
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        self.view(offset, t.dtype, t.shape).copy_(t)

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:  # views still alive: the mapping goes with the last one
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    count = 1
    for s in shape:
        count *= int(s)
    return count * torch.empty((), dtype=dtype).element_size()


class Layout:
    """Offsets of a sequence of tensors in the arena, in order, each aligned."""

    def __init__(self, start: int = 0):
        self.end = start

    def place(self, shape: Sequence[int], dtype: torch.dtype) -> int:
        off = self.end
        self.end = _aligned(off + _nbytes(shape, dtype))
        return off


def spec_of(name: str, t: torch.Tensor, offset: int) -> dict:
    if t.dtype not in _DTYPE_NAMES:
        raise TypeError(f"feature {name!r}: dtype {t.dtype} cannot cross the process boundary")
    return {"name": name, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "offset": offset}


def dtype_of(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}") from None


# --------------------------------------------------------------------------------------------
# the harness side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-molecule limits of a submitted functional: wall time (s) and resident memory (GiB;
    None: no limit beyond the machine's)."""

    timeout_s: float = 1800.0
    memory_gb: float | None = None

    def to_dict(self) -> dict:
        return {"timeout_s": float(self.timeout_s), "memory_gb": None if self.memory_gb is None
                else float(self.memory_gb)}


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "died"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by signal {-code} ({name})"
    if code > 128:  # bwrap reports a child killed by a signal as 128 + signal
        try:
            name = signal.Signals(code - 128).name
            return f"exited with status {code} (killed by signal {code - 128}, {name}?)"
        except ValueError:
            pass
    return f"exited with status {code}"


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (bytes; 0 when gone)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return total


class RemoteFunctional(BridgedFunctional):
    """A submission's functional in its own (sandboxed) process.

    ``submission_dir``: the folder with ``submission.yaml``; ``sandbox``: ``"auto"`` (bwrap
    when it works here), ``"bwrap"`` or ``"none"``; ``hide``: folders the sandbox must not
    show (the reference data, the results); ``threads``: torch threads in the child.

    The first request starts the child; :meth:`start` does it eagerly and raises
    `harness.submission.SubmissionError` when the submission cannot be loaded there.
    """

    def __init__(self, submission_dir: str | Path, *, limits: Limits = Limits(), sandbox: str = "auto",
                 hide: Sequence[str | Path] = (), threads: int | None = None, name: str | None = None):
        from harness.sandbox import resolve_sandbox

        self.folder = Path(submission_dir).resolve()
        self.limits = limits
        self.sandbox = resolve_sandbox(sandbox)
        self.hide = [Path(h).resolve() for h in hide]
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.name = name or self.folder.name
        self._features: list[str] | None = None
        self.framework: str | None = None
        self.batched_hvp = False
        self.molecule = None
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._arena: Arena | None = None
        self._child_arena_id = -1
        self._arena_id = 0
        self._child_point: int | None = None
        self._deadline: float | None = None
        self._peak_rss = 0
        self._log = None
        #: how many times a child was started (1 + restarts after a crash, timeout or memory)
        self.starts = 0

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "RemoteFunctional":
        """Start the child now (no-op when it runs) and learn the functional's features."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._stop()
        from harness.sandbox import child_command

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._log = tempfile.TemporaryFile(prefix="xc-harness-functional-", suffix=".log")
        cmd = child_command(self.folder, fd=child.fileno(), threads=self.threads, sandbox=self.sandbox,
                            hide=self.hide)
        env = dict(os.environ)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        try:
            self._proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                          stdout=self._log, stderr=self._log, start_new_session=True,
                                          env=env, cwd=str(self.folder))
        finally:
            child.close()
        self._sock = parent
        self._child_arena_id = -1
        self._child_point = None
        self._peak_rss = 0
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        hello = self._wait(deadline, starting=True)
        if not hello.get("ok"):
            message = str(hello.get("message", "the functional's process refused to start"))
            self._stop()
            from harness.submission import SubmissionError

            raise SubmissionError(message)
        self.name = str(hello.get("name") or self.name)
        self._features = [str(f) for f in hello.get("features", [])]
        self.framework = hello.get("framework")
        # a batch of products is one round trip; the child loops (torch) or vmaps (jax) inside
        self.batched_hvp = True
        return self

    @property
    def features(self) -> list[str]:
        """The features the functional declared (plain names); starts the child the first time."""
        if self._features is None:
            self.start()
        assert self._features is not None
        return self._features

    def close(self) -> None:
        """Stop the child (it is restarted by the next request)."""
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            try:
                send_msg(self._sock, {"op": "exit"})
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()
        if self._arena is not None:
            self._arena.close()
            self._arena = None

    def __enter__(self) -> "RemoteFunctional":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self._stop()
        except Exception:
            pass

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._child_point = None

    def log_tail(self, n: int = 1500) -> str:
        """The last ``n`` characters the child wrote to stdout/stderr."""
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - n))
            return self._log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    # -- limits --------------------------------------------------------------------------------
    def begin(self, molecule: str | None) -> None:
        """Start the wall-time clock of one molecule (and name it in errors)."""
        self.molecule = molecule
        self._deadline = time.monotonic() + float(self.limits.timeout_s)

    def end(self) -> None:
        self._deadline = None

    @property
    def peak_rss_gb(self) -> float:
        """The largest resident memory of the child's process tree seen by the waits (GiB)."""
        return self._peak_rss / 2**30

    def _wait(self, deadline: float | None, starting: bool = False) -> dict:
        """The child's next reply, enforcing the limits (see module docstring)."""
        assert self._sock is not None and self._proc is not None
        limit = None if self.limits.memory_gb is None else self.limits.memory_gb * 2**30
        while True:
            timeout = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if ready:
                try:
                    header, fds = recv_msg(self._sock)
                except EOFError:
                    code = self._reap()
                    raise self._crashed(code, starting) from None
                except (ValueError, OSError) as exc:
                    self._stop()
                    raise FunctionalCrashed(f"{self._where()}: the functional's process sent a malformed "
                                            f"reply ({exc})") from None
                for fd in fds:  # the child never needs to send descriptors
                    os.close(fd)
                return header
            rss = _tree_rss_bytes(self._proc.pid)
            self._peak_rss = max(self._peak_rss, rss)
            if limit is not None and rss > limit:
                self._stop()
                raise FunctionalMemory(f"{self._where()}: the functional's process used {rss / 2**30:.1f} GiB, "
                                       f"more than the limit --memory-gb {self.limits.memory_gb:g}")
            if self._proc.poll() is not None and not select.select([self._sock], [], [], 0)[0]:
                raise self._crashed(self._reap(), starting)
            if deadline is not None and time.monotonic() >= deadline:
                self._stop()
                what = "starting the functional" if starting else "this molecule"
                limit_s = START_TIMEOUT_S if starting else self.limits.timeout_s
                raise FunctionalTimeout(f"{self._where()}: {what} took longer than the limit of {limit_s:g} s "
                                        "(--timeout-s)")

    def _reap(self) -> int | None:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                code = None
        self._stop()
        return code

    def _crashed(self, code: int | None, starting: bool) -> SubmissionFault:
        tail = self.log_tail()
        detail = f"; its last output: {tail[-600:]}" if tail else ""
        if self.limits.memory_gb is not None and self._peak_rss > 0.9 * self.limits.memory_gb * 2**30:
            return FunctionalMemory(f"{self._where()}: the functional's process {_describe_exit(code)} near the "
                                    f"memory limit ({self.peak_rss_gb:.1f} GiB of {self.limits.memory_gb:g})")
        what = "while loading the submission" if starting else ""
        return FunctionalCrashed(f"{self._where()}: the functional's process {_describe_exit(code)} {what}".rstrip()
                                 + detail)

    # -- requests ------------------------------------------------------------------------------
    def _request(self, header: dict, inputs: list[tuple[str, torch.Tensor]], outputs: list[tuple[Sequence[int], torch.dtype]],
                 keep_inputs: bool = True):
        """Send ``header`` with ``inputs`` in the arena; return (reply, output tensors)."""
        self.start()
        assert self._sock is not None
        lay = Layout()
        placed = [(name, t, lay.place(t.shape, t.dtype)) for name, t in inputs]
        out_offsets = [lay.place(shape, dtype) for shape, dtype in outputs]
        self._ensure_arena(lay.end)
        assert self._arena is not None
        for _name, t, off in placed:
            self._arena.write(off, t)
        header = dict(header, inputs=[spec_of(n, t, off) for n, t, off in placed],
                      outputs=[{"dtype": _DTYPE_NAMES[d], "shape": list(s), "offset": off}
                               for (s, d), off in zip(outputs, out_offsets)],
                      molecule=self.molecule)
        fds = []
        if self._child_arena_id != self._arena_id:
            header["arena"] = {"id": self._arena_id, "size": self._arena.size}
            fds = [self._arena.fd]
        try:
            send_msg(self._sock, header, fds)
        except OSError:
            raise self._crashed(self._reap(), False) from None
        self._child_arena_id = self._arena_id
        reply = self._wait(self._deadline)
        if not reply.get("ok"):
            self._raise_reply(reply)
        outs = [self._arena.view(off, d, s).clone() for (s, d), off in zip(outputs, out_offsets)]
        return reply, outs

    def _ensure_arena(self, size: int) -> None:
        if self._arena is not None and self._arena.size >= size:
            return
        new = max(size, 2 * (self._arena.size if self._arena is not None else 0), 1 << 20)
        if self._arena is not None:
            self._arena.close()
        self._arena = Arena(_aligned(new))
        self._arena_id += 1

    def _raise_reply(self, reply: dict):
        from harness.contract import FunctionalError

        kind = reply.get("kind")
        message = str(reply.get("message", "failed"))
        if kind == "memory":
            raise FunctionalMemory(self.error(message).args[0])
        raise FunctionalError(self.error(message).args[0])

    def _value_and_grad(self, names, tensors, rest):
        like = tensors[0] if tensors else None
        inputs = [(n, t) for n, t in zip(names, tensors)] + list(rest.items())
        outputs = [(tuple(t.shape), t.dtype) for t in tensors]
        point = self._last_point
        reply, grads = self._request({"op": "value_and_grad", "diff": list(names), "point": point}, inputs, outputs)
        self._child_point = point
        E = reply.get("energy")
        if not isinstance(E, (int, float)):
            raise self.error(f"returned {E!r} instead of a number")
        dtype = like.dtype if like is not None else torch.float64
        E_t = torch.tensor(float(E), dtype=dtype)
        if like is not None and like.device.type != "cpu":
            E_t = E_t.to(like.device)
            grads = [g.to(like.device) for g in grads]
        return E_t, tuple(grads)

    def _hvp(self, names, tensors, rest, vs, batched: bool = False, point=None):
        dev = tensors[0].device if tensors else torch.device("cpu")
        send_point = point is None or self._child_point != point
        inputs = []
        if send_point:
            inputs += [(n, t) for n, t in zip(names, tensors)] + list(rest.items())
        inputs += [(f"tangent:{n}", v.to(dtype=x.dtype)) for n, v, x in zip(names, vs, tensors)]
        outputs = [(tuple(v.shape), x.dtype) for v, x in zip(vs, tensors)]
        header = {"op": "hvp", "diff": list(names), "point": point, "with_point": send_point,
                  "batched": bool(batched)}
        _reply, hv = self._request(header, inputs, outputs)
        if send_point:
            self._child_point = point
        if dev.type != "cpu":
            hv = [h.to(dev) for h in hv]
        return tuple(hv)

    # -- passthroughs (what the drivers call on an adapter) -----------------------------------
    def to(self, *args, **kwargs) -> "RemoteFunctional":
        return self

    def parameters(self, recurse: bool = True):
        return iter(())

    def named_parameters(self, *args, **kwargs):
        return iter(())

    def eval(self) -> "RemoteFunctional":
        return self

    def train(self, mode: bool = True) -> "RemoteFunctional":
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "RemoteFunctional":
        return self

    def __repr__(self) -> str:
        return f"RemoteFunctional({str(self.folder)!r}, sandbox={self.sandbox!r})"


__all__ = ["Arena", "FunctionalCrashed", "FunctionalMemory", "FunctionalTimeout", "Limits", "RemoteFunctional",
           "recv_msg", "send_msg"]
