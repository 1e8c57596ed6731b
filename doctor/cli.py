"""Command line: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from doctor import __version__
from doctor.errors import DoctorError

EXIT_CODES = """exit codes:
  0  healthy (nothing above info)
  1  warnings
  2  errors
  3  the doctor itself could not run (bad input, bad matrix data, internal error)"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `doctor`."""
    p = argparse.ArgumentParser(
        prog="doctor",
        description="tune-doctor: find and fix what breaks GPU fine-tuning environments before training starts.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tune-doctor {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("check", help="inventory + compatibility matrix: what is wrong, why, and the exact fix",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable report (has a schema_version)")
    out.add_argument("--markdown", action="store_true", help="Markdown to paste into a bug report")
    c.add_argument("-v", "--verbose", action="store_true", help="evidence and explanation for every finding")
    c.add_argument("--script", action="append", default=[], metavar="PATH",
                   help="also check the import order of a training script or notebook (parsed, never run); repeatable")
    c.add_argument("--no-color", action="store_true", help="plain output (NO_COLOR is respected too)")
    c.add_argument("--gpu-timeout", type=float, default=3.0, metavar="S", help="limit for nvidia-smi (default 3 s)")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _check(args: argparse.Namespace) -> int:
    """Run `doctor check` and print the report in the chosen format."""
    from doctor.check import run_check

    report = run_check(scripts=args.script, debug=bool(getattr(args, "debug", False)), gpu_timeout=args.gpu_timeout)
    if args.json:
        from doctor.report import to_json

        sys.stdout.write(to_json(report) + "\n")
    elif args.markdown:
        from doctor.report import to_markdown

        sys.stdout.write(to_markdown(report))
    else:
        from rich.console import Console

        from doctor.report import render_text

        render_text(report, Console(no_color=args.no_color or None, highlight=False), verbose=args.verbose)
    return report.exit_code


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `doctor` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "check":
            return _check(args)
        parser.error(f"unknown command {args.command}")
    except DoctorError as exc:
        if debug:
            raise
        print(f"doctor: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("doctor: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for the user; --debug shows it
        if debug:
            raise
        print(f"doctor: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", file=sys.stderr)
        return 3
    return 0
