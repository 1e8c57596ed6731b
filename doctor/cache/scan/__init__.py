"""Inspect cache roots without importing their owners, without following symlinks, and without blocking.

Each root is scanned in its own daemon thread: a scan that stops making progress for `timeout` seconds
(a hung NFS server, a dead FUSE daemon) is abandoned and reported as unresponsive; a scan that is just
big stops at its time budget and says it is partial. Nothing here writes, except the write check (one
uniquely named file, created and removed, from doctor.cache.location.try_write).

One module per owner walks its layout: unsloth, triton, inductor, own (the doctor's); walk holds what
they share (the scan state, the budget, reads that never block or follow a link).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from doctor.cache import location as _location  # through the module: tests stand in a blocking try_write
from doctor.cache.fsinfo import Mount, mount_for
from doctor.cache.roots import CacheRoot, protected_reason
from doctor.cache.scan.inductor import scan_inductor
from doctor.cache.scan.own import scan_own
from doctor.cache.scan.triton import scan_triton
from doctor.cache.scan.unsloth import scan_unsloth
from doctor.cache.scan.walk import LOCK_AGE, QUARANTINE_INSIDE, Budget, Expect, Problem, Walk, kind_of

WALKERS: Dict[str, Callable[[Walk, str], None]] = {"unsloth": scan_unsloth, "triton": scan_triton,
                                                   "inductor": scan_inductor, "doctor": scan_own}


class RootScan(NamedTuple):
    """What one root looked like."""

    root: CacheRoot
    status: str  # ok, missing, not-a-directory, unresponsive, error
    real_path: str = ""
    write_check: Any = None  # cache.location.WriteCheck, or None when writability was not tested
    mount: Optional[Mount] = None
    entries: int = 0  # modules (unsloth), kernel dirs (triton), files (inductor), entries (doctor)
    files: int = 0
    bytes: int = 0
    complete: bool = True  # False when the time budget ran out first
    problems: Tuple[Problem, ...] = ()
    modules: Tuple[str, ...] = ()  # unsloth modules that are real files: what verify imports
    live_locks: int = 0
    detail: str = ""  # why unresponsive / error
    elapsed: float = 0.0
    quarantine: str = ""  # the root's quarantine folder, when one exists (found in the scan thread: never blocks)
    shared: str = ""  # set when the root is a shared folder (cwd, home, /tmp...): why; nothing is repaired there


def scan_root(root: CacheRoot, expect: Expect, w: Walk, write_check: bool) -> RootScan:
    """Scan one root (blocking; run it through scan_roots for the time limits)."""
    t0 = time.monotonic()
    wc = None
    if write_check:
        w.path = root.path
        wc = _location.try_write(Path(root.path))
    w.path = root.path
    try:
        st = os.stat(root.path)
    except FileNotFoundError:
        anc = wc.tested if wc is not None and wc.tested else _nearest_existing(root.path)
        return RootScan(root, "missing", "", wc, mount_for(os.path.realpath(anc)) if anc else None,
                        elapsed=time.monotonic() - t0)
    except NotADirectoryError:
        return RootScan(root, "not-a-directory", "", wc, None, detail="a parent is not a directory",
                        elapsed=time.monotonic() - t0)
    except OSError as exc:
        return RootScan(root, "error", "", wc, None, detail=exc.strerror or str(exc), elapsed=time.monotonic() - t0)
    real = os.path.realpath(root.path)
    mount = mount_for(real)
    shared = protected_reason(real, w.expect.cwd)
    if shared:  # not a cache of its own: do not walk (and never offer to move) other people's files
        return RootScan(root, "ok", real, wc, mount, complete=True, shared=shared, elapsed=time.monotonic() - t0)
    if not stat.S_ISDIR(st.st_mode):
        return RootScan(root, "not-a-directory", real, wc, mount, detail=f"{root.path} is {kind_of(st.st_mode)}",
                        elapsed=time.monotonic() - t0)
    if root.kind == "unsloth" and st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        w.add("world-writable", real, mode=f"{stat.S_IMODE(st.st_mode):04o}", owner_uid=st.st_uid,
              ours="yes" if st.st_uid == os.geteuid() else "no", directory="yes")
    try:
        WALKERS[root.kind](w, real)
    except Budget:
        w.complete = False
    quarantine = next((q for q in (real + ".quarantine", os.path.join(real, QUARANTINE_INSIDE)) if os.path.isdir(q)), "")
    return RootScan(root, "ok", real, wc, mount, w.entries, w.files, w.bytes, w.complete, tuple(w.problems),
                    tuple(w.modules), w.live_locks, "", time.monotonic() - t0, quarantine)


def _nearest_existing(path: str) -> str:
    """The closest ancestor that exists (lexically walking up)."""
    p = path
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            return ""
        p = parent
    return p


def scan_roots(roots: Sequence[CacheRoot], expect: Expect, budget: float = 0.15, timeout: float = 2.0,
               full: bool = False, lock_age: float = LOCK_AGE, write_check: Sequence[str] = ()) -> List[RootScan]:
    """Scan roots concurrently; each stops at `budget` s of walking, and is abandoned after `timeout` s without progress.

    `write_check`: the kinds whose writability is tested (a file created and removed in the root or its
    nearest existing ancestor).
    """
    start = time.monotonic()
    jobs = []
    for root in roots:
        w = Walk(root, expect, start + budget, full, lock_age)
        box: Dict[str, Any] = {}

        def target(root: CacheRoot = root, w: Walk = w, box: Dict[str, Any] = box) -> None:
            try:
                box["scan"] = scan_root(root, expect, w, root.kind in write_check)
            except BaseException as exc:  # a bug must not kill the other roots' scans
                box["error"] = exc

        t = threading.Thread(target=target, name=f"tune-doctor-scan-{root.kind}", daemon=True)
        t.start()
        jobs.append((root, w, box, t))
    out: List[RootScan] = []
    for root, w, box, t in jobs:
        while t.is_alive():
            t.join(0.02)
            stalled = time.monotonic() - w.tick
            if t.is_alive() and (stalled > timeout or time.monotonic() - start > budget + timeout * 4):
                break
        if t.is_alive():
            out.append(RootScan(root, "unresponsive", "", None, mount_for(root.path), detail=(
                f"no answer within {timeout:g} s (stuck at {w.path})"), elapsed=time.monotonic() - start))
        elif "error" in box:
            exc = box["error"]
            out.append(RootScan(root, "error", "", None, None, detail=f"{type(exc).__name__}: {exc}"))
        else:
            out.append(box["scan"])
    return out


__all__ = ["Expect", "Problem", "RootScan", "scan_root", "scan_roots"]
