"""TorchInductor's cache: generated code and artifacts, and the Triton kernels under <root>/triton/<device>/."""

from __future__ import annotations

import os
import stat

from doctor.cache.scan.triton import scan_triton
from doctor.cache.scan.walk import QUARANTINE_INSIDE, Walk, is_lock_name, lstat, mode_check, scandir, symlink

MAX_DEPTH = 32  # Inductor's tree is a few levels deep; a deeper one is a loop or not Inductor's


def scan_inductor(w: Walk, d: str) -> None:
    """Inductor's tree: generated code and artifacts (zero-byte, world-writable .py) and its triton/<device>/ kernels."""
    stack = [(d, 0)]
    while stack:
        cur, depth = stack.pop()
        for e in scandir(w, cur):
            p = os.path.join(cur, e.name)
            st = lstat(w, e, p)
            if stat.S_ISDIR(st.st_mode):
                if e.name == QUARANTINE_INSIDE and depth == 0:
                    continue
                if depth == 1 and os.path.basename(cur) == "triton":  # <root>/triton/<device>/<key>/
                    scan_triton(w, p)
                    continue
                if depth < MAX_DEPTH:
                    stack.append((p, depth + 1))
                continue
            if stat.S_ISLNK(st.st_mode):
                symlink(w, p, w.root.path)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            w.entries += 1
            w.count(st)
            if st.st_size == 0 and not is_lock_name(e.name) and os.path.basename(cur) != "locks":
                w.add("zero-byte", p)
            if e.name.endswith(".py"):
                mode_check(w, p, st)
