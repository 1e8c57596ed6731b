"""Where unsloth writes its compiled modules, and whether it can.

unsloth_zoo (compiler.py) takes UNSLOTH_COMPILE_LOCATION, default "unsloth_compiled_cache", and
uses it as given: a relative value is relative to the process's working directory (it is also put
on sys.path as is). It calls os.makedirs on it; on failure it logs "Failed to create directory" and
falls back to tempfile.gettempdir()/<basename> (2026.10.9; early-2025 versions froze at model load
instead, unsloth #1898). So a script and a notebook started in different directories see different
caches, and an unwritable location costs a recompile on every run, or a hang on old versions.

Writability is tested for real: a uniquely named file is created (O_EXCL) and removed in the
directory, or in its nearest existing ancestor when it does not exist yet (that is the directory
os.makedirs must write into). The cache directory itself is never created. The test runs in a
daemon thread joined with a timeout (doctor._util.timeouts), so a hung network mount cannot block `doctor check`; a thread
costs well under a millisecond where a Python child process costs 20-40 ms. A probe stuck in the
kernel stays behind as a daemon thread and is abandoned at exit.
"""

from __future__ import annotations

import os
import stat
import tempfile
import uuid
from pathlib import Path
from typing import List, Mapping, NamedTuple, Optional, Tuple

from doctor._util.timeouts import TimedOut, call_with_timeout
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding, set_env

ENV_VAR = "UNSLOTH_COMPILE_LOCATION"
DEFAULT_LOCATION = "unsloth_compiled_cache"  # unsloth_zoo's default, relative to the working directory

class WriteCheck(NamedTuple):
    """What the writability test found."""

    status: str  # "writable", "not-a-directory", "parent-not-a-directory", "unwritable"
    exists: bool  # the location itself exists
    tested: str  # the directory written into, or the path that blocked
    detail: str = ""  # the OS error, when there was one

    @property
    def writable(self) -> bool:
        """True when unsloth could create and write the cache there."""
        return self.status == "writable"


_NEVER = WriteCheck("unwritable", False, "", "")  # "do not reuse the current path" for suggestions


def resolve_unsloth_cache_dir(env: Mapping[str, str], cwd: str) -> Tuple[Path, bool]:
    """Where unsloth would put its compiled cache: (absolute path, whether the setting is relative)."""
    # unsloth_zoo: `_loc = os.getenv(...); if _loc: ... else default`, so an empty value means the default.
    loc = env.get(ENV_VAR) or DEFAULT_LOCATION
    # No expanduser: unsloth_zoo does not expand `~` either, so "~/x" is a directory named "~" in cwd.
    if os.path.isabs(loc):
        return Path(os.path.normpath(loc)), False
    return Path(os.path.normpath(os.path.join(os.path.abspath(cwd), loc))), True


def _write_test(directory: Path) -> Optional[str]:
    """Create and remove a uniquely named file in `directory`; the error text, or None if it worked."""
    probe = directory / f".tune-doctor-write-test-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        # O_EXCL: never touch an existing file; no O_NONBLOCK needed, a new regular file cannot block.
        fd = os.open(str(probe), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return e.strerror or str(e)
    try:
        os.write(fd, b"x")
    except OSError as e:
        return e.strerror or str(e)
    finally:
        os.close(fd)
        try:
            os.unlink(str(probe))
        except OSError:
            pass
    return None


def try_write(path: Path) -> WriteCheck:
    """Test whether unsloth could create/write its cache at `path` (blocking; see probe_with_timeout)."""
    p = path
    while True:
        try:
            st = os.stat(str(p))
            break
        except (FileNotFoundError, NotADirectoryError):
            # Missing, or an ancestor is a file: walk up to the nearest thing that exists.
            if p.parent == p:
                return WriteCheck("unwritable", False, str(p), "no existing ancestor")
            p = p.parent
        except OSError as e:  # EACCES on a parent, ELOOP, EIO on a broken mount...
            return WriteCheck("unwritable", p == path, str(p), e.strerror or str(e))
    exists = p == path
    if not stat.S_ISDIR(st.st_mode):
        kind = "not-a-directory" if exists else "parent-not-a-directory"
        return WriteCheck(kind, exists, str(p), f"{p} is {_kind_of(st.st_mode)}, not a directory")
    err = _write_test(p)
    if err is not None:
        return WriteCheck("unwritable", exists, str(p), err)
    return WriteCheck("writable", exists, str(p))


def _kind_of(mode: int) -> str:
    """'a regular file', 'a FIFO', ... for an st_mode."""
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a directory"


def _suggested_location(current: Path, probe: WriteCheck, timeout: float) -> str:
    """An absolute, writable location to recommend."""
    if probe.writable and probe.exists:
        return str(current)  # keep the cache the user already has, just pin it
    import platformdirs  # lazy: only needed when we recommend something

    candidates = [
        Path(platformdirs.user_cache_dir("tune-doctor")) / DEFAULT_LOCATION,
        Path(tempfile.gettempdir()) / DEFAULT_LOCATION,
    ]
    for cand in candidates:
        if cand == current:
            continue
        try:
            if call_with_timeout(lambda c=cand: try_write(c), timeout).writable:
                return str(cand)
        except TimedOut:
            continue
    return str(candidates[0])


def check_unsloth_cache_location(facts: Facts, timeout: float = 2.0) -> List[Finding]:
    """Check unsloth's compiled-cache location: absolute, a directory, writable, responsive."""
    if facts.dist("unsloth") is None and facts.dist("unsloth-zoo") is None:
        return []
    path, relative = resolve_unsloth_cache_dir(facts.env, facts.cwd)
    setting = facts.env.get(ENV_VAR) or ""
    evidence = {
        ENV_VAR: setting if setting else f"unset (default {DEFAULT_LOCATION!r})",
        "working directory": facts.cwd,
        "resolved path": str(path),
    }
    out: List[Finding] = []
    try:
        probe: Optional[WriteCheck] = call_with_timeout(lambda: try_write(path), timeout)
    except TimedOut:
        probe = None
    except OSError as e:  # defensive: try_write turns OS errors into results
        probe = WriteCheck("unwritable", False, str(path), e.strerror or str(e))

    if probe is None:
        suggestion = _suggested_location(path, _NEVER, timeout)
        if relative:
            out.append(_relative_warning(path, evidence, suggestion))
        out.append(
            finding(
                "cache.unsloth-unresponsive",
                Severity.ERROR,
                Category.CACHES,
                f"unsloth compiled-cache location {path} did not answer within {timeout:g} s",
                evidence={**evidence, "timeout": f"{timeout:g} s"},
                explanation=(
                    "Creating a test file there hung (a stalled network mount, a dead FUSE "
                    "filesystem...). unsloth writes and imports its compiled modules there at model "
                    "load, so training would hang the same way."
                ),
                fix=(set_env(ENV_VAR, suggestion, "use a local, writable directory"),),
            )
        )
        return out

    suggestion = _suggested_location(path, probe, timeout)
    if relative:
        out.append(_relative_warning(path, evidence, suggestion))
    ev = {**evidence, "exists": "yes" if probe.exists else "no", "tested": probe.tested}
    if probe.writable:
        out.append(
            finding(
                "cache.unsloth-location",
                Severity.OK,
                Category.CACHES,
                f"unsloth compiled cache {'is' if probe.exists else 'can be created'} at {path}",
                evidence=ev,
            )
        )
        return out
    if probe.detail:
        ev["problem"] = probe.detail
    what = {
        "not-a-directory": "exists but is not a directory",
        "parent-not-a-directory": f"cannot be created: {probe.tested} is not a directory",
        "unwritable": "is not writable" if probe.exists else f"cannot be created in {probe.tested}",
    }[probe.status]
    out.append(
        finding(
            "cache.unsloth-unwritable",
            Severity.ERROR,
            Category.CACHES,
            f"unsloth compiled-cache location {path} {what}",
            evidence=ev,
            explanation=(
                "unsloth writes its compiled trainer modules there. Early-2025 versions freeze at "
                "model load when the directory cannot be created (unsloth #1898); current ones log "
                "'Failed to create directory' and fall back to a directory under "
                f"{tempfile.gettempdir()}, recompiling on every run and racing other jobs there."
            ),
            fix=(set_env(ENV_VAR, suggestion, "point unsloth at a writable absolute directory"),),
        )
    )
    return out


def _relative_warning(path: Path, evidence: Mapping[str, str], suggestion: str) -> Finding:
    """The WARN for a location that depends on the working directory."""
    setting = evidence.get(ENV_VAR, "")
    tilde = " A leading '~' is not expanded by unsloth." if setting.startswith("~") else ""
    return finding(
        "cache.unsloth-relative",
        Severity.WARN,
        Category.CACHES,
        "unsloth compiled cache depends on the working directory",
        evidence=evidence,
        explanation=(
            f"{ENV_VAR} is relative, so the cache lands in whatever directory the process starts in "
            f"(here {path}): a script and a notebook, or two jobs started from different folders, "
            "compile into different caches, and a later chdir breaks imports from it." + tilde
        ),
        fix=(set_env(ENV_VAR, suggestion, "pin the compiled cache to one absolute directory"),),
    )
