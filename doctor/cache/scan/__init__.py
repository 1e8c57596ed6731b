"""Inspect cache roots without importing their owners, without following symlinks, and without blocking.

Each root is scanned in its own daemon thread: a scan that stops making progress for `timeout` seconds
(a hung NFS server, a dead FUSE daemon) is abandoned and reported as unresponsive; a scan that is just
big stops at its time budget and says it is partial. Files are opened with O_NONBLOCK | O_NOFOLLOW and
checked to be regular before a byte is read, so a FIFO or a symlink planted in a cache cannot hang or
redirect the doctor. Nothing here writes, except the writability probe (one uniquely named file,
created and removed, from doctor.cache.location).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from typing import Any, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.cache.fsinfo import Mount, mount_for
from doctor.cache.roots import CacheRoot

LOCK_AGE = 600.0  # seconds a lock file with no holder must have existed before it is called stale
HEADER_BYTES = 1024  # the unsloth version docstring sits in the first ~60 bytes
JSON_CAP = 4 << 20  # Triton group/metadata JSON is a few KB; refuse to slurp anything huge
UNSLOTH_MARK = "__UNSLOTH_VERSIONING__"
HEADER_FIELDS = ("unsloth_zoo", "unsloth", "transformers", "trl")  # order of the 4 lines in the header
QUARANTINE_INSIDE = ".doctor-quarantine"  # used only where <root>.quarantine cannot sit beside the root


class Problem(NamedTuple):
    """One thing wrong (or worth knowing) in a cache, with plain-data evidence."""

    kind: str  # zero-byte, stale-header, bad-header, world-writable, stale-lock, live-lock, triton-group,
    #            foreign-arch, foreign-triton, symlink, not-regular, doctor-corrupt, temp-leftover
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


class RootScan(NamedTuple):
    """What one root looked like."""

    root: CacheRoot
    status: str  # ok, missing, not-a-directory, unresponsive, error
    real_path: str = ""
    probe: Any = None  # cache.location.WriteCheck, or None when not probed
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


class _Budget(Exception):
    """The walk's time budget ran out."""


class _Walk:
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
            raise _Budget()

    def add(self, kind: str, path: str, **detail: object) -> None:
        """Record a problem."""
        self.problems.append(Problem(kind, path, tuple((k if k in HEADER_FIELDS else k.replace("_", " "), str(v))
                                                       for k, v in detail.items())))


# ----------------------------------------------------------------------------- small, safe file reads


def read_head(path: str, limit: int) -> bytes:
    """Up to `limit` bytes of a regular file; never follows a symlink, never blocks on a FIFO/device."""
    from doctor._util.files import read_bytes

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


def _inside(path: str, root: str) -> bool:
    """Lexical containment of absolute, normalised paths."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- per-kind walks


def _scan_unsloth(w: _Walk, d: str) -> None:
    """Top-level modules (header, size, mode, symlink, type), .locks/, and the rest only counted."""
    for e in _scandir(w, d):
        p = os.path.join(d, e.name)
        st = _lstat(w, e, p)
        if e.name == ".locks" and stat.S_ISDIR(st.st_mode):
            _scan_locks(w, p)
            continue
        if stat.S_ISDIR(st.st_mode):
            if w.full and e.name != QUARANTINE_INSIDE:
                _count_tree(w, p)
            continue
        if not e.name.endswith(".py"):
            if stat.S_ISREG(st.st_mode):
                w.files += 1
                w.bytes += st.st_size
            continue
        if stat.S_ISLNK(st.st_mode):
            _symlink(w, p, d)
            continue
        if not stat.S_ISREG(st.st_mode):
            w.add("not-regular", p, type=kind_of(st.st_mode))
            continue
        w.entries += 1
        w.files += 1
        w.bytes += st.st_size
        _mode_check(w, p, st)
        if st.st_size == 0:
            if e.name != "__init__.py":
                w.add("zero-byte", p)
            continue
        try:
            head = read_head(p, HEADER_BYTES)
        except FileNotFoundError:
            continue
        except OSError as exc:
            w.add("unreadable", p, error=exc.strerror or exc)
            continue
        state, versions = parse_unsloth_header(head, st.st_size)
        if state in ("truncated", "malformed"):
            w.add("bad-header", p, header=state, size=st.st_size)
        elif state == "ok" and w.expect.versions:  # no unsloth installed: nothing to be stale against
            stale = [(f, have, w.expect.versions.get(f, "0")) for f, have in zip(HEADER_FIELDS, versions)
                     if have != w.expect.versions.get(f, "0")]
            if stale:
                w.add("stale-header", p, **{f: f"{have} (installed {want})" for f, have, want in stale})
        w.modules.append(p)


def _scan_locks(w: _Walk, d: str) -> None:
    """unsloth_zoo's per-file FileLocks: a non-blocking flock tells a live holder from a leftover."""
    for e in _scandir(w, d):
        p = os.path.join(d, e.name)
        st = _lstat(w, e, p)
        if not stat.S_ISREG(st.st_mode):
            continue
        w.files += 1
        w.bytes += st.st_size
        age = max(0.0, w.now - st.st_mtime)
        state = lock_state(p)
        if state == "held":
            w.live_locks += 1
            w.add("live-lock", p, age=f"{age:.0f} s")
        elif age >= w.lock_age and state in ("free", "unsupported"):
            w.add("stale-lock", p, age=f"{age:.0f} s", flock="works" if state == "free" else "not supported here")


def _scan_triton(w: _Walk, d: str, count_entries: bool = True) -> None:
    """Triton's <root>/<key>/ directories."""
    for e in _scandir(w, d):
        p = os.path.join(d, e.name)
        st = _lstat(w, e, p)
        if stat.S_ISLNK(st.st_mode):
            _symlink(w, p, w.root.path)
            continue
        if stat.S_ISREG(st.st_mode):
            w.files += 1
            w.bytes += st.st_size
            continue
        if not stat.S_ISDIR(st.st_mode) or e.name == QUARANTINE_INSIDE:
            continue
        if count_entries:
            w.entries += 1
        _scan_triton_entry(w, p)


def _scan_triton_entry(w: _Walk, kd: str) -> None:
    """One kernel: its files, its group JSON (parse + referenced files) and its metadata target."""
    sizes: Dict[str, int] = {}
    for e in _scandir(w, kd):
        p = os.path.join(kd, e.name)
        st = _lstat(w, e, p)
        if stat.S_ISDIR(st.st_mode):
            if e.name.startswith("tmp.pid_") and w.now - st.st_mtime >= w.lock_age:
                w.add("temp-leftover", p, age=f"{w.now - st.st_mtime:.0f} s")  # an interrupted put()
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        w.files += 1
        w.bytes += st.st_size
        sizes[e.name] = st.st_size
        if st.st_size == 0 and not _is_lock_name(e.name):
            w.add("zero-byte", p)
    for name in sorted(sizes):
        if not (name.startswith("__grp__") and name.endswith(".json")):
            continue
        gp = os.path.join(kd, name)
        meta_name = name[len("__grp__"):]
        try:
            data = json.loads(read_head(gp, JSON_CAP).decode("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            w.add("triton-group", gp, severity="error", problem=f"does not parse: {_short(exc)}")
            continue
        children = data.get("child_paths") if isinstance(data, dict) else None
        if not isinstance(children, (dict, list)):
            w.add("triton-group", gp, severity="error", problem="no child_paths in the group file")
            continue
        if isinstance(children, dict):  # file cache: {file name: path}; a list is the remote backend's form
            missing = []
            for child, cp in children.items():
                cp = str(cp)
                cpa = os.path.normpath(cp if os.path.isabs(cp) else os.path.join(w.expect.cwd, cp))
                if os.path.dirname(cpa) == kd:  # the usual case: answer from the listing, no stat per file
                    if sizes.get(os.path.basename(cpa)) is None:
                        missing.append(str(child))
                elif not os.path.exists(cpa):
                    missing.append(str(child))
            if missing:
                meta_ok = meta_name in children and meta_name not in missing
                # Metadata present but a binary missing: Triton takes it as a cache hit and fails loading it.
                w.add("triton-group", gp, severity="error" if meta_ok else "warn",
                      problem=f"references missing files: {', '.join(sorted(missing)[:5])}"
                      + (f" (+{len(missing) - 5})" if len(missing) > 5 else ""))
        if meta_name in sizes and sizes[meta_name] > 0:
            _triton_metadata(w, kd, os.path.join(kd, meta_name))


def _triton_metadata(w: _Walk, kd: str, mp: str) -> None:
    """The kernel's target arch and (newer Triton) its triton_version, against this machine."""
    try:
        meta = json.loads(read_head(mp, JSON_CAP).decode("utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        w.add("triton-group", mp, severity="error", problem=f"kernel metadata does not parse: {_short(exc)}")
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


def _scan_inductor(w: _Walk, d: str) -> None:
    """Inductor's tree: generated code and artifacts (zero-byte, world-writable .py) and its triton/<device>/ kernels."""
    stack = [(d, 0)]
    while stack:
        cur, depth = stack.pop()
        for e in _scandir(w, cur):
            p = os.path.join(cur, e.name)
            st = _lstat(w, e, p)
            if stat.S_ISDIR(st.st_mode):
                if e.name == QUARANTINE_INSIDE and depth == 0:
                    continue
                if depth == 1 and os.path.basename(cur) == "triton":  # <root>/triton/<device>/<key>/
                    _scan_triton(w, p)
                    continue
                if depth < 32:
                    stack.append((p, depth + 1))
                continue
            if stat.S_ISLNK(st.st_mode):
                _symlink(w, p, w.root.path)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            w.files += 1
            w.entries += 1
            w.bytes += st.st_size
            if st.st_size == 0 and not _is_lock_name(e.name) and os.path.basename(cur) != "locks":
                w.add("zero-byte", p)
            if e.name.endswith(".py"):
                _mode_check(w, p, st)


def _scan_doctor(w: _Walk, d: str) -> None:
    """Our own entries: stamp/format/hash checked the way reads check them; leftovers of killed writers."""
    from doctor.cache.own import FORMAT, verify_module_text

    for sub in _scandir(w, d):
        sp = os.path.join(d, sub.name)
        w.at(sp)
        if not sub.is_dir(follow_symlinks=False) or sub.name == QUARANTINE_INSIDE:
            continue
        for e in _scandir(w, sp):
            p = os.path.join(sp, e.name)
            st = _lstat(w, e, p)
            if not stat.S_ISREG(st.st_mode):
                continue
            w.files += 1
            w.bytes += st.st_size
            name = e.name
            if name.endswith(".lock"):
                continue  # filelock leaves its lock files by design; they are not entries
            if name.startswith(".") and name.endswith(".tmp"):
                if w.now - st.st_mtime >= w.lock_age:
                    w.add("temp-leftover", p, age=f"{w.now - st.st_mtime:.0f} s")
                continue
            if not (name.endswith(".json") or name.endswith(".py")):
                continue
            w.entries += 1
            if st.st_size == 0:
                w.add("zero-byte", p)
                continue
            try:
                raw = read_head(p, 64 << 20)
            except FileNotFoundError:
                continue
            except OSError as exc:
                w.add("doctor-corrupt", p, problem=exc.strerror or exc)
                continue
            if name.endswith(".py"):
                if verify_module_text(raw) is None:
                    w.add("doctor-corrupt", p, problem="stamp missing, stale or not matching the content")
                continue
            try:
                doc = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                w.add("doctor-corrupt", p, problem=f"does not parse: {_short(exc)}")
                continue
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                w.add("doctor-corrupt", p, problem="written in another format")


# ----------------------------------------------------------------------------- helpers


def _scandir(w: _Walk, d: str) -> List[os.DirEntry]:
    """Directory entries, sorted for stable output; an unreadable directory is a problem, not an exception."""
    w.at(d)
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            w.add("unreadable", d, error=exc.strerror or exc)
        return []


def _lstat(w: _Walk, e: os.DirEntry, p: str) -> os.stat_result:
    """lstat of a directory entry; an entry that vanished since the listing (caches are live) looks like nothing."""
    w.at(p)
    try:
        return e.stat(follow_symlinks=False)
    except FileNotFoundError:
        return _GONE
    except OSError as exc:
        w.add("unreadable", p, error=exc.strerror or exc)
        return _GONE


_GONE = os.stat_result((0,) * 10)  # st_mode 0: not a file, directory or link; skipped by every walker


def _count_tree(w: _Walk, d: str) -> None:
    """Files and bytes below d (no symlinks followed)."""
    stack = [d]
    while stack:
        cur = stack.pop()
        for e in _scandir(w, cur):
            p = os.path.join(cur, e.name)
            st = _lstat(w, e, p)
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                w.files += 1
                w.bytes += st.st_size


def _mode_check(w: _Walk, p: str, st: os.stat_result) -> None:
    """A world-writable module lets any local user change code the training process imports."""
    if st.st_mode & stat.S_IWOTH:
        w.add("world-writable", p, mode=f"{stat.S_IMODE(st.st_mode):04o}", owner_uid=st.st_uid,
              ours="yes" if st.st_uid == os.geteuid() else "no")


def _symlink(w: _Walk, p: str, root: str) -> None:
    """A symlink in a cache: where it points, and whether that is outside the root."""
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    real = os.path.realpath(p)
    w.add("symlink", p, target=target, resolves_to=real,
          outside_root="yes" if not _inside(real, os.path.realpath(root)) else "no")


def _is_lock_name(name: str) -> bool:
    """Lock files (and package markers) are empty by design."""
    return name == "lock" or name.endswith(".lock") or name.startswith(".lock.") or name == "__init__.py"


def _short(exc: BaseException) -> str:
    """One line of an exception."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _release(v: str) -> str:
    """'3.4.0+git1234' -> '3.4.0' (compare releases; local tags vary by build)."""
    return v.split("+", 1)[0].strip()


# ----------------------------------------------------------------------------- one root, all roots


def scan_root(root: CacheRoot, expect: Expect, w: _Walk, probe: bool) -> RootScan:
    """Scan one root (blocking; run it through scan_roots for the time limits)."""
    t0 = time.monotonic()
    from pathlib import Path

    pr = None
    if probe:
        from doctor.cache.location import try_write

        w.path = root.path
        pr = try_write(Path(root.path))
    w.path = root.path
    try:
        st = os.stat(root.path)
    except FileNotFoundError:
        anc = pr.tested if pr is not None and pr.tested else _nearest_existing(root.path)
        return RootScan(root, "missing", "", pr, mount_for(os.path.realpath(anc)) if anc else None, elapsed=time.monotonic() - t0)
    except NotADirectoryError:
        return RootScan(root, "not-a-directory", "", pr, None, detail="a parent is not a directory",
                        elapsed=time.monotonic() - t0)
    except OSError as exc:
        return RootScan(root, "error", "", pr, None, detail=exc.strerror or str(exc), elapsed=time.monotonic() - t0)
    real = os.path.realpath(root.path)
    mount = mount_for(real)
    from doctor.cache.roots import protected_reason

    shared = protected_reason(real, w.expect.cwd)
    if shared:  # not a cache of its own: do not walk (and never offer to move) other people's files
        return RootScan(root, "ok", real, pr, mount, complete=True, shared=shared, elapsed=time.monotonic() - t0)
    if not stat.S_ISDIR(st.st_mode):
        return RootScan(root, "not-a-directory", real, pr, mount, detail=f"{root.path} is {kind_of(st.st_mode)}",
                        elapsed=time.monotonic() - t0)
    if root.kind == "unsloth" and st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        w.add("world-writable", real, mode=f"{stat.S_IMODE(st.st_mode):04o}", owner_uid=st.st_uid,
              ours="yes" if st.st_uid == os.geteuid() else "no", directory="yes")
    walker = {"unsloth": _scan_unsloth, "triton": _scan_triton, "inductor": _scan_inductor, "doctor": _scan_doctor}[root.kind]
    try:
        walker(w, real)
    except _Budget:
        w.complete = False
    quarantine = next((q for q in (real + ".quarantine", os.path.join(real, QUARANTINE_INSIDE)) if os.path.isdir(q)), "")
    return RootScan(root, "ok", real, pr, mount, w.entries, w.files, w.bytes, w.complete, tuple(w.problems),
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
               full: bool = False, lock_age: float = LOCK_AGE, probe: Sequence[str] = ()) -> List[RootScan]:
    """Scan roots concurrently; each stops at `budget` s of walking, and is abandoned after `timeout` s without progress.

    `probe`: the kinds whose writability is tested (a file created and removed in the root or its nearest ancestor).
    """
    start = time.monotonic()
    jobs = []
    for root in roots:
        w = _Walk(root, expect, start + budget, full, lock_age)
        box: Dict[str, Any] = {}

        def target(root: CacheRoot = root, w: _Walk = w, box: Dict[str, Any] = box) -> None:
            try:
                box["scan"] = scan_root(root, expect, w, root.kind in probe)
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
