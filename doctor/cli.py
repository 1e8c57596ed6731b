"""Command line: parse, call the library, render. No logic lives here; subcommands are in doctor.commands."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from typing import List, Optional, Sequence

from doctor._version import __version__
from doctor.commands import COMMANDS, EXIT_CODES, Parser
from doctor.errors import DoctorError
from doctor.exits import ExitCode


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The argument parser for `doctor` (usage errors exit 3, see doctor.commands.Parser).

    Given the arguments, only the invoked subcommand's parser is built: each one imports its command module,
    and building all of them cost a few ms of every `doctor check`. No argv (and `doctor --help`, an
    unknown or missing command) builds every subcommand, so help and "invalid choice" list them all.
    """
    p = Parser(
        prog="doctor",
        description="tune-doctor: find and fix what breaks GPU fine-tuning environments before training starts.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tune-doctor {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in _invoked(argv) or COMMANDS:
        importlib.import_module(f"doctor.commands.{name}").add_parser(sub)
    return p


def _invoked(argv: Optional[Sequence[str]]) -> Sequence[str]:
    """(command,) when argv names a known subcommand, else (): the first argument that is not an option.

    The top-level options (--version, --debug, -h) take no value, so the first non-option is the command.
    A help request anywhere before it needs the full list.
    """
    if argv is None:
        return ()
    for arg in argv:
        if arg == "--":
            return ()
        if not arg.startswith("-"):
            return (arg,) if arg in COMMANDS else ()
        if arg in ("-h", "--help"):
            return ()
    return ()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `doctor` console script; returns the exit code (doctor.exits.ExitCode)."""
    if argv is None:
        # Run as a program (console script, `python -m doctor`). Imports and module set-up allocate tens of
        # thousands of long-lived objects, and the default young-generation threshold (700) walks them again
        # and again (~3 ms of a 0.1 s `doctor check`); a larger one still collects cycles in long commands.
        # Not for main(argv) calls (tests, embedding): their process keeps its own settings.
        gc.set_threshold(50_000)
    code = int(_main(argv))  # a plain int: callers print it, and IntEnum's str() differs before 3.11
    if argv is None:
        # The process ends right after this. Freezing the heap keeps the interpreter's collections at exit
        # from walking every object the run made (~7 ms of a `doctor check` on a 2-core box); refcounting
        # still frees them, atexit still runs.
        gc.freeze()
    return code


def _parser_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)command's parser that args were parsed by (`doctor cache status` -> its own)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _parser_of(action.choices[chosen], args)
    return parser


def _main(argv: Optional[List[str]]) -> int:
    """Parse, run the subcommand, and turn every way it can end into its exit code."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(args_list)
    args, extra = parser.parse_known_args(args_list)
    if extra:  # argparse would blame the top-level parser; the hint should name the subcommand's own help
        _parser_of(parser, args).error("unrecognized arguments: " + " ".join(extra))
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
