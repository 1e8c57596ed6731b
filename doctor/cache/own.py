"""The doctor's own cache: entries that cannot be half-written, raced or silently stale.

Every write goes to a temp file in the same directory, then os.replace (atomic on POSIX); writers of
one entry serialise on a filelock; every entry carries a stamp (format version + doctor version) that
is checked on read; anything unreadable, foreign or stale is a miss, never an error.

Generated modules (root/<kind>/<key>.py) are the failure class this project exists for done right:
the first line is a stamp comment (format, doctor version, kind, key, sha256 of the rest), checked
before anything runs; the module is imported through an explicit spec whose loader compiles exactly
the bytes that were verified (no re-read from disk, no __pycache__ that could be stale within one
mtime second, no sys.path changes); a missing, torn, foreign or stale entry is a miss and is
regenerated under the entry's lock.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

from doctor import envvars
from doctor._util.regex import lazy
from doctor._version import __version__

ENV_VAR = envvars.DOCTOR_CACHE_DIR
FORMAT = 1
_SAFE = lazy(r"[^A-Za-z0-9._-]")
LOCK_TIMEOUT = 30.0
MODULE_STAMP = "# tune-doctor-cache: "  # first line of a generated module, followed by a JSON object


def default_root() -> Path:
    """$DOCTOR_CACHE_DIR, else the per-user cache dir (platformdirs)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    plain = _plain_linux_cache_dir()
    if plain is not None:
        return Path(plain, "tune-doctor")
    import platformdirs  # lazy: ~2 ms of every `doctor check`, needed only off the plain-Linux path above

    return Path(platformdirs.user_cache_dir("tune-doctor", appauthor=False))


def _plain_linux_cache_dir() -> Optional[str]:
    """~/.cache on Linux when nothing could make platformdirs answer otherwise, else None (ask platformdirs).

    The case every platformdirs version answers alike: not Android, XDG_CACHE_HOME unset or empty, HOME
    absolute (expanded verbatim). Anything else (macOS, Windows, an XDG value, no HOME) goes to platformdirs.
    """
    if not sys.platform.startswith("linux") or hasattr(sys, "getandroidapilevel"):
        return None
    if os.environ.get("ANDROID_DATA") or os.environ.get("ANDROID_ROOT") or os.environ.get(envvars.XDG_CACHE_HOME):
        return None
    home = os.environ.get(envvars.HOME, "")
    if not os.path.isabs(home):
        return None
    return os.path.expanduser("~/.cache")


def safe_name(key: str) -> str:
    """A file-name-safe form of a cache key."""
    return _SAFE.sub("_", key)[:200] or "_"


class DoctorCache:
    """Versioned JSON entries under root/<kind>/<key>.json, written atomically under a per-entry lock."""

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def path(self, kind: str, key: str, suffix: str = ".json") -> Path:
        """Where an entry lives."""
        return self.root / safe_name(kind) / (safe_name(key) + suffix)

    def read_json(self, kind: str, key: str) -> Optional[Dict[str, Any]]:
        """The entry's data, or None when missing, corrupt, foreign or written by another format."""
        p = self.path(kind, key)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # [[[[... deeper than the decoder recurses
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("kind") != kind or doc.get("key") != key:
            return None
        data = doc.get("data")
        return data if isinstance(data, dict) else None

    def write_json(self, kind: str, key: str, data: Dict[str, Any]) -> Path:
        """Write an entry atomically (temp file + os.replace) under its lock; returns its path."""
        from filelock import FileLock

        p = self.path(kind, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"format": FORMAT, "doctor": __version__, "kind": kind, "key": key, "data": data},
                             indent=1, sort_keys=True)
        with FileLock(str(p) + ".lock", timeout=LOCK_TIMEOUT):
            atomic_write_text(p, payload)
        return p

    # -------------------------------------------------------------------------- generated modules

    def module_path(self, kind: str, key: str) -> Path:
        """Where a generated module lives."""
        return self.path(kind, key, ".py")

    def write_module(self, kind: str, key: str, source: str) -> Path:
        """Write a generated module atomically under its lock, stamped with its own hash; returns its path."""
        from filelock import FileLock

        p = self.module_path(kind, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(p) + ".lock", timeout=LOCK_TIMEOUT):
            atomic_write_text(p, module_text(kind, key, source))
        return p

    def read_module_source(self, kind: str, key: str) -> Optional[str]:
        """The verified source of an entry (stamp line included), or None when missing, torn, foreign or stale."""
        p = self.module_path(kind, key)
        try:
            raw = p.read_bytes()
        except OSError:
            return None
        return verify_module_text(raw, kind, key)

    def import_module(self, kind: str, key: str, module_name: str) -> Optional[ModuleType]:
        """Import an entry under `module_name` from exactly the bytes verified; None on a miss.

        An entry whose stamp checks out but whose code raises is not a miss: the exception propagates.
        """
        text = self.read_module_source(kind, key)
        if text is None:
            return None
        return exec_verified(module_name, self.module_path(kind, key), text)

    def get_or_create_module(self, kind: str, key: str, generate: Callable[[], str], module_name: str) -> ModuleType:
        """The entry's module; regenerated (under the lock, once) when missing, corrupt, stale or failing to import."""
        from filelock import FileLock

        mod, _ = self._try_import(kind, key, module_name)
        if mod is not None:
            return mod
        p = self.module_path(kind, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(p) + ".lock", timeout=LOCK_TIMEOUT):
            # Another process may have regenerated it while we waited for the lock.
            mod, _ = self._try_import(kind, key, module_name)
            if mod is not None:
                return mod
            text = module_text(kind, key, generate())
            atomic_write_text(p, text)
        # Run the text just written, not a re-read of the file: whatever happens to the file from now on, this
        # is the verified content. Fresh code that fails is a generator bug: it raises.
        return exec_verified(module_name, p, text)

    def _try_import(self, kind: str, key: str, module_name: str) -> Tuple[Optional[ModuleType], str]:
        """(module, "") or (None, why): a miss or an import failure, both reasons to regenerate."""
        try:
            mod = self.import_module(kind, key, module_name)
        except Exception as exc:  # SyntaxError, ImportError, anything the stored code raises
            return None, f"{type(exc).__name__}: {exc}"
        return (mod, "") if mod is not None else (None, "miss")


def module_text(kind: str, key: str, source: str) -> str:
    """A generated module's full text: the stamp line (with the sha256 of the body), then the body."""
    import hashlib  # lazily: loading OpenSSL costs ~4 ms that `doctor check` never needs

    body = source if source.endswith("\n") else source + "\n"
    stamp = {"format": FORMAT, "doctor": __version__, "kind": kind, "key": key,
             "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest()}
    return MODULE_STAMP + json.dumps(stamp, sort_keys=True) + "\n" + body


def verify_module_text(raw: bytes, kind: Optional[str] = None, key: Optional[str] = None) -> Optional[str]:
    """The text when its stamp is ours, current, for this kind/key and matches the body's hash; else None."""
    import hashlib

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    first, nl, body = text.partition("\n")
    if not nl or not first.startswith(MODULE_STAMP):
        return None
    try:
        stamp = json.loads(first[len(MODULE_STAMP):])
    except ValueError:
        return None
    if not isinstance(stamp, dict) or stamp.get("format") != FORMAT or stamp.get("doctor") != __version__:
        return None
    if (kind is not None and stamp.get("kind") != kind) or (key is not None and stamp.get("key") != key):
        return None
    if stamp.get("sha256") != hashlib.sha256(body.encode("utf-8")).hexdigest():
        return None
    return text


class _VerifiedSourceLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles the text it was given (already verified) instead of re-reading the file."""

    def __init__(self, fullname: str, path: str, text: str) -> None:
        super().__init__(fullname, path)
        self._text = text

    def get_code(self, fullname: str):  # type: ignore[no-untyped-def]
        """Compile the verified text; never reads or writes bytecode."""
        return compile(self._text, self.path, "exec", dont_inherit=True)

    def get_source(self, fullname: str) -> str:
        """The verified text (for tracebacks and inspect)."""
        return self._text


def exec_verified(module_name: str, path: Path, text: str) -> ModuleType:
    """Create and execute a module from verified text via spec_from_file_location + module_from_spec + exec_module."""
    loader = _VerifiedSourceLoader(module_name, str(path), text)
    spec = importlib.util.spec_from_file_location(module_name, str(path), loader=loader)
    if spec is None:  # only for a path importlib cannot handle at all
        raise ImportError(f"tune-doctor cache: no import spec for {path}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # like a real import: dataclasses, pickling and typing look it up here
    try:
        loader.exec_module(module)
    except BaseException:
        if previous is not None:
            sys.modules[module_name] = previous
        else:
            sys.modules.pop(module_name, None)
        raise
    return module


def atomic_write_text(path: Path, text: str) -> None:
    """Write text so readers see the old file or the new one, never a part (temp in the same dir + os.replace)."""
    import tempfile  # lazy: only writers need it, and its import (random, shutil) is on every check's path

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
