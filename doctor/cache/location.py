"""Where unsloth writes its compiled modules, whether it can, and how bad it is when it cannot.

unsloth_zoo (compiler.py) takes UNSLOTH_COMPILE_LOCATION, default "unsloth_compiled_cache", and
uses it as given: a relative value is relative to the process's working directory (it is also put
on sys.path as is). It calls os.makedirs on it; on failure, from 2025.3.8 on, it falls back to
tempfile.gettempdir()/<basename> (logging "Failed to create directory" from 2025.9.14), a directory
shared by every user of the machine; older releases failed or froze at model load (unsloth #1898).
The matrix holds these release facts (unsloth_runtime.toml). So a script and a notebook started in
different directories see different caches, and an unwritable location costs a shared, raced temp
directory, or a failed load on old versions.

Severities: the cwd-relative default is INFO with the fix (it works, but depends on where the process
starts); it is a WARN when the location is unwritable, on a network filesystem, or when a checked
script's directory would give another cache than the working directory. An unwritable location is an
ERROR only for unsloth_zoo releases without the temp-directory fallback, a WARN otherwise (and when
the release is unknown).

Writability is tested for real (the "write check"): a uniquely named file is created (O_EXCL) and
removed in the directory, or in its nearest existing ancestor when it does not exist yet (that is the
directory os.makedirs must write into). The cache directory itself is never created. The check runs in
a daemon thread joined with a timeout (doctor._util.timeouts), so a hung network mount cannot block
`doctor check`; a thread costs well under a millisecond where a Python child process costs 20-40 ms. A
check stuck in the kernel stays behind as a daemon thread and is abandoned at exit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor import envvars
from doctor._util.timeouts import TimedOut, call_with_timeout
from doctor.actions import Action, Manual, SetEnv
from doctor.cache.fsinfo import mount_for
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding

if TYPE_CHECKING:
    from doctor.compat_matrix.model import Matrix

ENV_VAR = envvars.UNSLOTH_COMPILE_LOCATION
DEFAULT_LOCATION = "unsloth_compiled_cache"  # unsloth_zoo's default, relative to the working directory
ZOO = "unsloth-zoo"  # the distribution whose compiler owns the cache (its release decides the fallback)

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
    test_file = directory / f".tune-doctor-write-test-{os.getpid()}-{os.urandom(16).hex()}"
    try:
        # O_EXCL: never touch an existing file; no O_NONBLOCK needed, a new regular file cannot block.
        fd = os.open(str(test_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return e.strerror or str(e)
    try:
        os.write(fd, b"x")
    except OSError as e:
        return e.strerror or str(e)
    finally:
        os.close(fd)
        try:
            os.unlink(str(test_file))
        except OSError:
            pass
    return None


def try_write(path: Path) -> WriteCheck:
    """Test whether an owner could create/write its cache at `path` (blocking: run it through call_with_timeout)."""
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


def _suggested_location(current: Path, check: Optional[WriteCheck], env: Mapping[str, str], timeout: float) -> str:
    """An absolute, per-user, writable location to recommend (never the shared temp fallback)."""
    from doctor.cache.roots import suggest_location  # lazy: roots imports this module (cycle)

    if check is not None and check.writable and check.exists and _private(current, env):
        return str(current)  # keep the cache the user already has, just pin it
    return suggest_location("unsloth", avoid=str(current), timeout=timeout)


def _private(current: Path, env: Mapping[str, str]) -> bool:
    """Whether an existing cache may be pinned: ours, and not the temp fallback every user shares."""
    setting = env.get(ENV_VAR) or DEFAULT_LOCATION
    # unsloth_zoo's fallback, as the roots resolve it and as the matrix words it (the basename)
    shared = {os.path.normpath(os.path.join(_tempdir(), p)) for p in (setting, os.path.basename(setting), DEFAULT_LOCATION)}
    if str(current) in shared:
        return False
    try:
        return os.stat(str(current)).st_uid == os.geteuid()
    except OSError:
        return False


def _tempdir() -> str:
    """The temp directory unsloth_zoo falls back into (tempfile.gettempdir, imported lazily)."""
    from doctor.cache.roots import gettempdir  # lazy: roots imports this module (cycle)

    return gettempdir()


class Fallback(NamedTuple):
    """What this unsloth_zoo does when it cannot create its compiled cache (from the matrix)."""

    kind: str  # "shared" (tempdir/<basename>, 2025.3.8+), "random" (a fresh TemporaryDirectory), "none", "unknown"
    zoo: str  # the installed unsloth_zoo version, or "" when unknown
    since: str  # the first release with the shared fallback, "" when the matrix has no such fact
    reads_env: Optional[bool]  # whether this release reads UNSLOTH_COMPILE_LOCATION (None: unknown)


def cache_fallback(facts: Facts, matrix: Optional["Matrix"]) -> Fallback:
    """The installed unsloth_zoo's fallback for an uncreatable cache directory."""
    zoo = facts.version_of(ZOO) or ""
    fact = matrix.unsloth_cache_fallback if matrix is not None else None
    if matrix is None or fact is None or not zoo:
        return Fallback("unknown", zoo, fact.since if fact else "", None)
    # lazy: grading the fallback needs the matrix lookups only when unsloth_zoo is installed
    from doctor.compat_matrix.lookup import unsloth_has_cache_fallback
    from doctor.compat_matrix.versions import parse_version

    has = unsloth_has_cache_fallback(matrix, zoo)
    v = parse_version(zoo)
    reads_env = None
    if v is not None and fact.location_env_since:
        reads_env = v.release >= parse_version(fact.location_env_since).release  # type: ignore[union-attr]
    if has is None or v is None:
        return Fallback("unknown", zoo, fact.since, reads_env)
    if has:
        return Fallback("shared", zoo, fact.since, reads_env)
    early = parse_version(fact.random_fallback_since) if fact.random_fallback_since else None
    kind = "random" if early is not None and v.release >= early.release else "none"
    return Fallback(kind, zoo, fact.since, reads_env)


def _fix(suggestion: str, why: str, fb: Fallback) -> Tuple[Action, ...]:
    """Point unsloth at `suggestion`; where this unsloth_zoo does not read the variable, say what works instead."""
    pin = SetEnv(ENV_VAR, suggestion, f"{why}: {ENV_VAR}={suggestion}", directory=True)
    if fb.reads_env is False:
        return (Manual(f"unsloth_zoo {fb.zoo} does not read {ENV_VAR}: upgrade unsloth_zoo, or start training "
                       "from a writable directory (its cache is <working directory>/unsloth_compiled_cache)"), pin)
    return (pin,)


def _script_dirs(facts: Facts, scripts: Sequence[str], path: Path) -> Dict[str, str]:
    """{script directory: the cache a run started there would use} where that differs from `path`."""
    out: Dict[str, str] = {}
    for script in scripts:
        d = os.path.dirname(os.path.normpath(os.path.join(facts.cwd, script)))
        other, _ = resolve_unsloth_cache_dir(facts.env, d)
        if other != path:
            out.setdefault(d, str(other))
    return out


def check_unsloth_cache_location(facts: Facts, matrix: Optional["Matrix"] = None, scripts: Sequence[str] = (),
                                 timeout: float = 2.0) -> List[Finding]:
    """Check unsloth's compiled-cache location: absolute, a directory, writable, local, responsive.

    `scripts`: the scripts `doctor check --script` reads; a relative location that a run started in a
    script's directory would resolve elsewhere is a warning. `matrix`: for unsloth_zoo's fallback.
    """
    if facts.dist("unsloth") is None and facts.dist(ZOO) is None:
        return []
    path, relative = resolve_unsloth_cache_dir(facts.env, facts.cwd)
    setting = facts.env.get(ENV_VAR) or ""
    evidence = {
        ENV_VAR: setting if setting else f"unset (default {DEFAULT_LOCATION!r})",
        "working directory": facts.cwd,
        "resolved path": str(path),
    }
    try:
        check: Optional[WriteCheck] = call_with_timeout(lambda: try_write(path), timeout)
    except TimedOut:
        check = None
    except OSError as e:  # defensive: try_write turns OS errors into results
        check = WriteCheck("unwritable", False, str(path), e.strerror or str(e))
    suggestion = _suggested_location(path, check, facts.env, timeout)
    fb = cache_fallback(facts, matrix)
    out: List[Finding] = []
    if relative:
        out.append(_relative(path, evidence, suggestion, check, facts, scripts, fb))
    if check is None:
        out.append(_unresponsive(path, evidence, suggestion, timeout, fb))
    elif check.writable:
        out.append(finding("cache.unsloth-location", Severity.OK, Category.CACHES,
                           f"unsloth compiled cache {'is' if check.exists else 'can be created'} at {path}",
                           evidence={**evidence, "exists": "yes" if check.exists else "no", "tested": check.tested}))
    else:
        out.append(_unwritable(path, evidence, suggestion, check, fb))
    return out


def _relative(path: Path, evidence: Mapping[str, str], suggestion: str, check: Optional[WriteCheck], facts: Facts,
              scripts: Sequence[str], fb: Fallback) -> Finding:
    """INFO for a location that depends on the working directory; WARN where that already bites."""
    ev: Dict[str, str] = dict(evidence)
    reasons: List[str] = []
    if check is None or not check.writable:
        reasons.append("it cannot be created or written here")
    mount = mount_for(check.tested) if check is not None and check.tested else None
    if mount is not None and mount.network:
        ev["filesystem"] = f"{mount.fs_type} ({mount.source} on {mount.mount_point})"
        reasons.append(f"it is on a network filesystem ({mount.fs_type})")
    elsewhere = _script_dirs(facts, scripts, path)
    for d, other in elsewhere.items():
        ev[f"started in {d}"] = other
    if elsewhere:
        reasons.append("a script started from its own directory would compile into another cache ("
                       + ", ".join(elsewhere.values()) + ")")
    if reasons:
        ev["why a warning"] = "; ".join(reasons)
    setting = evidence.get(ENV_VAR, "")
    tilde = " A leading '~' is not expanded by unsloth." if setting.startswith("~") else ""
    return finding(
        "cache.unsloth-relative",
        Severity.WARN if reasons else Severity.INFO,
        Category.CACHES,
        "unsloth compiled cache depends on the working directory",
        evidence=ev,
        explanation=(
            f"{ENV_VAR} is {'relative' if setting else 'unset, and its default is relative'}, so the cache lands "
            f"in whatever directory the process starts in (here {path}): a script and a notebook, or two jobs "
            "started from different folders, compile into different caches, and a later chdir breaks imports "
            "from it. This is the freeze-at-model-load of the seed reports when that directory is not writable."
            + tilde + (" Here: " + "; ".join(reasons) + "." if reasons else " Pinning it to one absolute "
                       "directory makes every run share one cache.")
        ),
        fix=_fix(suggestion, "pin the compiled cache to one absolute per-user directory", fb),
    )


def _unresponsive(path: Path, evidence: Mapping[str, str], suggestion: str, timeout: float, fb: Fallback) -> Finding:
    """The write check hung: so would unsloth, at model load (a hang has no fallback)."""
    return finding(
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
        fix=_fix(suggestion, "use a local, writable per-user directory", fb),
    )


def _unwritable(path: Path, evidence: Mapping[str, str], suggestion: str, check: WriteCheck, fb: Fallback) -> Finding:
    """ERROR where this unsloth_zoo has no temp-directory fallback; WARN where it has one (or is unknown)."""
    ev = {**evidence, "exists": "yes" if check.exists else "no", "tested": check.tested}
    if check.detail:
        ev["problem"] = check.detail
    ev["unsloth_zoo"] = fb.zoo or "not installed"
    shared = os.path.join(_tempdir(), os.path.basename(str(path)) or DEFAULT_LOCATION)
    what = {
        "not-a-directory": "exists but is not a directory",
        "parent-not-a-directory": f"cannot be created: {check.tested} is not a directory",
        "unwritable": "is not writable" if check.exists else f"cannot be created in {check.tested}",
    }[check.status]
    since = fb.since or "2025.3.8"
    then = {
        "none": f"unsloth_zoo {fb.zoo} is older than {since}, which added the temp-directory fallback: "
                "it fails (early-2025 releases froze, unsloth #1898) at model load.",
        "random": f"unsloth_zoo {fb.zoo} falls back to a fresh random temporary directory: training runs, "
                  "but every run recompiles every module.",
        "shared": f"unsloth_zoo {fb.zoo} (the fallback exists since {since}) falls back to {shared}: training "
                  "runs, but in a directory shared by every user of the machine, raced by other jobs and "
                  "cleaned by the system, so modules are recompiled, or belong to another user and cannot be "
                  "rewritten.",
        "unknown": f"unsloth_zoo {since} and later fall back to {shared}, a directory shared by every user of the "
                   "machine (recompiling and racing other jobs there); older releases fail at model load. "
                   "The installed release is not known here.",
    }[fb.kind]
    return finding(
        "cache.unsloth-unwritable",
        Severity.ERROR if fb.kind == "none" else Severity.WARN,
        Category.CACHES,
        f"unsloth compiled-cache location {path} {what}",
        evidence=ev,
        explanation="unsloth writes its compiled trainer modules there. " + then,
        fix=_fix(suggestion, "point unsloth at a writable absolute per-user directory", fb),
    )
