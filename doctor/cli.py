"""Command line: parse, call the library, render. No logic lives here; subcommands are in doctor.commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from doctor._version import __version__
from doctor.commands import COMMANDS, EXIT_CODES, Parser
from doctor.errors import DoctorError
from doctor.exits import ExitCode


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `doctor` (usage errors exit 3, see doctor.commands.Parser)."""
    p = Parser(
        prog="doctor",
        description="tune-doctor: find and fix what breaks GPU fine-tuning environments before training starts.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tune-doctor {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"doctor.commands.{name}").add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `doctor` console script; returns the exit code (doctor.exits.ExitCode)."""
    return int(_main(argv))  # a plain int: callers print it, and IntEnum's str() differs before 3.11


def _main(argv: Optional[List[str]]) -> int:
    """Parse, run the subcommand, and turn every way it can end into its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if args.command is None:
        parser.print_help()
        return ExitCode.HEALTHY
    try:
        return args.run(args)
    except DoctorError as exc:
        if debug:
            raise
        print(f"doctor: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print("doctor: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `doctor check --json | head`: the reader left; not the doctor's failure
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return ExitCode.HEALTHY
    except Exception as exc:  # never a traceback for the user; --debug shows it
        if debug:
            raise
        text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the message holds
        print(f"doctor: internal error: {text} (rerun with --debug and report it)", file=sys.stderr)
        return ExitCode.INTERNAL
