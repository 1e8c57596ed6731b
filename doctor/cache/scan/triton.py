"""Triton's kernel cache: <root>/<key>/ directories tied together by __grp__<name>.json.

A group that does not parse makes json.load raise inside the compile call; a group whose metadata exists
but whose binary is gone is taken as a cache hit and fails to load. The kernel metadata names its target
arch and (newer Triton) its triton_version: kernels for another GPU or Triton are never loaded here.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Dict, List

from doctor.cache.scan.walk import QUARANTINE_INSIDE, Walk, is_lock_name, lstat, read_head, scandir, short, symlink

JSON_CAP = 4 << 20  # Triton group/metadata JSON is a few KB; refuse to slurp anything huge


def scan_triton(w: Walk, d: str, count_entries: bool = True) -> None:
    """Triton's <root>/<key>/ directories."""
    for e in scandir(w, d):
        p = os.path.join(d, e.name)
        st = lstat(w, e, p)
        if stat.S_ISLNK(st.st_mode):
            symlink(w, p, w.root.path)
            continue
        if stat.S_ISREG(st.st_mode):
            w.count(st)
            continue
        if not stat.S_ISDIR(st.st_mode) or e.name == QUARANTINE_INSIDE:
            continue
        if count_entries:
            w.entries += 1
        _scan_entry(w, p)


def _scan_entry(w: Walk, kd: str) -> None:
    """One kernel: its files, its group JSON (parse + referenced files) and its metadata target."""
    sizes: Dict[str, int] = {}
    for e in scandir(w, kd):
        p = os.path.join(kd, e.name)
        st = lstat(w, e, p)
        if stat.S_ISDIR(st.st_mode):
            if e.name.startswith("tmp.pid_") and w.now - st.st_mtime >= w.lock_age:
                w.add("temp-leftover", p, age=f"{w.now - st.st_mtime:.0f} s")  # an interrupted put()
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        w.count(st)
        sizes[e.name] = st.st_size
        if st.st_size == 0 and not is_lock_name(e.name):
            w.add("zero-byte", p)
    for name in sorted(sizes):
        if name.startswith("__grp__") and name.endswith(".json"):
            _group(w, kd, name, sizes)


def _group(w: Walk, kd: str, name: str, sizes: Dict[str, int]) -> None:
    """One __grp__<name>.json: it parses, and the files it names exist; then the kernel's metadata."""
    gp = os.path.join(kd, name)
    meta_name = name[len("__grp__"):]
    try:
        data = json.loads(read_head(gp, JSON_CAP).decode("utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested past the decoder
        w.add("triton-group", gp, severity="error", problem=f"does not parse: {short(exc)}")
        return
    children = data.get("child_paths") if isinstance(data, dict) else None
    if not isinstance(children, (dict, list)):
        w.add("triton-group", gp, severity="error", problem="no child_paths in the group file")
        return
    if isinstance(children, dict):  # file cache: {file name: path}; a list is the remote backend's form
        missing = _missing_children(w, kd, children, sizes)
        if missing:
            meta_ok = meta_name in children and meta_name not in missing
            # Metadata present but a binary missing: Triton takes it as a cache hit and fails loading it.
            w.add("triton-group", gp, severity="error" if meta_ok else "warn",
                  problem=f"references missing files: {', '.join(sorted(missing)[:5])}"
                  + (f" (+{len(missing) - 5})" if len(missing) > 5 else ""))
    if meta_name in sizes and sizes[meta_name] > 0:
        _metadata(w, kd, os.path.join(kd, meta_name))


def _missing_children(w: Walk, kd: str, children: Dict[object, object], sizes: Dict[str, int]) -> List[str]:
    """The group's files that are not there."""
    missing = []
    for child, cp in children.items():
        cp = str(cp)
        cpa = os.path.normpath(cp if os.path.isabs(cp) else os.path.join(w.expect.cwd, cp))
        if os.path.dirname(cpa) == kd:  # the usual case: answer from the listing, no stat per file
            if sizes.get(os.path.basename(cpa)) is None:
                missing.append(str(child))
        elif not os.path.exists(cpa):
            missing.append(str(child))
    return missing


def _metadata(w: Walk, kd: str, mp: str) -> None:
    """The kernel's target arch and (newer Triton) its triton_version, against this machine."""
    try:
        meta = json.loads(read_head(mp, JSON_CAP).decode("utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        w.add("triton-group", mp, severity="error", problem=f"kernel metadata does not parse: {short(exc)}")
        return
    if not isinstance(meta, dict):
        return
    target = meta.get("target")
    backend, arch = None, None
    if isinstance(target, dict):
        backend, arch = target.get("backend"), target.get("arch")
    elif isinstance(target, (list, tuple)) and len(target) >= 2:  # GPUTarget serialised as a sequence
        backend, arch = target[0], target[1]
    if arch is None and isinstance(meta.get("capability"), int):  # Triton 2.x
        backend, arch = "cuda", meta["capability"]
    if backend == "cuda" and isinstance(arch, int) and w.expect.archs and arch not in w.expect.archs:
        w.add("foreign-arch", kd, arch=f"sm_{arch}", name=str(meta.get("name", "")))
    tv = meta.get("triton_version")
    if isinstance(tv, str) and w.expect.triton and _release(tv) != _release(w.expect.triton):
        w.add("foreign-triton", kd, triton=tv)


def _release(v: str) -> str:
    """'3.4.0+git1234' -> '3.4.0' (compare releases; local tags vary by build)."""
    return v.split("+", 1)[0].strip()
