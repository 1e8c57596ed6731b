"""Calls that must not hang the doctor: a function run in a daemon thread, joined with a limit.

A thread costs well under a millisecond where a Python child process costs 20-40 ms, so it is the
tool for a filesystem call on a mount that may be stalled or a driver library that may hang. A call
stuck in the kernel stays behind as a daemon thread and is abandoned at exit: it cannot block it.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class TimedOut(Exception):
    """The call did not finish within its time limit."""


class Background(Generic[T]):
    """fn started now in a daemon thread; result() collects it later (so other work overlaps with it)."""

    def __init__(self, fn: Callable[[], T], name: str = "tune-doctor-call") -> None:
        self._box: Dict[str, object] = {}
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._box["value"] = fn()
        except BaseException as e:  # handed to the caller of result()
            self._box["error"] = e

    def result(self, timeout: float) -> T:
        """fn's result or its exception, or TimedOut when it is still running after `timeout` more seconds."""
        self._thread.join(max(timeout, 0.0))
        if self._thread.is_alive():
            raise TimedOut(f"no answer within {timeout:g} s")
        if "error" in self._box:
            raise self._box["error"]  # type: ignore[misc]
        return self._box["value"]  # type: ignore[return-value]


def call_with_timeout(fn: Callable[[], T], timeout: float, name: str = "tune-doctor-call") -> T:
    """fn's result or its exception, or TimedOut after `timeout` seconds (the thread is abandoned)."""
    return Background(fn, name).result(timeout)
