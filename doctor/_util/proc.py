"""Child processes that can neither hang nor crash the doctor: a deadline on every wait, group kills.

Every child leads its own process group (start_new_session), so a kill at the deadline also takes
what it started: compilers, or a shell's grandchild that still holds our pipes. Two shapes:

- `run(argv, timeout)`: a short command whose whole output we read (nvidia-smi).
- `EventChild`: a long-lived Python child that reports JSON-lines events on an inherited file
  descriptor (child side: doctor._util.events); everything it prints lands in a temporary log whose
  tail is the evidence when it crashes. The caller reads events against its own deadlines, so it
  can blame a hang on the step that was running.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import tempfile
import time
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor._util.timeouts import TimedOut
from doctor.envvars import DOCTOR_EVENT_FD, PYTHONUNBUFFERED

GARBAGE_CHARS = 200  # of an unreadable event line, kept for the verdict


class Completed(NamedTuple):
    """What a short command left behind."""

    returncode: int  # negative: killed by that signal
    stdout: str  # decoded as UTF-8, undecodable bytes replaced
    stderr: str


def run(argv: Sequence[str], timeout: float, env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None) -> Completed:
    """Run argv (no shell) to completion; TimedOut after `timeout` s, its whole group killed; OSError if it cannot start."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=None if env is None else dict(env), cwd=cwd, start_new_session=os.name == "posix")
    try:
        out, err = proc.communicate(timeout=max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        kill_group(proc, reap=0.0)
        try:
            proc.communicate(timeout=0.5)
        except subprocess.TimeoutExpired:  # a grandchild that left our group still holds the pipes
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        raise TimedOut(f"no answer within {timeout:.1f} s, killed") from None
    return Completed(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def kill_group(proc: "subprocess.Popen[bytes]", reap: float = 10.0) -> None:
    """SIGKILL the child's process group (it leads one) and the child itself; wait up to `reap` s to reap it."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:  # already gone, or not a group leader after all
            pass
    try:
        proc.kill()
    except OSError:
        pass
    if reap > 0:
        try:
            proc.wait(timeout=reap)
        except subprocess.TimeoutExpired:
            pass


def signal_name(returncode: int) -> str:
    """'SIGSEGV' for -11."""
    try:
        return signal.Signals(-returncode).name
    except (ValueError, AttributeError):
        return f"signal {-returncode}"


def exit_reason(returncode: Optional[int]) -> str:
    """'killed by SIGSEGV', 'exit code 1' or 'did not exit'."""
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        return f"killed by {signal_name(returncode)}"
    return f"exit code {returncode}"


class EventChild:
    """A child process reporting JSON-lines events on an inherited descriptor, its output kept in a log."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Optional[str] = None) -> None:
        """Start argv with DOCTOR_EVENT_FD naming the write end of the channel; OSError if it cannot start."""
        rfd, wfd = os.pipe()
        self.log = tempfile.TemporaryFile(prefix="tune-doctor-child-")
        child_env = dict(env)
        child_env[DOCTOR_EVENT_FD] = str(wfd)
        child_env.setdefault(PYTHONUNBUFFERED, "1")
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                         env=child_env, cwd=cwd, pass_fds=(wfd,), start_new_session=True)
        except OSError:
            os.close(rfd)
            self.log.close()
            raise
        finally:
            os.close(wfd)  # the child holds the only write end: its exit is our EOF
        self._rfd = rfd
        self._buf = b""
        self._eof = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(rfd, selectors.EVENT_READ)

    def next_event(self, deadline: float) -> Tuple[str, Optional[dict]]:
        """('event', dict) | ('garbage', {'line': ...}) | ('timeout', None) | ('eof', None); deadline is monotonic."""
        while True:
            if b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    ev = json.loads(line.decode("utf-8"))
                    if not isinstance(ev, dict) or "event" not in ev:
                        raise ValueError
                except (ValueError, RecursionError):  # RecursionError: [[[[... deeper than the decoder goes
                    return "garbage", {"line": line[:GARBAGE_CHARS].decode("utf-8", "replace")}
                return "event", ev
            if self._eof:
                return "eof", None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            if not self._sel.select(timeout=min(remaining, 1.0)):
                continue
            chunk = os.read(self._rfd, 65536)
            if not chunk:
                self._eof = True
            self._buf += chunk

    def exit_code(self, wait: float = 10.0) -> int:
        """The child's exit status once it is gone (killed, -9, when it has not exited within `wait` s)."""
        try:
            return self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            return self.proc.returncode if self.proc.returncode is not None else -signal.SIGKILL

    def tail(self, chars: int = 2000) -> str:
        """The last `chars` characters the child printed (stdout and stderr)."""
        try:
            self.log.flush()
            size = os.fstat(self.log.fileno()).st_size
            self.log.seek(max(0, size - chars * 4))  # UTF-8: at most 4 bytes a character
            return self.log.read().decode("utf-8", "replace")[-chars:]
        except (OSError, ValueError):  # ValueError: the log is already closed
            return ""

    def kill(self) -> None:
        """Kill the child's whole group (if still running) and reap it."""
        if self.proc.poll() is None:
            kill_group(self.proc)

    def close(self) -> None:
        """Kill if still running, release the channel and the log."""
        self.kill()
        self._sel.close()
        try:
            os.close(self._rfd)
        except OSError:
            pass
        self.log.close()

    def __enter__(self) -> "EventChild":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
