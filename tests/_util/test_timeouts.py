"""_util.timeouts: a call that hangs is abandoned at its limit; results and errors come back to the caller."""

from __future__ import annotations

import threading

import pytest

from doctor._util.timeouts import Background, TimedOut, call_with_timeout


def test_value_error_and_timeout() -> None:
    assert call_with_timeout(lambda: 42, 5) == 42
    with pytest.raises(KeyError):
        call_with_timeout(lambda: {}["missing"], 5)
    never = threading.Event()
    with pytest.raises(TimedOut, match="within 0.1 s"):
        call_with_timeout(never.wait, 0.1)
    never.set()


def test_background_overlaps_with_other_work() -> None:
    """Started at once, collected later: the caller's own work runs meanwhile."""
    go = threading.Event()
    pending = Background(lambda: go.wait(10) and "done")
    with pytest.raises(TimedOut):
        pending.result(0.05)  # still waiting on us
    go.set()
    assert pending.result(5) == "done"
