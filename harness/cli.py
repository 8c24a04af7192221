"""The ``harness`` command line. Each stage registers its own sub-commands (see COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import importlib
import sys

import harness

#: Modules that add sub-commands; each defines ``register(subparsers)``.
COMMAND_MODULES = (
    "harness.reference.cli",
    "harness.scf_cli",
    "harness.evaluate_cli",
    "harness.tddft_cli",
    "harness.train_cli",
    "harness.leaderboard_cli",
)

DESCRIPTION = """\
xc-harness scores machine-learned exchange-correlation functionals against
B3LYP/def2-SVP reference data (reference set g2-b3lyp-svp v1).

Run 'harness COMMAND --help' for the options of each command."""


class HarnessError(Exception):
    """An error the CLI reports as one clear line and exit status 1."""


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun the same command to continue", file=sys.stderr)
        return 130
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
