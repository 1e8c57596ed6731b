"""Apply one cache repair: move aside (never delete), remove a dead lock, tighten a mode, pin a location.

Safety rules, checked for every action, dry run included:
- the root named by the action must be a cache root of THIS process (its environment and working
  directory, see doctor.cache.roots.known_roots); anything else is refused;
- a path must be absolute, contain no `..`, lie inside that root, and reach it without passing through a
  symlink that leads out (every parent is resolved and checked); a symlink entry is moved only when it
  points inside the root; modes are changed through an O_NOFOLLOW descriptor, on files we own;
- "moving aside" is a rename into a quarantine folder beside the root, `<root>.quarantine/<UTC stamp>/`
  with the relative path kept (or `<root>/.doctor-quarantine/<stamp>/` when the root is a mount point or its
  parent is not writable), so the owner regenerates the entry and nothing is lost;
- a lock is removed only while we hold it (non-blocking flock), so a live holder is never robbed and a
  waiter that opened the old file notices the unlink (filelock re-checks st_nlink) instead of racing.
Refusals raise DoctorError with one line saying why.

Actions are the typed ones of doctor.actions, one root each; one action may name several targets:
  MoveToQuarantine(root, paths)   RemoveStaleLock(root, paths)   TightenMode(root, ((path, mode), ...))
  SetEnv(VAR, ABS_DIR, directory=True) for a cache location    MoveToQuarantine(root, whole_root=True): clear
The type decides the operation; nothing is parsed from a string. A SetEnv is applied only when it names one
of the cache variables (UNSLOTH_COMPILE_LOCATION, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, DOCTOR_CACHE_DIR).
Every target is checked before anything is done (one refusal: nothing happens); a target in use (a held
lock, a module being written) is skipped and said so, the others are done.
"""

from __future__ import annotations

import errno
import functools
import os
import shlex
import stat
import time
from pathlib import PurePath
from typing import Callable, List, Optional, Sequence, Tuple

from doctor.actions import Action, MoveToQuarantine, RemoveStaleLock, SetEnv, TightenMode
from doctor.cache.roots import ENV_VARS, known_roots, protected_reason
from doctor.cache.scan.walk import QUARANTINE_INSIDE, lock_state
from doctor.errors import DoctorError

REPAIRS = (MoveToQuarantine, RemoveStaleLock, TightenMode)  # the cache repairs proper (SetEnv is a location)
LOCATION_VARS = frozenset(ENV_VARS.values())
MIN_SOFT_LOCK_AGE = 60.0  # without flock, a lock file younger than this may belong to a writer right now
OP_TIMEOUT = 30.0  # one repair on a responsive disk takes milliseconds
_STAMP: Optional[str] = None


class _Busy(DoctorError):
    """A target in use right now (a held lock, a module being written): skipped, the others still done."""


def session_stamp() -> str:
    """One UTC timestamp per doctor run, so one repair's moves land in one folder."""
    global _STAMP
    if _STAMP is None:
        _STAMP = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return _STAMP


# ----------------------------------------------------------------------------- action builders


def _listing(paths: Sequence[str]) -> str:
    """'a.py' or '3 entries (a.py, b.py, c.py)' for descriptions."""
    names = [os.path.basename(p) or p for p in paths]
    if len(names) == 1:
        return paths[0]
    return f"{len(names)} entries ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"


def quarantine_action(root: str, *paths: str, why: str = "") -> MoveToQuarantine:
    """Move entries into the quarantine beside their cache (they are regenerated on next use)."""
    return MoveToQuarantine(root, tuple(paths), why or f"move {_listing(paths)} to the quarantine beside the cache")


def remove_lock_action(root: str, *paths: str) -> RemoveStaleLock:
    """Remove lock files nobody holds."""
    return RemoveStaleLock(root, tuple(paths), f"remove stale lock{'s' if len(paths) > 1 else ''} {_listing(paths)}")


def chmod_action(root: str, *targets: Tuple[str, int]) -> TightenMode:
    """Tighten modes, (path, mode) per file (only ever removes permissions)."""
    modes = sorted({f"{m:04o}" for _, m in targets})
    return TightenMode(root, tuple(targets), f"chmod {'/'.join(modes)} {_listing([p for p, _ in targets])}")


def set_location_action(var: str, path: str, why: str = "") -> SetEnv:
    """Create an absolute cache directory and point the owner at it (for this process; lines to persist it).

    The description names the variable and the directory, whatever renders it (a plan, markdown, JSON).
    """
    setting = f"{var}={path}"
    text = why if setting in why else f"{why or 'use a dedicated directory'}: {setting}"
    return SetEnv(var, path, text, directory=True)


def clear_action(root: str) -> MoveToQuarantine:
    """Move a whole cache into its quarantine."""
    return MoveToQuarantine(root, whole_root=True)


def is_location(action: Action) -> bool:
    """Whether an action sets one of the cache location variables (applied as a set-location)."""
    return isinstance(action, SetEnv) and action.name in LOCATION_VARS


def persist_lines(var: str, path: str) -> List[str]:
    """How to make a location stick: shell, notebook magic, or Python before the owner is imported."""
    q = shlex.quote(path)
    owner = {ENV_VARS["unsloth"]: "unsloth", ENV_VARS["triton"]: "triton/torch",
             ENV_VARS["inductor"]: "torch", ENV_VARS["doctor"]: "tune-doctor"}.get(var, "the library")
    return [f"export {var}={q}    # shell: add to ~/.bashrc or the job script",
            f"%env {var}={path}    # Jupyter/Colab: first cell, before importing {owner}",
            f"import os; os.environ[{var!r}] = {path!r}    # Python: before importing {owner}"]


# ----------------------------------------------------------------------------- safety checks


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _no_dotdot(path: str, what: str) -> str:
    """Absolute and free of '..' components, else refuse."""
    if not path or not os.path.isabs(path):
        raise DoctorError(f"refused: {what} {path!r} is not an absolute path")
    if ".." in PurePath(path).parts:
        raise DoctorError(f"refused: {what} {path!r} contains '..'")
    return os.path.normpath(path)


def check_root(root: str) -> Tuple[str, str]:
    """(lexical, real) for a root that is one of this process's cache roots; DoctorError otherwise."""
    lex = _no_dotdot(root, "cache root")
    real = os.path.realpath(lex)
    roots = [os.path.normpath(r.path) for r in known_roots()]
    match = lex in roots
    if not match:  # the same directory reached through a symlink; resolving a hung root must not hang us
        from doctor._util.timeouts import TimedOut, call_with_timeout

        for rp in roots:
            try:
                if call_with_timeout(functools.partial(os.path.realpath, rp), 2.0) == real:
                    match = True
                    break
            except TimedOut:
                continue
    if match:
        why = protected_reason(real)
        if why:
            raise DoctorError(f"refused: cache root {lex} is {why}; point the cache at a dedicated directory first")
        return lex, real
    raise DoctorError(f"refused: {lex} is not a cache root of this environment "
                      "(roots come from UNSLOTH_COMPILE_LOCATION, TRITON_CACHE_DIR/TRITON_HOME, "
                      "TORCHINDUCTOR_CACHE_DIR, DOCTOR_CACHE_DIR and the working directory)")


def check_path(root: str, path: str) -> Tuple[str, str]:
    """(real root, path to operate on) for a path inside a known root, reached without leaving it; else refuse."""
    lex_root, real_root = check_root(root)
    p = _no_dotdot(path, "path")
    if _inside(p, real_root):
        rel = os.path.relpath(p, real_root)
    elif _inside(p, lex_root):
        rel = os.path.relpath(p, lex_root)
    else:
        raise DoctorError(f"refused: {p} is outside the cache root {lex_root}")
    if rel == ".":
        return real_root, real_root
    target = os.path.join(real_root, rel)
    parent = os.path.realpath(os.path.dirname(target))
    if not _inside(parent, real_root):
        raise DoctorError(f"refused: {p} leads outside the cache root {lex_root} through a symlink (to {parent})")
    target = os.path.join(parent, os.path.basename(target))
    if os.path.islink(target):
        dest = os.path.realpath(target)
        if not _inside(dest, real_root):
            raise DoctorError(f"refused: {p} is a symlink to {dest}, outside the cache root {lex_root}")
    return real_root, target


# ----------------------------------------------------------------------------- the operations


def _quarantine_base(real_root: str) -> str:
    """<root>.quarantine/<stamp> beside the root when that is the same filesystem and writable, else inside it."""
    parent = os.path.dirname(real_root)
    beside = real_root + ".quarantine"
    try:
        same_fs = os.stat(parent).st_dev == os.stat(real_root).st_dev
    except OSError:
        same_fs = False
    if same_fs and (os.path.isdir(beside) or os.access(parent, os.W_OK)):
        return os.path.join(beside, session_stamp())
    return os.path.join(real_root, QUARANTINE_INSIDE, session_stamp())


def _free_name(dest: str) -> str:
    """dest, or dest.1, dest.2 ... when taken (two moves of one path in the same second)."""
    if not os.path.lexists(dest):
        return dest
    n = 1
    while os.path.lexists(f"{dest}.{n}"):
        n += 1
    return f"{dest}.{n}"


def _unsloth_lock_held(real_root: str, target: str) -> bool:
    """True when unsloth_zoo's lock for this module (<root>/.locks/.lock.<name>) is held right now."""
    lock = os.path.join(real_root, ".locks", ".lock." + os.path.basename(target))
    return os.path.isfile(lock) and not os.path.islink(lock) and lock_state(lock) == "held"


def _move(real_root: str, target: str, dry_run: bool) -> str:
    """Rename target into the quarantine, keeping its path relative to the root; returns the destination."""
    rel = os.path.relpath(target, real_root)
    base = _quarantine_base(real_root)
    dest = _free_name(os.path.join(base, rel))
    if dry_run:
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.rename(target, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        base = os.path.join(real_root, QUARANTINE_INSIDE, session_stamp())  # root is its own mount
        dest = _free_name(os.path.join(base, rel))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(target, dest)
    return dest


def _quarantine(root: str, path: str, dry_run: bool) -> str:
    real_root, target = check_path(root, path)
    if target == real_root:
        raise DoctorError(f"refused: {path} is the cache root itself (use `doctor cache clear`)")
    if not os.path.lexists(target):
        return f"nothing to do: {target} no longer exists"
    if _unsloth_lock_held(real_root, target):
        raise _Busy(f"refused: {target} is being written (its unsloth lock is held by a running process)")
    dest = _move(real_root, target, dry_run)
    return f"{'would move' if dry_run else 'moved'} {target} -> {dest}"


def _remove_lock(root: str, path: str, dry_run: bool) -> str:
    _, target = check_path(root, path)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return f"nothing to do: {target} no longer exists"
    if not stat.S_ISREG(st.st_mode):
        raise DoctorError(f"refused: {target} is not a regular file")
    import fcntl

    fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _Busy(f"refused: {target} is held by a running process") from None
            if exc.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL):
                raise
            if time.time() - st.st_mtime < MIN_SOFT_LOCK_AGE:  # no flock here: only age tells a dead lock
                raise DoctorError(f"refused: {target} is younger than {MIN_SOFT_LOCK_AGE:g} s and this "
                                  "filesystem has no flock to tell whether it is held") from None
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise DoctorError(f"refused: {target} changed while it was being checked")
        if dry_run:
            return f"would remove stale lock {target} (nobody holds it)"
        os.unlink(target)  # while we hold it: a waiter that opened the old inode sees st_nlink == 0 and retries
    finally:
        os.close(fd)
    return f"removed stale lock {target}"


def _chmod_check(root: str, path: str, mode: int) -> Tuple[str, os.stat_result, int]:
    """(target, its lstat, mode) for a chmod that is allowed; DoctorError otherwise."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise DoctorError(f"refused: bad mode {mode!r}")
    if mode & 0o022:
        raise DoctorError(f"refused: mode {mode:04o} would leave the file writable by others")
    _, target = check_path(root, path)
    st = os.lstat(target)
    if stat.S_ISLNK(st.st_mode) or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise DoctorError(f"refused: {target} is not a regular file or directory")
    if st.st_uid != os.geteuid():
        raise DoctorError(f"refused: {target} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})")
    return target, st, mode


def _chmod(root: str, path: str, mode: int, dry_run: bool) -> str:
    try:
        target, st, mode = _chmod_check(root, path, mode)
    except FileNotFoundError:
        return f"nothing to do: {path} no longer exists"
    old = stat.S_IMODE(st.st_mode)
    if dry_run:
        return f"would chmod {target} {old:04o} -> {mode:04o}"
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0)
    fd = os.open(target, flags)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise DoctorError(f"refused: {target} changed while it was being checked")
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return f"chmod {target} {old:04o} -> {mode:04o}"


def _set_location(var: str, path: str, dry_run: bool) -> str:
    if var not in LOCATION_VARS:
        raise DoctorError(f"refused: {var} is not a cache location variable ({', '.join(sorted(LOCATION_VARS))})")
    p = _no_dotdot(path, "location")
    if os.path.lexists(p) and not os.path.isdir(p):
        raise DoctorError(f"refused: {p} exists and is not a directory")
    persist = "; persist it with: " + persist_lines(var, p)[0].split("    #")[0] + \
        f"  (notebook: %env {var}={p}, before the import)"
    if dry_run:
        return f"would {'use' if os.path.isdir(p) else 'create'} {p} for {var}" + persist
    from pathlib import Path

    # lazy: only when a location is applied (the check path imports this module for the action types)
    from doctor._util.timeouts import TimedOut, call_with_timeout
    from doctor.cache.location import try_write

    created = not os.path.isdir(p)
    try:
        os.makedirs(p, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise DoctorError(f"cannot create {p}: {exc.strerror or exc}") from None
    try:
        ok = call_with_timeout(lambda: try_write(Path(p)), 5.0)
    except TimedOut:
        raise DoctorError(f"{p} did not answer within 5 s") from None
    if not ok.writable:
        raise DoctorError(f"{p} is not writable: {ok.detail}")
    os.environ[var] = p  # this process (and what it starts) uses it now; the shell needs the line below
    return f"{'created' if created else 'using'} {p} and set {var} for this process" + persist


def _clear(root: str, dry_run: bool) -> str:
    lex_root, real_root = check_root(root)
    if not os.path.isdir(real_root):
        return f"nothing to clear: {lex_root} does not exist"
    base = _quarantine_base(real_root)
    if base.startswith(os.path.join(real_root, QUARANTINE_INSIDE)):
        # A mount point (or an unwritable parent): move the contents, keep the directory.
        names = [n for n in sorted(os.listdir(real_root)) if n != QUARANTINE_INSIDE]
        if dry_run:
            return f"would move {len(names)} entries of {real_root} -> {base}"
        os.makedirs(base, exist_ok=True)
        for n in names:
            os.rename(os.path.join(real_root, n), _free_name(os.path.join(base, n)))
        return f"moved {len(names)} entries of {real_root} -> {base}"
    dest = _free_name(os.path.join(base, os.path.basename(real_root)))
    if dry_run:
        return f"would move {real_root} -> {dest} (and leave an empty {real_root})"
    mode = stat.S_IMODE(os.stat(real_root).st_mode)
    os.makedirs(base, exist_ok=True)
    os.rename(real_root, dest)
    os.mkdir(real_root, mode)  # an empty cache in place: a symlink to it, or the owner's makedirs, keeps working
    os.chmod(real_root, mode)  # mkdir is subject to the umask
    return f"moved {real_root} -> {dest} (an empty {real_root} is left in its place)"


def _operation(action: Action) -> Tuple[str, Callable[..., str], List[tuple]]:
    """(name, function, argument tuples) for a cache action, by its type; DoctorError for any other action."""
    if isinstance(action, MoveToQuarantine):
        if action.whole_root:
            return "clear", _clear, [(action.root,)]
        return "quarantine", _quarantine, [(action.root, p) for p in action.paths]
    if isinstance(action, RemoveStaleLock):
        return "remove-lock", _remove_lock, [(action.root, p) for p in action.paths]
    if isinstance(action, TightenMode):
        return "chmod", _chmod, [(action.root, p, m) for p, m in action.targets]
    if isinstance(action, SetEnv):
        if not is_location(action):
            raise DoctorError(f"refused: {action.name} is not a cache location variable "
                              f"({', '.join(sorted(LOCATION_VARS))})")
        return "set-location", _set_location, [(action.name, action.value)]
    kind = getattr(action, "kind", "")
    raise DoctorError(f"not a cache repair: {getattr(kind, 'value', kind) or type(action).__name__}")


def apply_cache_action(action: Action, dry_run: bool = False) -> str:
    """Perform one cache repair (or, with dry_run, check it and describe it); one line saying what happened.

    Raises DoctorError when the action is refused (outside every cache root, `..`, a symlink leading out,
    a lock that is held, a file that is not ours) or is not a cache action.
    """
    op, fn, items = _operation(action)
    from doctor._util.timeouts import TimedOut, call_with_timeout  # lazy: only when a repair is applied

    try:
        # In a daemon thread with a limit: a cache on a hung mount gives an error, not a frozen doctor.
        return call_with_timeout(lambda: _run_all(op, fn, items, dry_run), OP_TIMEOUT)
    except TimedOut:
        raise DoctorError(f"{op} did not finish within {OP_TIMEOUT:g} s: the filesystem does not answer") from None


def _run_all(op: str, fn: Callable[..., str], items: Sequence[tuple], dry_run: bool) -> str:
    """Check every target first (one refusal: nothing is done), then do each; busy targets are skipped."""
    for item in items:  # all-or-nothing on safety: paths, roots, symlinks, modes, ownership
        try:
            if op in ("quarantine", "remove-lock"):
                check_path(item[0], item[1])
            elif op == "chmod":
                _chmod_check(*item)
        except FileNotFoundError:
            continue  # gone already: reported as "nothing to do" below
        except OSError as exc:
            raise DoctorError(f"{op} failed: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")) from None
    done: List[str] = []
    busy: List[str] = []
    for item in items:
        try:
            done.append(fn(*item, dry_run))
        except _Busy as exc:
            busy.append(str(exc))
        except OSError as exc:  # a race or a permission problem: one line, saying how far it got
            so_far = f" (after {len(done)} of {len(items)} done)" if done else ""
            raise DoctorError(f"{op} failed{so_far}: {exc.strerror or exc}"
                              + (f": {exc.filename}" if exc.filename else "")) from None
    if busy and not done:
        raise DoctorError(busy[0] if len(busy) == 1 else f"{busy[0]} (and {len(busy) - 1} more in use)")
    if len(done) == 1 and not busy:
        return done[0]
    shown = "; ".join(done[:3]) + (f"; ... (+{len(done) - 3} more)" if len(done) > 3 else "")
    return shown + (f"; skipped {len(busy)} in use: {busy[0]}" if busy else "")
