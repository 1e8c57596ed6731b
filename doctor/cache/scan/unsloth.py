"""unsloth's compiled cache: top-level modules (version header, size, mode, type) and its .locks/ directory.

unsloth_zoo writes each module with a docstring of four versions (unsloth_zoo, unsloth, transformers, trl)
followed by __UNSLOTH_VERSIONING__; a module cut inside that docstring is truncated, one with other versions
is stale. Its per-file FileLocks live in <root>/.locks/.lock.<module>.
"""

from __future__ import annotations

import os
import stat
from typing import Tuple

from doctor.cache.scan.walk import (
    HEADER_FIELDS,
    QUARANTINE_INSIDE,
    Walk,
    count_tree,
    kind_of,
    lock_state,
    lstat,
    mode_check,
    read_head,
    scandir,
    symlink,
)

HEADER_BYTES = 1024  # the unsloth version docstring sits in the first ~60 bytes
UNSLOTH_MARK = "__UNSLOTH_VERSIONING__"


def parse_unsloth_header(head: bytes, size: int) -> Tuple[str, Tuple[str, ...]]:
    """('ok', 4 versions) | ('none', ()) for a module without the docstring | ('truncated'|'malformed', ())."""
    text = head.decode("utf-8", "replace")
    if not text.startswith('"""'):
        return "none", ()
    whole = size <= len(head)  # we saw the entire file
    idx = text.find(UNSLOTH_MARK)
    if idx < 0:
        return ("truncated" if whole else "malformed"), ()
    lines = [ln.strip() for ln in text[3:idx].splitlines() if ln.strip()]
    if len(lines) != len(HEADER_FIELDS):
        return "malformed", ()
    rest = text[idx + len(UNSLOTH_MARK):].lstrip("\r\n")
    if not rest.startswith('"""'):
        return ("truncated" if whole and len(rest) < 3 else "malformed"), ()
    return "ok", tuple(lines)


def scan_unsloth(w: Walk, d: str) -> None:
    """Top-level modules (header, size, mode, symlink, type), .locks/, and the rest only counted."""
    for e in scandir(w, d):
        p = os.path.join(d, e.name)
        st = lstat(w, e, p)
        if e.name == ".locks" and stat.S_ISDIR(st.st_mode):
            _scan_locks(w, p)
            continue
        if stat.S_ISDIR(st.st_mode):
            if w.full and e.name != QUARANTINE_INSIDE:
                count_tree(w, p)
            continue
        if not e.name.endswith(".py"):
            if stat.S_ISREG(st.st_mode):
                w.count(st)
            continue
        if stat.S_ISLNK(st.st_mode):
            symlink(w, p, d)
            continue
        if not stat.S_ISREG(st.st_mode):
            w.add("not-regular", p, type=kind_of(st.st_mode))
            continue
        w.entries += 1
        w.count(st)
        mode_check(w, p, st)
        _module(w, e.name, p, st)


def _module(w: Walk, name: str, p: str, st: os.stat_result) -> None:
    """One compiled module: empty, unreadable, truncated/garbled header, or built for other versions."""
    if st.st_size == 0:
        if name != "__init__.py":
            w.add("zero-byte", p)
        return
    try:
        head = read_head(p, HEADER_BYTES)
    except FileNotFoundError:
        return
    except OSError as exc:
        w.add("unreadable", p, error=exc.strerror or exc)
        return
    state, versions = parse_unsloth_header(head, st.st_size)
    if state in ("truncated", "malformed"):
        w.add("bad-header", p, header=state, size=st.st_size)
    elif state == "ok" and w.expect.versions:  # no unsloth installed: nothing to be stale against
        stale = [(f, have, w.expect.versions.get(f, "0")) for f, have in zip(HEADER_FIELDS, versions)
                 if have != w.expect.versions.get(f, "0")]
        if stale:
            w.add("stale-header", p, **{f: f"{have} (installed {want})" for f, have, want in stale})
    w.modules.append(p)


def _scan_locks(w: Walk, d: str) -> None:
    """unsloth_zoo's per-file FileLocks: a non-blocking flock tells a live holder from a leftover."""
    for e in scandir(w, d):
        p = os.path.join(d, e.name)
        st = lstat(w, e, p)
        if not stat.S_ISREG(st.st_mode):
            continue
        w.count(st)
        age = max(0.0, w.now - st.st_mtime)
        state = lock_state(p)
        if state == "held":
            w.live_locks += 1
            w.add("live-lock", p, age=f"{age:.0f} s")
        elif age >= w.lock_age and state in ("free", "unsupported"):
            w.add("stale-lock", p, age=f"{age:.0f} s", flock="works" if state == "free" else "not supported here")
