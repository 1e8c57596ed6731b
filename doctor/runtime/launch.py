"""The hand-off of `doctor run`: caches pinned, the runtime patched in, then the user's script as `__main__`.

    python -m doctor.runtime.launch [--debug] [--] SCRIPT [ARGS...]

`doctor run` checks the environment, then replaces its own process with this module (os.execv), so the
script runs in a fresh interpreter that holds none of the check's state (its modules, its gc settings),
with the doctor's pid, terminal and signals. In order, before any line of the script runs:
1. each compiled cache the script's libraries will write (unsloth's compiled modules, Triton's kernels,
   TorchInductor's) is pointed at an absolute directory this user owns and can write (checked for real, with
   a time limit): a relative location is pinned where it resolves now, an unusable one moves to the
   doctor's per-user suggestion (doctor.cache.roots). Set in this process's environment only, one line each.
2. the runtime's class-level patches (doctor.runtime.patch_llama_family) are applied, so the script's own
   `import transformers` comes too late to matter: import order is right by construction.
3. the script runs through runpy as `__main__`, with sys.argv = [SCRIPT, *ARGS] and its directory first on
   sys.path, as `python SCRIPT ARGS` would.

Exit code (the contract `doctor run` passes on): the script's. SystemExit is honoured as Python does (None 0,
an int as is, anything else printed to stderr and 1); an exception prints its traceback (through
sys.excepthook, from the script's first frame on) and gives 1; Ctrl-C gives 130. The launcher's own failures:
3 for a script that cannot be read or a DOCTOR_BACKEND_<OP> the runtime refuses, 4 when the runtime cannot
patch (one line; --debug shows the traceback).
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Dict, List, MutableMapping, NamedTuple, Optional, Sequence, Tuple

from doctor.errors import DoctorError
from doctor.exits import ExitCode

CACHE_KINDS = ("unsloth", "triton", "inductor")  # the compiled caches a training script's libraries write
_OWNERS = {"unsloth": ("unsloth", "unsloth_zoo"), "triton": ("triton",), "inductor": ("torch",)}  # import names
_RUNTIME_NEEDS = ("torch", "transformers")  # without them there is nothing to patch (not a failure of the runtime)
PREFIX = "doctor run: "  # every line the launcher prints (stderr: stdout belongs to the script)


class CacheSetting(NamedTuple):
    """A compiled cache the launcher pointed somewhere else."""

    var: str  # the variable set (UNSLOTH_COMPILE_LOCATION, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR)
    path: str  # the absolute, verified directory it now holds
    why: str  # what was wrong with the location before ("relative to the working directory", ...)


def _installed(kind: str) -> bool:
    """Whether a library that writes this cache is installed (found on sys.path, never imported)."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in _OWNERS[kind])


def _problem(path: str) -> str:
    """Why `path` cannot hold this user's cache ('' when it can): ours (or not there yet) and written to for real."""
    import stat
    from pathlib import Path

    from doctor.cache.location import try_write

    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        return e.strerror or str(e)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            return "not a directory"
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            return "owned by another user"  # their files would be loaded as compiled code
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            return "writable by every user"
    check = try_write(Path(path))
    return "" if check.writable else (check.detail or check.status.replace("-", " "))


def _verified_problem(path: str, timeout: float) -> str:
    """_problem() with a time limit: a stalled mount is a problem, not a hang."""
    import functools

    from doctor._util.timeouts import TimedOut, call_with_timeout

    try:
        return call_with_timeout(functools.partial(_problem, path), timeout)
    except TimedOut:
        return f"no answer within {timeout:g} s (a stalled filesystem?)"


def pin_caches(env: Optional[MutableMapping[str, str]] = None, cwd: Optional[str] = None, timeout: float = 2.0,
               kinds: Sequence[str] = CACHE_KINDS) -> List[CacheSetting]:
    """Point each installed library's compiled cache at an absolute, write-checked directory this user owns.

    A usable location is kept (a relative one is pinned where it resolves now, so a later chdir cannot move
    it); an unusable one moves to doctor.cache.roots.suggest_location. Sets the variables in `env` (default
    os.environ) and returns what it set; when no candidate passes, the setting is left alone.
    """
    from doctor.cache.roots import resolve_roots, suggest_location

    env = os.environ if env is None else env
    out: List[CacheSetting] = []
    for root in resolve_roots(env, cwd, [k for k in kinds if _installed(k)]):
        if root.role != "primary":
            continue  # unsloth's temp fallback follows its primary location
        problem = _verified_problem(root.path, timeout)
        if not problem and not root.relative:
            continue
        if not problem:
            env[root.env_var] = root.path
            out.append(CacheSetting(root.env_var, root.path, f"was {root.source}, relative to the working directory"))
            continue
        new = suggest_location(root.kind, avoid=root.path, timeout=timeout)
        if _verified_problem(new, timeout):
            continue  # nothing better: the library reports its own failure, `doctor check` explains it
        env[root.env_var] = new
        out.append(CacheSetting(root.env_var, new, f"{root.path} ({root.source}): {problem}"))
    return out


def apply_patches() -> str:
    """Apply the runtime's class-level patches; one line saying what happened (the patch's ImportError propagates)."""
    import doctor.runtime

    doctor.runtime.patch_llama_family()
    return "the runtime's class-level patches are in force"


def _exit_code(exc: SystemExit) -> int:
    """The process exit code Python gives an uncaught SystemExit (printing a non-int code, as Python does)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):  # the OS keeps the low 8 bits, as it does for `python script.py`
        return int(code)
    sys.stderr.write(f"{code}\n")
    return 1


def _script_frames(tb: Optional[TracebackType], script: str) -> Optional[TracebackType]:
    """The traceback from the script's first frame on (runpy and the launcher are not the user's code)."""
    t = tb
    while t is not None and os.path.abspath(t.tb_frame.f_code.co_filename) != script:
        t = t.tb_next
    return t


def run_script(script: str, args: Sequence[str]) -> int:
    """Run `script` as `__main__` with sys.argv [script, *args], as `python script args` would; its exit code."""
    import runpy

    path = os.path.abspath(script)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where doctor is imported from
    first = sys.path[0] if sys.path else ""
    sys.path[0:1] = [os.path.dirname(path)]  # `python script.py` puts the script's directory first
    if os.path.abspath(first or os.curdir) == here and here not in sys.path:
        sys.path.append(here)  # the doctor itself came from there (a source checkout): keep its lazy imports working
    sys.argv = [script, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt as exc:
        _report(exc, path)
        return int(ExitCode.INTERRUPTED)
    except BaseException as exc:  # the script's own failure: its traceback, as Python prints it
        _report(exc, path)
        return 1
    return 0


def _report(exc: BaseException, path: str) -> None:
    """Print an uncaught exception through sys.excepthook (the script may have installed its own), script frames only."""
    tb = _script_frames(exc.__traceback__, path)
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)  # the hook reads the exception's own __traceback__


def launch(script: str, args: Sequence[str] = (), debug: bool = False) -> int:
    """Pin the compiled caches, patch the runtime in, run the script as `__main__`; the script's exit code."""
    if not os.path.isfile(script):
        sys.stderr.write(f"{PREFIX}error: no such script: {script}\n")
        return int(ExitCode.BAD_INPUT)
    for s in pin_caches():
        sys.stderr.write(f"{PREFIX}{s.var}={s.path} ({s.why})\n")
    try:
        line = apply_patches()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _RUNTIME_NEEDS:
            return _internal(exc, debug)
        line = f"the runtime's patches are not applied: {exc}"  # nothing to patch; the script says what it needs
    except DoctorError as exc:  # the user's input (a DOCTOR_BACKEND_<OP> the runtime refuses): bad input, not a bug
        sys.stderr.write(f"{PREFIX}error: {exc}\n")
        return int(ExitCode.BAD_INPUT)
    except Exception as exc:
        return _internal(exc, debug)
    sys.stderr.write(f"{PREFIX}{line}; starting {script}\n")
    sys.stderr.flush()
    return run_script(script, args)


def _internal(exc: BaseException, debug: bool) -> int:
    """A runtime that cannot patch: one line and exit 4 (--debug: the traceback), never a silent unpatched run."""
    if debug:
        raise exc
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    sys.stderr.write(f"{PREFIX}internal error: the runtime could not patch: {text} (rerun with --debug and report "
                     "it; `python SCRIPT` runs it unpatched)\n")
    return int(ExitCode.INTERNAL)


def command(script: str, args: Sequence[str], debug: bool = False, python: Optional[str] = None) -> Tuple[str, List[str]]:
    """(executable, argv) that runs `launch` in a fresh interpreter (what `doctor run` execs)."""
    exe = python or sys.executable
    opts = ["--debug"] if debug else []
    return exe, [exe, "-m", "doctor.runtime.launch", *opts, "--", script, *args]


def hand_off(script: str, args: Sequence[str], debug: bool = False, env: Optional[Dict[str, str]] = None) -> int:
    """Replace this process with the launcher (POSIX); elsewhere run it as a child. Returns only off POSIX."""
    exe, argv = command(script, args, debug)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # what the doctor printed must come out before the new program image
    if os.name == "posix":
        os.execve(exe, argv, dict(os.environ if env is None else env))
    import subprocess

    return subprocess.call(argv, env=env)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m doctor.runtime.launch [--debug] [--] SCRIPT [ARGS...]`."""
    rest = list(sys.argv[1:] if argv is None else argv)
    flags = {"--debug": False}
    while rest and rest[0] in flags:
        flags[rest.pop(0)] = True
    if rest and rest[0] == "--":
        rest.pop(0)
    if not rest:
        sys.stderr.write(f"{PREFIX}error: usage: python -m doctor.runtime.launch [--debug] [--] SCRIPT [ARGS...]\n")
        return int(ExitCode.BAD_INPUT)
    return launch(rest[0], rest[1:], debug=flags["--debug"])


if __name__ == "__main__":
    sys.exit(main())
