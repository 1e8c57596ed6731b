"""Several files written or removed all or nothing, and the directories made for them taken away again.

The contract: a failure before anything is renamed leaves every target as it was; a failure while renaming
puts back the targets already replaced. Each file is staged as a temp file in its own directory, flushed
and fsynced, then moved with os.replace, so a reader sees the old file or the new one, never a part.
Errors are one-line DoctorErrors that name the file and end in "nothing changed".
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import List, Mapping, Optional, Sequence, Tuple

from doctor.errors import DoctorError


def write_all(files: Mapping[str, Optional[bytes]], modes: Optional[Mapping[str, object]] = None) -> None:
    """Write (bytes) or remove (None) every file, all or nothing: temp files first, then renames in order.

    `modes`: a file's permission bits (an int); otherwise the target's own, or 0o644 for a new file.
    A failure before the renames leaves every target as it was; a failure during them puts back the ones
    already replaced. DoctorError with one line naming the file.
    """
    modes = modes or {}
    staged: List[Tuple[str, Optional[str]]] = []  # (target, temp or None for a removal)
    try:
        for target, data in files.items():
            if data is None:
                staged.append((target, None))
                continue
            d = os.path.dirname(target) or "."
            if os.path.lexists(target) and not os.path.isfile(target):
                raise DoctorError(f"{target}: not a regular file; nothing changed")
            if os.path.exists(target) and not os.access(target, os.W_OK):
                raise DoctorError(f"{target}: not writable; nothing changed")
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=d)
            except OSError as exc:
                raise DoctorError(f"cannot write {target}: {exc.strerror or exc}; nothing changed") from None
            staged.append((target, tmp))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            mode = modes.get(target)
            os.chmod(tmp, int(mode) if isinstance(mode, int) else file_mode(target) or 0o644)
    except BaseException:
        for _t, leftover in staged:
            if leftover:
                _unlink(leftover)
        raise
    done: List[Tuple[str, Optional[bytes]]] = []  # (target, its bytes before) for a rollback
    try:
        for target, temp in staged:
            before = read_bytes_or_none(target)
            if temp is None:
                if os.path.lexists(target):
                    os.unlink(target)
            else:
                os.replace(temp, target)
            done.append((target, before))
    except OSError as exc:
        for _t, leftover in staged:
            if leftover:
                _unlink(leftover)
        for target, before in reversed(done):
            try:
                if before is None:
                    _unlink(target)
                else:
                    with open(target, "wb") as fh:
                        fh.write(before)
            except OSError:
                pass
        raise DoctorError(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; nothing changed") from None


def make_dirs(path: str) -> List[str]:
    """Create `path` and missing parents; the ones created (deepest last). DoctorError with nothing left behind."""
    missing: List[str] = []
    p = path
    while not os.path.isdir(p):
        if os.path.lexists(p):
            raise DoctorError(f"cannot create {path}: {p} is not a directory; nothing changed")
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    created: List[str] = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except OSError as exc:
            remove_dirs(created)
            raise DoctorError(f"cannot create {d}: {exc.strerror or exc}; nothing changed") from None
        created.append(d)
    return created


def remove_dirs(dirs: Sequence[str]) -> None:
    """Remove directories that make_dirs created, deepest first, when they are empty."""
    for d in sorted(dirs, key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass


def file_mode(path: str) -> Optional[int]:
    """A file's permission bits, or None when it cannot be stat'ed."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def read_bytes_or_none(path: str) -> Optional[bytes]:
    """The whole file (no size cap: what is put back must be byte for byte), or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
