"""The doctor's own cache: entries that cannot be half-written, raced or silently stale.

Every write goes to a temp file in the same directory, then os.replace (atomic on POSIX); writers of
one entry serialise on a filelock; every entry carries a stamp (format version + doctor version) that
is checked on read; anything unreadable, foreign or stale is a miss, never an error.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from doctor import __version__

ENV_VAR = "DOCTOR_CACHE_DIR"
FORMAT = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
LOCK_TIMEOUT = 30.0


def default_root() -> Path:
    """$DOCTOR_CACHE_DIR, else the per-user cache dir (platformdirs)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tune-doctor", appauthor=False))


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
        except (OSError, ValueError, UnicodeDecodeError):
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


def atomic_write_text(path: Path, text: str) -> None:
    """Write text so readers see the old file or the new one, never a part (temp in the same dir + os.replace)."""
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
