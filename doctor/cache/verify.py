"""Import every unsloth compiled module in a child process, with a timeout, attributing hangs and crashes.

The modules import torch, transformers, trl and unsloth_zoo, so they are never imported in the doctor.
One child imports them in turn (the heavy imports are paid once); it announces each module before
importing it, so when the child hangs (no answer within the per-module timeout: killed) or dies (a
segfault, an abort), the module that was running is blamed and a fresh child continues with the rest.
When unsloth is installed it is imported first, as a training script does (unsloth_zoo refuses to be
imported without it), under its own, longer, timeout.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

CHILD = Path(__file__).with_name("_verify_child.py")
MODULE_TIMEOUT = 60.0
PRELOAD_TIMEOUT = 300.0  # cold `import unsloth` was seen at 33-43 s; leave room for slow disks
STARTUP_TIMEOUT = 30.0


class ModuleResult(NamedTuple):
    """The verdict on one module."""

    path: str
    status: str  # ok, syntax-error, import-error, exec-error, incomplete, unreadable, timeout, crash,
    #              missing-dependency, not-run (the preload failed or hung)
    error: str = ""
    where: str = ""  # file:line inside the module, when known
    dependency: str = ""  # for missing-dependency
    seconds: float = 0.0

    @property
    def broken(self) -> bool:
        """The module itself is at fault."""
        return self.status in ("syntax-error", "import-error", "exec-error", "incomplete", "unreadable",
                               "timeout", "crash")


def _reader(stream, q: "queue.Queue[Optional[dict]]") -> None:  # type: ignore[no-untyped-def]
    """Forward protocol lines to the queue; None at EOF."""
    for line in stream:
        try:
            q.put(json.loads(line))
        except ValueError:
            continue
    q.put(None)


def _kill(proc: "subprocess.Popen[str]") -> None:
    """Kill the child and anything it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: str, n: int = 8000, keep: int = 6, focus: str = "") -> str:
    """A child's stderr on one line: the fatal error and the frames in `focus` (a module path), else its last lines."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - n))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if focus:
        picked = [ln for ln in lines if ln.startswith("Fatal Python error") or focus in ln]
        if picked:
            return " | ".join(picked[:keep])[:600]
    return " | ".join(lines[-keep:])[:600]


def _signal_name(rc: Optional[int]) -> str:
    """'killed by SIGSEGV' / 'exit code 1'."""
    if rc is None:
        return "did not exit"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def verify_modules(root: str, modules: Sequence[str], python: Optional[str] = None, cwd: Optional[str] = None,
                   timeout: float = MODULE_TIMEOUT, preload: Sequence[str] = (),
                   preload_timeout: float = PRELOAD_TIMEOUT) -> Tuple[List[ModuleResult], str]:
    """Import-check modules (paths inside root); (results in input order, a note when some could not be checked)."""
    python = python or sys.executable
    pending: List[Tuple[int, str]] = list(enumerate(modules))
    results: dict = {}
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never leave __pycache__ in someone's cache
    env["PYTHONFAULTHANDLER"] = "1"  # a segfault prints the Python stack to stderr: evidence
    env.pop("PYTHONSTARTUP", None)
    stop = ""
    while pending and not stop:
        stop = _one_child(python, root, cwd, env, pending, results, timeout, preload, preload_timeout)
        left = [(idx, p) for idx, p in pending if idx not in results]
        if not stop and len(left) == len(pending):  # no progress at all: do not spin
            stop = "the checking process ended without checking anything"
        pending = left
    for idx, path in pending:
        # the import check could not run (unsloth itself failed to import, say): a syntax check
        # still proves truncated or corrupt files, without executing anything
        results[idx] = syntax_only(path) or ModuleResult(path, "not-run", stop)
    return [results[i] for i in range(len(modules))], stop


def syntax_only(path: str) -> Optional[ModuleResult]:
    """A syntax-error verdict from compiling (never running) the file, or None when it compiles."""
    try:
        with open(path, "rb") as fh:
            source = fh.read(16 * 1024 * 1024)
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return ModuleResult(path, "syntax-error", f"{type(exc).__name__}: {exc.msg}",
                            f"{os.path.basename(path)}:{exc.lineno}" if exc.lineno else "")
    except (OSError, ValueError):  # unreadable, or NUL bytes: the child path reports these when it runs
        return None
    return None


def _one_child(python: str, root: str, cwd: Optional[str], env: dict, pending: List[Tuple[int, str]], results: dict,
               timeout: float, preload: Sequence[str], preload_timeout: float) -> str:
    """Run one child over `pending`, filling `results`; returns why nothing more can be checked, or ''."""
    cfg = {"root": root, "preload": list(preload), "modules": [[Path(p).stem, p] for _, p in pending]}
    fd, errpath = tempfile.mkstemp(prefix="tune-doctor-verify-", suffix=".err")
    proc: "Optional[subprocess.Popen[str]]" = None
    try:
        with os.fdopen(fd, "wb") as err:
            try:
                proc = subprocess.Popen([python, str(CHILD), json.dumps(cfg)], stdout=subprocess.PIPE, stderr=err,
                                        stdin=subprocess.DEVNULL, cwd=cwd if cwd and os.path.isdir(cwd) else None,
                                        env=env, text=True, encoding="utf-8", errors="replace", start_new_session=True)
            except OSError as exc:
                return f"cannot start {python}: {exc.strerror or exc}"
        q: "queue.Queue[Optional[dict]]" = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
        current: Optional[int] = None  # position in `pending` of the module being imported
        phase, started = "startup", time.monotonic()
        deadline = started + STARTUP_TIMEOUT
        stop = ""
        while True:
            try:
                ev = q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:  # out of time in this phase: blame the module (or the preload) and stop this child
                _kill(proc)
                if phase == "module" and current is not None:
                    idx, path = pending[current]
                    results[idx] = ModuleResult(path, "timeout", f"import did not finish within {timeout:g} s",
                                                seconds=time.monotonic() - started)
                elif phase == "preload":
                    stop = f"importing {', '.join(preload)} first did not finish within {preload_timeout:g} s"
                else:
                    stop = f"the checking process stopped answering ({phase})"
                return stop
            if ev is None:  # EOF: finished, or died
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _kill(proc)
                if phase == "module" and current is not None:
                    idx, path = pending[current]
                    tail = _tail(errpath, focus=path)
                    results[idx] = ModuleResult(path, "crash", f"the importing process died ({_signal_name(proc.returncode)})"
                                                + (f": {tail}" if tail else ""), seconds=time.monotonic() - started)
                elif phase in ("startup", "preload") and not stop:
                    tail = _tail(errpath)
                    stop = f"the checking process ended early ({_signal_name(proc.returncode)})" + (f": {tail}" if tail else "")
                return stop
            kind = ev.get("event")
            if kind == "preload-start":
                phase, deadline = "preload", time.monotonic() + preload_timeout
            elif kind == "preload-done":
                if ev.get("ok"):
                    phase, deadline = "between", time.monotonic() + STARTUP_TIMEOUT
                else:
                    stop = f"importing {ev.get('name')} failed before any module: {ev.get('error', '')}"
                    phase = "done"
            elif kind == "start":
                current = int(ev["i"])
                phase, started = "module", time.monotonic()
                deadline = started + timeout
            elif kind == "done":
                idx, path = pending[int(ev["i"])]
                results[idx] = ModuleResult(path, str(ev.get("status", "?")), str(ev.get("error", "")),
                                            str(ev.get("where", "")), str(ev.get("dependency", "")),
                                            time.monotonic() - started)
                current = None
                phase, deadline = "between", time.monotonic() + STARTUP_TIMEOUT
    finally:
        if proc is not None and proc.poll() is None:
            _kill(proc)
        try:
            os.unlink(errpath)
        except OSError:
            pass
