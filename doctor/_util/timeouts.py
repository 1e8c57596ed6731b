"""Calls that must not hang the doctor: a function run in a daemon thread, joined with a limit.

A thread costs well under a millisecond where a Python child process costs 20-40 ms, so it is the
tool for a filesystem call on a mount that may be stalled or a driver library that may hang. A call
stuck in the kernel stays behind as a daemon thread and is abandoned at exit: it cannot block it.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, TypeVar

T = TypeVar("T")


class TimedOut(Exception):
    """The call did not finish within its time limit."""


def call_with_timeout(fn: Callable[[], T], timeout: float, name: str = "tune-doctor-call") -> T:
    """fn's result or its exception, or TimedOut after `timeout` seconds (the thread is abandoned)."""
    box: Dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    t.join(max(timeout, 0.0))
    if t.is_alive():
        raise TimedOut(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
