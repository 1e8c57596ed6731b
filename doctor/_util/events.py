"""The child side of an event channel: JSON lines on a file descriptor inherited from the parent.

The parent (doctor._util.proc.EventChild) names the descriptor in DOCTOR_EVENT_FD. Events never go
to stdout: a library printing there cannot corrupt the protocol, and `open_channel` sends whatever
is printed to stdout on to stderr, i.e. into the log whose tail the parent keeps as evidence.

Stdlib only, importing nothing of the doctor: a child running under an interpreter where the doctor
is not installed (the cache verify child) loads this file by its path.
"""

import json
import os
from typing import Any, Optional, TextIO

FD_ENV = "DOCTOR_EVENT_FD"  # doctor.envvars.DOCTOR_EVENT_FD, spelled out: this file imports nothing of the doctor


class Channel:
    """Where a child writes its events."""

    def __init__(self, stream: TextIO) -> None:
        self._out = stream

    def emit(self, **event: Any) -> None:
        """One event as one JSON line, flushed at once so the parent sees progress as it happens."""
        self._out.write(json.dumps(event, default=str) + "\n")
        self._out.flush()


def open_channel(fd: Optional[int] = None) -> Channel:
    """The parent's channel (fd, else the one named by DOCTOR_EVENT_FD); stdout joins stderr from here on."""
    out = os.fdopen(int(os.environ[FD_ENV]) if fd is None else fd, "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # what anything prints on stdout lands in the log, never on the channel
    return Channel(out)
