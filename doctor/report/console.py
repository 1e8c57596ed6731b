"""The rich Console every renderer prints to."""

from __future__ import annotations

import argparse


def console(args: argparse.Namespace, stderr: bool = False):  # type: ignore[no-untyped-def]
    """A rich Console honouring --no-color (NO_COLOR is honoured by rich itself)."""
    from rich.console import Console

    return Console(stderr=stderr, no_color=getattr(args, "no_color", False) or None, highlight=False)
