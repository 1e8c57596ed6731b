"""Subcommands of the `doctor` CLI: each module registers its parser and a `run(args) -> int`.

What they share lives here: the parser class (usage errors are bad input, exit 3, in one line),
option value types that refuse nonsense while parsing, and the options every subcommand takes.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn

from doctor.exits import ExitCode, epilog

# Modules under doctor.commands, in `doctor --help` order.
COMMANDS = ("check", "probe", "cache", "pin", "install", "matrix", "serve", "run", "train",)

# The top-level epilog (every code any command can return); each subcommand lists its own.
EXIT_CODES = epilog(tuple(ExitCode))


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 3 (argparse's 2 means "errors found" here).

    Subparsers are made with the parent's class, so `doctor check --frob` and `doctor --frob` alike
    end here: unknown and conflicting options, missing and malformed values.
    """

    def error(self, message: str) -> NoReturn:
        """One line, `doctor: error: ...` like every other bad input, then exit 3."""
        self.exit(ExitCode.BAD_INPUT, f"doctor: error: {message} (see `{self.prog} --help`)\n")


def seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type): rejects abc, NaN, inf, zero, negatives, > 1e6."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 0 < value < 1e6):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def count_at_least(low: int) -> Callable[[str], int]:
    """An argparse type for an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every subcommand takes."""
    p.add_argument("--no-color", action="store_true", help="plain output (NO_COLOR is respected too)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def stdin_is_terminal() -> bool:
    """Whether a confirmation prompt can be answered (a person at a terminal)."""
    return bool(sys.stdin and sys.stdin.isatty())
