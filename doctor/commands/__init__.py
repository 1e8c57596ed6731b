"""Subcommands of the `doctor` CLI: each module registers its parser and a `run(args) -> int`."""

from __future__ import annotations

import argparse

EXIT_CODES = """exit codes:
  0  healthy (nothing above info)
  1  warnings
  2  errors
  3  the doctor itself could not run (bad input, bad matrix data, internal error)"""

# Modules under doctor.commands, in `doctor --help` order.
COMMANDS = ("check", "probe", "cache",)


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every subcommand takes."""
    p.add_argument("--no-color", action="store_true", help="plain output (NO_COLOR is respected too)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
