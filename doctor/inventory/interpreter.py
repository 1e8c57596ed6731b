"""Another interpreter's environment, asked of that interpreter (`doctor check --python PATH`).

The doctor does not have to be installed in the environment it checks, as `uv pip --python` works: a
stdlib-only child of the target interpreter prints its sys.path, prefixes, version and marker
environment as one JSON line, with a timeout, and the inventory then reads that environment's files as
usual. The child imports nothing but the stdlib (json, os, platform, sys) and never the packages it
would report on, so a broken torch cannot hang or crash it. It runs with the caller's environment
variables, as the user's training run would (PYTHONPATH and the user site count), but without a
script directory on sys.path.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

from doctor.errors import DoctorError
from doctor.facts import PythonInfo

TIMEOUT = 20.0  # a cold interpreter on a network filesystem can take seconds; a hung one must not hang us

# Stdlib only, valid on every Python 3; prints one JSON object. The marker keys are PEP 508's
# (packaging.markers.default_environment computes the same from the running interpreter).
_CHILD = r"""
import json, os, platform, sys
impl = sys.implementation
iv = impl.version
iver = "%d.%d.%d" % (iv.major, iv.minor, iv.micro)
if iv.releaselevel != "final":
    iver += iv.releaselevel[0] + str(iv.serial)
markers = {
    "implementation_name": impl.name,
    "implementation_version": iver,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
print(json.dumps({
    "tune_doctor_interpreter": 1,
    "executable": sys.executable,
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "version": "%d.%d.%d" % sys.version_info[:3],
    "implementation": platform.python_implementation(),
    "path": [p for p in sys.path if p],
    "markers": markers,
}))
"""


class Interpreter(NamedTuple):
    """What a target interpreter said about itself."""

    python: PythonInfo  # version, implementation, executable, prefixes
    path: Tuple[str, ...]  # its sys.path (no script directory): where its distributions live
    markers: Mapping[str, str]  # PEP 508 marker environment, for requirements' markers


def ask_interpreter(python: str, timeout: float = TIMEOUT, environ: Optional[Mapping[str, str]] = None) -> Interpreter:
    """Run `python` once (stdlib-only child) and return its environment; DoctorError with one line otherwise."""
    exe = _executable(python)
    env = dict(os.environ if environ is None else environ)
    env.pop("PYTHONSTARTUP", None)  # an interactive startup file has no business in a probe of sys.path
    from doctor._util.proc import run  # lazy: subprocess is not needed without --python
    from doctor._util.timeouts import TimedOut

    try:  # its own process group: a wrapper script's children die with it at the timeout
        proc = run([exe, "-c", _CHILD], timeout, env=env, cwd=os.path.dirname(exe) or None)
    except TimedOut:
        raise DoctorError(f"--python {python}: no answer within {timeout:g} s") from None
    except OSError as exc:  # not executable, a bad ELF, ...
        raise DoctorError(f"--python {python}: cannot run it: {exc.strerror or exc}") from None
    doc = _parse(proc.stdout)
    if doc is None:
        err = proc.stderr.strip().splitlines()
        why = f"exit {proc.returncode}" + (f": {err[-1][:200]}" if err else "")
        raise DoctorError(f"--python {python}: not a working Python 3 interpreter ({why})")
    return _interpreter(doc, python)


def _executable(python: str) -> str:
    """An absolute path to an executable file, found on PATH for a bare name ("python3.12")."""
    import shutil

    path = python if os.sep in python else (shutil.which(python) or "")
    if not path:
        raise DoctorError(f"--python {python}: not found on PATH")
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        # a virtual environment's directory: its interpreter, as `uv pip --python .venv` accepts
        for cand in (os.path.join(path, "bin", "python"), os.path.join(path, "Scripts", "python.exe")):
            if os.path.isfile(cand):
                return cand
        raise DoctorError(f"--python {python}: a directory without bin/python")
    if not os.path.exists(path):
        raise DoctorError(f"--python {python}: no such file")
    if not os.access(path, os.X_OK):
        raise DoctorError(f"--python {python}: not executable")
    return path


def _parse(stdout: str) -> Optional[Dict[str, object]]:
    """The child's JSON object (the last line that is one), or None."""
    for line in reversed(stdout.splitlines()):
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: absurd nesting
            continue
        if isinstance(doc, dict) and doc.get("tune_doctor_interpreter") == 1:
            return doc
    return None


def _interpreter(doc: Mapping[str, object], python: str) -> Interpreter:
    """Validate the child's answer field by field (a sitecustomize could print anything)."""
    def text(key: str) -> str:
        v = doc.get(key)
        if not isinstance(v, str):
            raise DoctorError(f"--python {python}: the interpreter's answer lacks {key!r}")
        return v

    path = doc.get("path")
    markers = doc.get("markers")
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise DoctorError(f"--python {python}: the interpreter's answer lacks 'path'")
    if not isinstance(markers, dict) or not all(isinstance(v, str) for v in markers.values()):
        raise DoctorError(f"--python {python}: the interpreter's answer lacks 'markers'")
    info = PythonInfo(version=text("version"), implementation=text("implementation"),
                      executable=text("executable") or python, prefix=text("prefix"), base_prefix=text("base_prefix"))
    return Interpreter(info, tuple(path), dict(markers))
