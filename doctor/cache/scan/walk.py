"""The shared walk: one scan's state, its time budget, and file reads that never block or follow a link.

Every per-owner walker (unsloth, triton, inductor, own) goes through `scandir` and `lstat` here: each call
records progress (the caller spots a stall by `Walk.tick`) and stops the walk when its budget is spent. Files
are read with O_NONBLOCK | O_NOFOLLOW after a regular-file check, so a FIFO or a symlink planted in a cache
cannot hang or redirect the doctor.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

from doctor._util.files import read_bytes
from doctor.cache.roots import CacheRoot

LOCK_AGE = 600.0  # seconds a lock file with no holder must have existed before it is called stale
QUARANTINE_INSIDE = ".doctor-quarantine"  # used only where <root>.quarantine cannot sit beside the root
HEADER_FIELDS = ("unsloth_zoo", "unsloth", "transformers", "trl")  # order of the 4 lines in unsloth's header


class Problem(NamedTuple):
    """One thing wrong (or worth knowing) in a cache, with plain-data evidence."""

    kind: str  # zero-byte, stale-header, bad-header, world-writable, stale-lock, live-lock, triton-group,
    #            foreign-arch, foreign-triton, symlink, not-regular, doctor-corrupt, temp-leftover, unreadable
    path: str
    detail: Tuple[Tuple[str, str], ...] = ()

    def get(self, key: str, default: str = "") -> str:
        """One evidence value."""
        return dict(self.detail).get(key, default)


class Expect(NamedTuple):
    """What the installed stack says, for staleness: from Facts, never from importing anything."""

    versions: Mapping[str, str]  # HEADER_FIELDS -> installed version ("0" when absent, as unsloth writes it);
    #                              empty when neither unsloth nor unsloth_zoo is installed (nothing to compare)
    triton: Optional[str] = None  # installed triton version
    archs: FrozenSet[int] = frozenset()  # CUDA archs of this machine's GPUs (cc 9.0 -> 90); empty = unknown
    cwd: str = "."


class Budget(Exception):
    """The walk's time budget ran out."""


class Walk:
    """Mutable state of one scan (lives in its thread; the caller reads `path` and `tick` to spot a stall)."""

    def __init__(self, root: CacheRoot, expect: Expect, deadline: float, full: bool, lock_age: float) -> None:
        self.root, self.expect, self.deadline, self.full, self.lock_age = root, expect, deadline, full, lock_age
        self.now = time.time()
        self.path = root.path
        self.tick = time.monotonic()
        self.entries = self.files = self.bytes = self.live_locks = 0
        self.problems: List[Problem] = []
        self.modules: List[str] = []
        self.complete = True

    def at(self, path: str) -> None:
        """Record progress; stop when the budget is spent."""
        self.path = path
        self.tick = time.monotonic()
        if self.tick > self.deadline:
            raise Budget()

    def add(self, kind: str, path: str, **detail: object) -> None:
        """Record a problem."""
        self.problems.append(Problem(kind, path, tuple((k if k in HEADER_FIELDS else k.replace("_", " "), str(v))
                                                       for k, v in detail.items())))

    def count(self, st: os.stat_result) -> None:
        """Count one regular file towards the root's totals."""
        self.files += 1
        self.bytes += st.st_size


# ----------------------------------------------------------------------------- small, safe file reads


def read_head(path: str, limit: int) -> bytes:
    """Up to `limit` bytes of a regular file; never follows a symlink, never blocks on a FIFO/device."""
    try:
        return read_bytes(path, limit, nofollow=True)
    except IsADirectoryError:  # the shared reader's "not a regular file": say which kind it is
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = 0
        raise OSError(errno.EINVAL, f"not a regular file ({kind_of(mode)})") from None


def kind_of(mode: int) -> str:
    """'a FIFO', 'a socket', ... for an st_mode."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "an unknown file type"


def lock_state(path: str) -> str:
    """'held', 'free', 'unsupported' (no flock on this filesystem) or 'error: ...'; a non-blocking try, never waits."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        return f"error: {e.strerror or e}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return "held"
        if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL):
            return "unsupported"
        return f"error: {e.strerror or e}"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)  # held for microseconds; a filelock waiter simply polls again
        return "free"
    finally:
        os.close(fd)


def inside(path: str, root: str) -> bool:
    """Lexical containment of absolute, normalised paths."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- walking


def scandir(w: Walk, d: str) -> List[os.DirEntry]:
    """Directory entries, sorted for stable output; an unreadable directory is a problem, not an exception."""
    w.at(d)
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            w.add("unreadable", d, error=exc.strerror or exc)
        return []


def lstat(w: Walk, e: os.DirEntry, p: str) -> os.stat_result:
    """lstat of a directory entry; an entry that vanished since the listing (caches are live) looks like nothing."""
    w.at(p)
    try:
        return e.stat(follow_symlinks=False)
    except FileNotFoundError:
        return GONE
    except OSError as exc:
        w.add("unreadable", p, error=exc.strerror or exc)
        return GONE


GONE = os.stat_result((0,) * 10)  # st_mode 0: not a file, directory or link; skipped by every walker


def count_tree(w: Walk, d: str) -> None:
    """Files and bytes below d (no symlinks followed)."""
    stack = [d]
    while stack:
        cur = stack.pop()
        for e in scandir(w, cur):
            p = os.path.join(cur, e.name)
            st = lstat(w, e, p)
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                w.count(st)


def mode_check(w: Walk, p: str, st: os.stat_result) -> None:
    """A world-writable module lets any local user change code the training process imports."""
    if st.st_mode & stat.S_IWOTH:
        w.add("world-writable", p, mode=f"{stat.S_IMODE(st.st_mode):04o}", owner_uid=st.st_uid,
              ours="yes" if st.st_uid == os.geteuid() else "no")


def symlink(w: Walk, p: str, root: str) -> None:
    """A symlink in a cache: where it points, and whether that is outside the root."""
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    real = os.path.realpath(p)
    w.add("symlink", p, target=target, resolves_to=real,
          outside_root="yes" if not inside(real, os.path.realpath(root)) else "no")


def is_lock_name(name: str) -> bool:
    """Lock files (and package markers) are empty by design."""
    return name == "lock" or name.endswith(".lock") or name.startswith(".lock.") or name == "__init__.py"


def short(exc: BaseException) -> str:
    """One line of an exception."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
