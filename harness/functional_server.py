"""The functional's own process: ``python -m harness.functional_server --fd N SUBMISSION_DIR``.

Started by `harness.remote.RemoteFunctional` (under bwrap where it works). It is the only
process that imports the submission's code. It loads the submission
(`harness.submission.load_functional`: YAML, sha256-checked weights, the factory), says hello
with the functional's name and features, then answers feature-space requests until the
socket closes:

``value_and_grad``
    E_xc and ∂E_xc/∂x for the named differentiable features x (torch autograd, or the jax
    bridge's fused ``value_and_grad``). The inputs are kept as the current *point*.
``hvp``
    H·t for tangents t (a batch when ``batched``) at a point: the current one, or one sent
    with the request. A torch functional keeps its ``create_graph`` graph at the point, so a
    Davidson solve builds it once.

A failure of the functional is a reply (``ok: false`` with ``kind`` and ``message``), never an
exception that ends the process: ``functional_error`` for anything it raised — ``SystemExit``
and other ``BaseException`` included — and for a missing gradient; ``memory`` for a
``MemoryError``. If the process dies anyway (``os._exit``, a signal), the harness sees the
socket close and names the exit status. Replies are JSON; the numbers go into the shared arena
at the offsets the harness chose (`harness.remote`).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
from typing import Any

import torch

from harness.remote import Arena, dtype_of, recv_msg, send_msg

NO_GRADIENT = ("no gradient: E_xc is not connected to its input features (a detached output or "
               "stop_gradient?); V_xc would be zero")


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if parent_pid and os.getppid() != parent_pid and os.getppid() == 1:
        os._exit(1)  # the parent is already gone


class Server:
    def __init__(self, sock: socket.socket, functional):
        from harness.adapter import JaxFunctional
        from harness.contract import feature_name

        self.sock = sock
        self.fn = functional
        self.is_jax = isinstance(functional, JaxFunctional)
        #: plain feature name -> the key object the functional declared (str or str-Enum)
        self.keys = {feature_name(k): k for k in functional.features}
        self.arena: Arena | None = None
        self.point_id: Any = None
        self.point: dict[str, torch.Tensor] = {}
        self.graph: tuple | None = None  # torch: (point id, leaves, grads) built with create_graph

    # -- arena ----------------------------------------------------------------------------------
    def _take_arena(self, header: dict, fds: list[int]) -> None:
        info = header.get("arena")
        if info is None:
            for fd in fds:
                os.close(fd)
            return
        if len(fds) != 1:
            raise ValueError("arena announced without exactly one descriptor")
        if self.arena is not None:
            self.arena.close()
        self.arena = Arena(int(info["size"]), fd=fds[0])

    def _inputs(self, header: dict) -> dict[str, torch.Tensor]:
        assert self.arena is not None
        out = {}
        for spec in header["inputs"]:
            out[spec["name"]] = self.arena.view(int(spec["offset"]), dtype_of(spec["dtype"]), spec["shape"]).clone()
        return out

    def _write_outputs(self, header: dict, tensors) -> None:
        assert self.arena is not None
        specs = header["outputs"]
        if len(specs) != len(tensors):
            raise RuntimeError(f"{len(tensors)} results for {len(specs)} outputs")
        for spec, t in zip(specs, tensors):
            shape = tuple(spec["shape"])
            if tuple(t.shape) != shape:
                raise _Fail(f"returned a derivative of shape {tuple(t.shape)} for a feature of shape {shape}")
            self.arena.write(int(spec["offset"]), t.to(dtype=dtype_of(spec["dtype"])))

    def _feats(self, tensors: dict[str, torch.Tensor], diff: list[str], grad: bool) -> tuple[dict, list]:
        feats, leaves = {}, []
        for n, t in tensors.items():
            if n.startswith("tangent:"):
                continue
            if grad and n in diff:
                t = t.requires_grad_(True)
                leaves.append(t)
            feats[self.keys.get(n, n)] = t
        return feats, leaves

    # -- requests ---------------------------------------------------------------------------------
    def value_and_grad(self, header: dict) -> dict:
        tensors = self._inputs(header)
        diff = list(header.get("diff", []))
        self.point_id, self.point, self.graph = header.get("point"), tensors, None
        if self.is_jax:
            names = tuple(diff)
            xs = tuple(tensors[n] for n in names)
            rest = {n: t for n, t in tensors.items() if n not in names}
            E, grads = self.fn._value_and_grad(names, xs, rest)
        else:
            fresh = {n: t.clone() for n, t in tensors.items()}
            feats, leaves = self._feats(fresh, diff, grad=bool(diff))
            with torch.enable_grad() if diff else torch.no_grad():
                E = self.fn.get_exc(feats)
                if diff and not E.requires_grad:
                    raise _Fail(NO_GRADIENT)
                grads = torch.autograd.grad(E, leaves, allow_unused=True) if diff else ()
            grads = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))
        self._write_outputs(header, [g.detach() for g in grads])
        return {"ok": True, "energy": float(E.detach())}

    def hvp(self, header: dict) -> dict:
        tensors = self._inputs(header)
        diff = list(header.get("diff", []))
        if header.get("with_point"):
            self.point_id, self.graph = header.get("point"), None
            self.point = {n: t for n, t in tensors.items() if not n.startswith("tangent:")}
        elif header.get("point") != self.point_id:
            raise RuntimeError("HVP at a point the server does not hold")
        vs = tuple(tensors[f"tangent:{n}"] for n in diff)
        batched = bool(header.get("batched"))
        if self.is_jax:
            xs = tuple(self.point[n] for n in diff)
            rest = {n: t for n, t in self.point.items() if n not in diff}
            hv = self.fn._hvp(tuple(diff), xs, rest, vs, batched=batched)
        else:
            hv = self._torch_hvp(diff, vs, batched)
        self._write_outputs(header, [h.detach() for h in hv])
        return {"ok": True}

    def _torch_hvp(self, diff: list[str], vs, batched: bool):
        if self.graph is None or self.graph[0] != self.point_id:
            fresh = {n: t.clone() for n, t in self.point.items()}
            feats, leaves = self._feats(fresh, diff, grad=True)
            with torch.enable_grad():
                E = self.fn.get_exc(feats)
                if not E.requires_grad:
                    raise _Fail(NO_GRADIENT)
                grads = torch.autograd.grad(E, leaves, create_graph=True, allow_unused=True)
            self.graph = (self.point_id, leaves, grads)
        _, leaves, grads = self.graph
        active = [j for j, g in enumerate(grads) if g is not None and g.requires_grad]
        vecs = vs if batched else tuple(v.unsqueeze(0) for v in vs)
        n = vecs[0].shape[0]
        per = []
        with torch.enable_grad():
            for k in range(n):
                if not active:
                    per.append([torch.zeros_like(x) for x in leaves])
                    continue
                out = torch.autograd.grad([grads[j] for j in active], leaves,
                                          grad_outputs=[vecs[j][k] for j in active], retain_graph=True,
                                          allow_unused=True)
                per.append([torch.zeros_like(x) if o is None else o for o, x in zip(out, leaves)])
        hv = [torch.stack([p[j] for p in per]) for j in range(len(leaves))]
        return tuple(hv) if batched else tuple(h[0] for h in hv)

    # -- loop -------------------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                header, fds = recv_msg(self.sock)
            except EOFError:
                return
            op = header.get("op")
            if op == "exit":
                return
            try:
                self._take_arena(header, fds)
                if self.fn is not None:
                    self.fn.molecule = header.get("molecule")
                if op == "value_and_grad":
                    reply = self.value_and_grad(header)
                elif op == "hvp":
                    reply = self.hvp(header)
                else:
                    reply = {"ok": False, "kind": "protocol", "message": f"unknown request {op!r}"}
            except MemoryError as exc:
                reply = {"ok": False, "kind": "memory", "message": f"raised MemoryError: {exc}"}
            except _Fail as exc:
                reply = {"ok": False, "kind": "functional_error", "message": str(exc)}
            except BaseException as exc:  # SystemExit, KeyboardInterrupt: still the functional's doing
                reply = {"ok": False, "kind": "functional_error", "message": _describe(exc)}
            send_msg(self.sock, reply)


class _Fail(Exception):
    """A problem the server itself found in the functional's answer."""


def _describe(exc: BaseException) -> str:
    from harness.contract import FunctionalError

    if isinstance(exc, FunctionalError):
        text = str(exc)
        # the adapter names functional and molecule; the harness side adds them again
        return text.split(": ", 1)[1] if text.startswith("functional ") and ": " in text else text
    text = str(exc).strip()
    if len(text) > 2000:
        text = text[:2000] + " ..."
    return f"raised {type(exc).__name__}: {text}" if text else f"raised {type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.functional_server",
                                description="Serve one submission's functional to the harness over a socket.")
    p.add_argument("--fd", type=int, required=True, help="the connected Unix socket inherited from the harness")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("submission")
    args = p.parse_args(argv)
    _die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides when this process ends
    torch.set_num_threads(max(1, args.threads))
    sock = socket.socket(fileno=args.fd)
    try:
        from harness.submission import load_functional

        fn = load_functional(args.submission)
    except BaseException as exc:
        send_msg(sock, {"ok": False, "kind": "submission_error", "message": str(exc) or type(exc).__name__})
        return 1
    from harness.contract import feature_name

    send_msg(sock, {"ok": True, "name": fn.name, "features": [feature_name(f) for f in fn.features],
                    "framework": getattr(fn.submission, "framework", None),
                    "batched_hvp": bool(getattr(fn, "batched_hvp", False))})
    Server(sock, fn).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
