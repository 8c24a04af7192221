"""The ``harness`` command line: one module of this package per sub-command.

Each module in `COMMAND_MODULES` defines ``register(subparsers)``, which adds its sub-command
and sets ``func``; its heavy imports (torch, PySCF, the stage itself) stay inside the run
function, so ``harness --help`` stays fast. The modules are imported by name in
`build_parser`, never at the top of this file: a sub-command module may then import a
neighbour (``harness.cli.tddft`` reuses ``harness.cli.scf``) without an import cycle through
this ``__init__``. Helpers shared by several sub-commands live in the module that owns them.

Every error the harness raises on purpose derives from `harness.errors.HarnessError`;
`main` prints it as one line (``error: ...``) and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import harness
from harness.allocator import tune_allocator
from harness.errors import HarnessError

#: Modules that add sub-commands; each defines ``register(subparsers)``.
COMMAND_MODULES = (
    "harness.cli.reference",
    "harness.cli.scf",
    "harness.cli.evaluate",
    "harness.cli.tddft",
    "harness.cli.train",
    "harness.cli.leaderboard",
)

DESCRIPTION = """\
xc-harness scores machine-learned exchange-correlation functionals against
B3LYP/def2-SVP reference data (reference set g2-b3lyp-svp v1).

Run 'harness COMMAND --help' for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"xc-harness {harness.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # before torch allocates: keeps freed autograd arrays in the process
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun the same command to continue", file=sys.stderr)
        if argv is None:  # the console script: leave now. Every finished result is already on disk
            # (atomic writes), the workers are killed and the functional processes die with their
            # parents; waiting for the pool's threads at interpreter exit could take long on a
            # loaded machine.
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(130)
        return 130
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


__all__ = ["COMMAND_MODULES", "DESCRIPTION", "HarnessError", "build_parser", "main"]
