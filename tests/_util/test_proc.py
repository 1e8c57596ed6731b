"""_util.proc: real child processes that hang, crash, garble their channel or leave grandchildren behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from doctor._util.events import FD_ENV
from doctor._util.proc import EventChild, exit_reason, run, signal_name
from doctor._util.timeouts import TimedOut
from tests.conftest import REPO

posix_only = pytest.mark.skipif(os.name != "posix", reason="process groups and signals")


def child(code: str) -> EventChild:
    """A Python child running `code` with the channel helper importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    prelude = "from doctor._util.events import open_channel\nch = open_channel()\n"
    return EventChild([sys.executable, "-c", prelude + code], env)


def test_run_returns_output_and_status() -> None:
    done = run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], 20)
    assert (done.returncode, done.stdout.strip(), done.stderr.strip()) == (3, "out", "err")


def test_run_that_cannot_start_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        run([str(tmp_path / "no-such-program")], 5)


@posix_only
def test_run_kills_a_hung_command_and_the_grandchild_holding_its_pipe(tmp_path: Path) -> None:
    """sh waits on `sleep`, which holds our stdout: the whole group goes at the deadline."""
    start = time.monotonic()
    with pytest.raises(TimedOut, match="within 0.5 s"):
        run(["sh", "-c", "sleep 30 & wait"], 0.5)
    assert time.monotonic() - start < 5
    start = time.monotonic()
    with pytest.raises(TimedOut):  # the subshell exits at once; its background sleep keeps the pipe open
        run(["sh", "-c", "(sleep 30 &); echo hi"], 0.5)
    assert time.monotonic() - start < 5


def test_events_in_order_and_prints_go_to_the_log() -> None:
    with child("print('noise on stdout')\nch.emit(event='a', n=1)\nch.emit(event='b')\n") as c:
        deadline = time.monotonic() + 20
        assert c.next_event(deadline) == ("event", {"event": "a", "n": 1})
        assert c.next_event(deadline) == ("event", {"event": "b"})
        assert c.next_event(deadline) == ("eof", None)
        assert c.exit_code() == 0
        assert "noise on stdout" in c.tail()


def test_garbage_on_the_channel_is_reported_not_raised() -> None:
    code = (f"import os\nfd = int(os.environ[{FD_ENV!r}])\nos.write(fd, b'\\x00not json\\n[1, 2]\\n')\n"
            "os.write(fd, b'[' * 200000 + b'\\n')\n")
    with child(code) as c:
        deadline = time.monotonic() + 20
        kind, ev = c.next_event(deadline)
        assert kind == "garbage" and ev is not None and "not json" in ev["line"]
        assert c.next_event(deadline)[0] == "garbage"  # JSON, but not an event
        assert c.next_event(deadline)[0] == "garbage"  # nested deeper than the decoder recurses


@posix_only
def test_a_crash_is_eof_with_the_signal_name_and_the_stderr_tail() -> None:
    with child("import sys, os\nch.emit(event='begin')\nprint('last words', file=sys.stderr, flush=True)\nos.abort()\n") as c:
        deadline = time.monotonic() + 20
        assert c.next_event(deadline)[0] == "event"
        assert c.next_event(deadline) == ("eof", None)
        code = c.exit_code()
        assert signal_name(code) == "SIGABRT" and exit_reason(code) == "killed by SIGABRT"
        assert "last words" in c.tail()


@posix_only
def test_a_hang_is_a_timeout_and_kill_takes_the_group(tmp_path: Path) -> None:
    """The child starts a grandchild and hangs: kill() ends both (the grandchild held the channel open too)."""
    pid_file = tmp_path / "grandchild.pid"
    code = (f"import subprocess, time\np = subprocess.Popen(['sleep', '60'])\nopen({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "ch.emit(event='started')\ntime.sleep(60)\n")
    with child(code) as c:
        assert c.next_event(time.monotonic() + 20)[0] == "event"
        start = time.monotonic()
        assert c.next_event(time.monotonic() + 0.5) == ("timeout", None)
        assert time.monotonic() - start < 5
        c.kill()
        grandchild = int(pid_file.read_text())
        for _ in range(100):  # reaped by init: give it a moment to disappear
            try:
                os.kill(grandchild, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the grandchild survived the group kill")


def test_the_channel_variable_is_the_one_envvars_names() -> None:
    """events.py cannot import doctor.envvars (it is loaded by path): the two spellings must agree."""
    from doctor.envvars import DOCTOR_EVENT_FD

    assert FD_ENV == DOCTOR_EVENT_FD


def test_exit_reasons() -> None:
    assert exit_reason(None) == "did not exit" and exit_reason(2) == "exit code 2"
    assert signal_name(-9) == "SIGKILL" and signal_name(-200) == "signal 200"


def test_a_child_that_cannot_start_leaves_nothing_open(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(OSError):
        EventChild([str(tmp_path / "no-such-python")], dict(os.environ))
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
