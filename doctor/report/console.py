"""The rich Console every renderer prints to: wrapped to a real terminal's width, never in a pipe or log.

rich wraps at 80 columns when its output is not a terminal, and pads lines with spaces. Pasted from a CI
log, a fix command wrapped over two lines runs a partial `pip install`, so output that is not a terminal
gets a width no line reaches (soft wrap: nothing is cut or folded) and trailing spaces stripped. On a
terminal rich wraps prose to the window; fix commands are printed with `print_command` (never wrapped).
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, TYPE_CHECKING, Any, Optional, cast

from doctor._util.regex import lazy

if TYPE_CHECKING:  # rich is imported lazily: the --json path never pays for it
    from rich.console import Console

# Wide enough that no report line reaches it; rich allocates nothing per column, so it costs nothing.
UNWRAPPED_WIDTH = 1_000_000

# Spaces at the end of a line, possibly followed by style resets (colour forced on in a CI log).
_TRAILING = lazy(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$")


def console(args: Optional[argparse.Namespace] = None, stderr: bool = False, file: Optional[IO[str]] = None) -> "Console":
    """A Console on stdout (or stderr, or `file`) honouring --no-color; NO_COLOR is honoured by rich itself."""
    from rich.console import Console

    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    no_color = bool(getattr(args, "no_color", False)) or None
    if _is_terminal(stream):
        return Console(file=stream, no_color=no_color, highlight=False)
    return Console(file=cast(IO[str], StripTrailing(stream)), no_color=no_color, highlight=False, width=UNWRAPPED_WIDTH,
                   soft_wrap=True)


def print_command(con: "Console", text: Any, indent: int = 0) -> None:
    """Print a line that must survive copy and paste (a fix command): never wrapped, even on a terminal."""
    from rich.text import Text

    line = Text(" " * indent) + (text if isinstance(text, Text) else Text(str(text)))
    con.print(line, soft_wrap=True)


def _is_terminal(stream: Any) -> bool:
    """Whether the stream really is a terminal (FORCE_COLOR may make rich treat a CI log as one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or odd file objects
        return False


class StripTrailing:
    """A text stream wrapper that removes trailing spaces from every line it passes on."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._pending = ""  # the start of a line whose end has not been written yet

    def write(self, text: str) -> int:
        """Pass complete lines on, stripped; keep the last partial line until its end (or a flush)."""
        data = self._pending + text
        head, sep, self._pending = data.rpartition("\n")
        if sep:
            self._stream.write("\n".join(_TRAILING.sub(r"\1", line) for line in head.split("\n")) + "\n")
        return len(text)

    def flush(self) -> None:
        """Write a pending partial line as it is (a prompt), then flush the stream."""
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...: the wrapped stream's
        return getattr(self._stream, name)
