"""Where each compiled cache lives, resolved the way its owner resolves it (never by importing the owner).

unsloth (unsloth_zoo/compiler.py): UNSLOTH_COMPILE_LOCATION, default "unsloth_compiled_cache", used as given,
  so a relative value is relative to the working directory; when os.makedirs fails it falls back to
  tempfile.gettempdir()/<the same value> (see doctor.cache.location, reused here).
Triton (triton/runtime/cache.py up to 3.2; triton/knobs.py `cache_knobs` from 3.3): TRITON_CACHE_DIR
  (3.2 strips it and treats empty as unset), else TRITON_HOME/.triton/cache, else ~/.triton/cache
  (Path.home() / expanduser("~/")). A relative value is used as given: relative to the working directory.
  Each kernel is a directory <root>/<base32 key>/ holding <name>.json (metadata), the IRs and the binary,
  and __grp__<name>.json ({"child_paths": {file: absolute path}}) tying them together.
Inductor (torch/_inductor/runtime/cache_dir_utils.py): TORCHINDUCTOR_CACHE_DIR (made absolute against the
  working directory), else tempfile.gettempdir()/torchinductor_<user> with the user name from getpass
  (LOGNAME, USER, LNAME, USERNAME, then the password database) and [\\/:*?"<>|] replaced by "_". When
  TRITON_CACHE_DIR is unset, the Triton kernels Inductor compiles go to <inductor root>/triton/<device>/,
  which the Inductor scan covers.
doctor: DOCTOR_CACHE_DIR, else the per-user cache dir (doctor.cache.own.default_root).
"""

from __future__ import annotations

import functools
import os
import stat
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor import envvars as ev
from doctor._util.regex import lazy
from doctor._util.timeouts import TimedOut, call_with_timeout
from doctor.cache.own import default_root
from doctor.errors import DoctorError

KINDS = ("unsloth", "triton", "inductor", "doctor")
ENV_VARS = {
    "unsloth": ev.UNSLOTH_COMPILE_LOCATION,
    "triton": ev.TRITON_CACHE_DIR,
    "inductor": ev.TORCHINDUCTOR_CACHE_DIR,
    "doctor": ev.DOCTOR_CACHE_DIR,
}
LABELS = {"unsloth": "unsloth compiled cache", "triton": "Triton cache", "inductor": "TorchInductor cache",
          "doctor": "tune-doctor cache"}
_USER_UNSAFE = lazy(r'[\\/:*?"<>|]')


class CacheRoot(NamedTuple):
    """One cache directory and how its owner arrives at it."""

    kind: str  # one of KINDS
    path: str  # absolute, normalised (lexical: symlinks are not resolved here)
    source: str  # what decided it: "UNSLOTH_COMPILE_LOCATION", "default, relative to the working directory", ...
    relative: bool = False  # the setting depends on the working directory
    role: str = "primary"  # "fallback" for unsloth's temp-dir fallback

    @property
    def env_var(self) -> str:
        """The variable that moves this cache."""
        return ENV_VARS[self.kind]

    @property
    def label(self) -> str:
        """'unsloth compiled cache' (+ ' (temp fallback)')."""
        return LABELS[self.kind] + (" (temp fallback)" if self.role == "fallback" else "")


def parse_which(text: Optional[str]) -> Tuple[str, ...]:
    """'unsloth,triton' -> ('unsloth', 'triton'); None or 'all' -> every kind; DoctorError on an unknown name."""
    if text is None or text.strip() in ("", "all"):
        return KINDS
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in KINDS]
    if bad or not names:
        raise DoctorError(f"unknown cache {', '.join(bad) or repr(text)} for --which (choose from {', '.join(KINDS)})")
    return tuple(k for k in KINDS if k in names)


def _abs(value: str, cwd: str) -> str:
    """value made absolute against cwd, normalised, without expanding '~' (the owners do not either)."""
    return os.path.normpath(value if os.path.isabs(value) else os.path.join(os.path.abspath(cwd), value))


def gettempdir() -> str:
    """The process's temp dir, as the owners see it (tempfile.gettempdir)."""
    import sys

    loaded = sys.modules.get("tempfile")
    if loaded is None:
        found = _first_tempdir_candidate()
        if found is not None:
            return found
    # lazy: tempfile's import (random, its C module) costs ~1 ms of every check; the fast path above usually answers
    import tempfile

    return tempfile.gettempdir()


def _first_tempdir_candidate() -> Optional[str]:
    """What tempfile.gettempdir() answers in a process that has not imported tempfile, without importing it.

    The same candidates in the same order (TMPDIR, TEMP, TMP, then /tmp, /var/tmp, /usr/tmp on POSIX), each
    tested the same way (a 0600 file created exclusively, written, removed). The first candidate that passes is
    tempfile's answer too; on any failure (a name clash, a denied or odd directory, Windows) None, and tempfile
    itself decides.
    """
    if os.name != "posix":
        return None
    candidates = [d for d in (os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP")) if d]
    candidates += ["/tmp", "/var/tmp", "/usr/tmp"]
    folder = os.path.abspath(candidates[0])
    name = os.path.join(folder, "tmp" + os.urandom(6).hex())
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            try:
                os.write(fd, b"blat")
            finally:
                os.close(fd)
        finally:
            os.unlink(name)
    except OSError:
        return None
    return os.fsdecode(folder)


def user_name(environ: Optional[Mapping[str, str]] = None) -> str:
    """The user name as getpass.getuser() finds it (env first, then the password database)."""
    environ = os.environ if environ is None else environ
    for var in ev.USER_NAME_VARS:
        if environ.get(var):
            return environ[var]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        getuid = getattr(os, "getuid", None)
        return f"uid_{getuid()}" if callable(getuid) else "unknown_user"


def unsloth_roots(env: Mapping[str, str], cwd: str, tempdir: Optional[str] = None) -> List[CacheRoot]:
    """unsloth's configured location, and its temp-dir fallback (used when the first cannot be created)."""
    from doctor.cache.location import ENV_VAR, resolve_unsloth_cache_dir  # lazy: location imports roots (cycle)

    path, relative = resolve_unsloth_cache_dir(env, cwd)
    setting = env.get(ENV_VAR) or ""
    source = ENV_VAR if setting else "default, relative to the working directory"
    primary = CacheRoot("unsloth", str(path), source, relative)
    # unsloth_zoo: os.path.join(tempfile.gettempdir(), location) -- an absolute location replaces the tempdir.
    fallback = os.path.normpath(os.path.join(tempdir or gettempdir(), setting or "unsloth_compiled_cache"))
    out = [primary]
    if fallback != primary.path:
        out.append(CacheRoot("unsloth", fallback, "unsloth's fallback when the location cannot be created",
                             False, "fallback"))
    return out


def triton_root(env: Mapping[str, str], cwd: str, home: Optional[str] = None) -> CacheRoot:
    """Triton's kernel cache directory."""
    explicit = (env.get(ev.TRITON_CACHE_DIR) or "").strip()
    if explicit:
        return CacheRoot("triton", _abs(explicit, cwd), ev.TRITON_CACHE_DIR, not os.path.isabs(explicit))
    th = env.get(ev.TRITON_HOME)
    if th:
        return CacheRoot("triton", _abs(os.path.join(th, ".triton", "cache"), cwd), ev.TRITON_HOME, not os.path.isabs(th))
    home = home or os.path.expanduser("~")
    return CacheRoot("triton", _abs(os.path.join(home, ".triton", "cache"), cwd), "default (~/.triton/cache)")


def inductor_root(env: Mapping[str, str], cwd: str, tempdir: Optional[str] = None,
                  user: Optional[str] = None) -> CacheRoot:
    """TorchInductor's cache directory."""
    explicit = env.get(ev.TORCHINDUCTOR_CACHE_DIR)
    if explicit is not None and explicit != "":
        return CacheRoot("inductor", _abs(explicit, cwd), ev.TORCHINDUCTOR_CACHE_DIR, not os.path.isabs(explicit))
    name = "torchinductor_" + _USER_UNSAFE.sub("_", user or user_name())
    return CacheRoot("inductor", os.path.join(tempdir or gettempdir(), name), "default (<tempdir>/torchinductor_<user>)")


def doctor_root(env: Mapping[str, str], cwd: str) -> CacheRoot:
    """The doctor's own cache (probe verdicts, generated modules)."""
    value = os.path.expanduser((env.get(ev.DOCTOR_CACHE_DIR) or "").strip())  # as own.default_root reads it
    if value:
        return CacheRoot("doctor", _abs(value, cwd), ev.DOCTOR_CACHE_DIR, not os.path.isabs(value))
    return CacheRoot("doctor", os.path.abspath(str(default_root())), "default (per-user cache dir)")


def resolve_roots(env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                  which: Sequence[str] = KINDS) -> List[CacheRoot]:
    """Every selected cache root, in KINDS order (unsloth's fallback right after its primary)."""
    env = os.environ if env is None else env
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "/"
    out: List[CacheRoot] = []
    for kind in which:
        if kind == "unsloth":
            out.extend(unsloth_roots(env, cwd))
        elif kind == "triton":
            out.append(triton_root(env, cwd))
        elif kind == "inductor":
            out.append(inductor_root(env, cwd))
        elif kind == "doctor":
            out.append(doctor_root(env, cwd))
    return out


def protected_reason(real_path: str, cwd: Optional[str] = None) -> str:
    """Why a directory must never be treated as a whole cache ('the working directory', ...), or ''.

    A cache variable can point at a shared folder (UNSLOTH_COMPILE_LOCATION=., TORCHINDUCTOR_CACHE_DIR=/tmp):
    the cache is then mixed with other files, and moving or clearing "the cache" would move those.
    """
    import sys

    p = os.path.normpath(real_path)

    def at_or_above(other: str) -> bool:
        o = os.path.realpath(other)
        return o == p or o.startswith(p.rstrip(os.sep) + os.sep)

    if p == os.sep:
        return "the filesystem root"
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = None
    checks = [(os.path.expanduser("~"), "your home directory (or a folder above it)"),
              (gettempdir(), "the system temp directory"), ("/tmp", "the system temp directory"),
              ("/var/tmp", "the system temp directory"),
              (sys.prefix, "the Python installation (or a folder above it)"),
              (sys.base_prefix, "the Python installation (or a folder above it)")]
    if cwd:
        checks.insert(0, (cwd, "the working directory (or a folder above it)"))
    for other, why in checks:
        if at_or_above(other):
            return why
    if p.count(os.sep) <= 1:
        return "a top-level directory"
    for system in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/proc", "/sys", "/dev"):
        if p == system or p.startswith(system + os.sep):
            # a cache variable pointing into system trees is a mistake; never move anything there
            return f"a system directory ({system})"
    return ""


def known_roots() -> List[CacheRoot]:
    """The cache roots of this process (its environment and working directory): what repair may touch."""
    return resolve_roots(os.environ, None, KINDS)


SUGGESTED_NAMES = {"unsloth": "unsloth_compiled_cache", "triton": "triton", "inductor": "torchinductor",
                   "doctor": "tune-doctor"}  # directory names of the suggested locations, per kind


def suggestions(kind: str) -> List[str]:
    """Per-user absolute directories for a cache, best first: under the user cache dir, then a uid-named temp dir.

    Siblings in the user cache dir (~/.cache/triton), never inside the doctor's own cache (which the doctor
    scans and clears as its own); the temp candidate carries the uid, so it is never the directory every
    user shares (unsloth's /tmp/unsloth_compiled_cache fallback).
    """
    import platformdirs

    name = SUGGESTED_NAMES[kind]
    return [os.path.join(platformdirs.user_cache_dir(), name),
            os.path.join(gettempdir(), f"{name}-uid{os.geteuid()}")]


def _only_ours(path: str) -> bool:
    """A directory that does not exist yet, or one this user owns that no one else may write (no symlink)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _usable(path: str) -> bool:
    """Only ours (or not there yet) and write-checked (blocking: run it with a timeout)."""
    from pathlib import Path

    from doctor.cache.location import try_write  # lazy: location imports roots (cycle)

    return _only_ours(path) and try_write(Path(path)).writable


def suggest_location(kind: str, avoid: str = "", timeout: float = 2.0) -> str:
    """A per-user absolute directory that can hold this cache (write-checked), other than `avoid`.

    When no candidate passes, the first (under the user cache dir): a fix that fails with a clear error
    beats one that points at a directory other users share.
    """
    candidates = suggestions(kind)
    for cand in candidates:
        if os.path.normpath(cand) == os.path.normpath(avoid):
            continue
        try:
            ok = call_with_timeout(functools.partial(_usable, cand), timeout)
        except TimedOut:
            continue
        if ok:
            return cand
    return next(c for c in candidates if os.path.normpath(c) != os.path.normpath(avoid))
