"""The doctor's own cache: entries checked the way reads check them, and leftovers of killed writers."""

from __future__ import annotations

import json
import os
import stat

from doctor.cache.scan.walk import QUARANTINE_INSIDE, Walk, lstat, read_head, scandir, short

ENTRY_CAP = 64 << 20  # our largest entries (generated modules) are well below this


def scan_own(w: Walk, d: str) -> None:
    """Our own entries: stamp/format/hash checked the way reads check them; leftovers of killed writers."""
    for sub in scandir(w, d):
        sp = os.path.join(d, sub.name)
        w.at(sp)
        if not sub.is_dir(follow_symlinks=False) or sub.name == QUARANTINE_INSIDE:
            continue
        for e in scandir(w, sp):
            p = os.path.join(sp, e.name)
            st = lstat(w, e, p)
            if stat.S_ISREG(st.st_mode):
                w.count(st)
                _entry(w, e.name, p, st)


def _entry(w: Walk, name: str, p: str, st: os.stat_result) -> None:
    """One file of a kind directory: a lock (fine), a temp file (old: a leftover), or a JSON/module entry."""
    from doctor.cache.own import FORMAT, verify_module_text  # lazy: importlib/tempfile, only for real entries

    if name.endswith(".lock"):
        return  # filelock leaves its lock files by design; they are not entries
    if name.startswith(".") and name.endswith(".tmp"):
        if w.now - st.st_mtime >= w.lock_age:
            w.add("temp-leftover", p, age=f"{w.now - st.st_mtime:.0f} s")
        return
    if not (name.endswith(".json") or name.endswith(".py")):
        return
    w.entries += 1
    if st.st_size == 0:
        w.add("zero-byte", p)
        return
    try:
        raw = read_head(p, ENTRY_CAP)
    except FileNotFoundError:
        return
    except OSError as exc:
        w.add("doctor-corrupt", p, problem=exc.strerror or exc)
        return
    if name.endswith(".py"):
        if verify_module_text(raw) is None:
            w.add("doctor-corrupt", p, problem="stamp missing, stale or not matching the content")
        return
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested past the decoder
        w.add("doctor-corrupt", p, problem=f"does not parse: {short(exc)}")
        return
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        w.add("doctor-corrupt", p, problem="written in another format")
