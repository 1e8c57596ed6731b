"""Small, bounded, non-blocking file reads: the one reader of metadata, version files and cache entries."""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

# Metadata files are small; a cap keeps a giant or endless file (a FIFO, /dev/zero) from stalling us.
DEFAULT_LIMIT = 4 * 1024 * 1024


def read_bytes(path: str, limit: int = DEFAULT_LIMIT, nofollow: bool = False,
               until: Optional[Callable[[bytearray, int], int]] = None, chunk: int = 1024 * 1024) -> bytes:
    """Read at most `limit` bytes of a regular file; raises OSError like open() does.

    nofollow refuses a symlink as the last component (caches: a link must not lead reads outside a root).
    until(buf, start), when given, is asked after each chunk for the offset where the wanted part ends
    (searching from `start`, where the new bytes begin), or -1 to read on: a header is read without its body.
    """
    # O_NONBLOCK so a FIFO planted where a file should be cannot block the open.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        if not _is_regular(fd):
            raise IsADirectoryError(21, "not a regular file", path)
        buf = bytearray()
        while len(buf) < limit:
            data = os.read(fd, min(limit - len(buf), chunk))
            if not data:
                break
            start = len(buf)
            buf += data
            if until is not None:
                end = until(buf, start)
                if end >= 0:
                    return bytes(buf[:end])
        return bytes(buf)
    finally:
        os.close(fd)


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def read_text(path: str, limit: int = DEFAULT_LIMIT) -> Tuple[Optional[str], Optional[str]]:
    """(text, None) for a readable UTF-8 file, (None, None) when absent, (None, reason) otherwise."""
    try:
        data = read_bytes(path, limit)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, describe_os_error(exc)
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not valid UTF-8"


def describe_os_error(exc: OSError) -> str:
    """A short reason for an OSError, without the path (callers add their own context)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "not a regular file"
    if isinstance(exc, NotADirectoryError):
        return "parent is not a directory"
    if isinstance(exc, FileNotFoundError):
        return "missing"
    return exc.strerror or exc.__class__.__name__
