"""What an applied plan changed, saved before it runs, and the plan that puts it back (`doctor check --undo`).

pip is not atomic: a plan of three pip runs can stop after the first. So before anything runs, the exact
versions and builds of every package the plan touches are saved (the version string with its local label,
where it came from when that is known, xformers' cpp_lib CUDA), and each step's outcome is recorded as it
ends. The undo is computed from that saved "before" and the environment as it is NOW, so it works however
far the plan got: what is already as it was is left alone, what the plan added is removed, what it moved is
reinstalled with an exact pin (`name===version`) from its own index.

One state file per environment, keyed by the target interpreter's prefix, in the per-user state directory
(platformdirs; XDG_STATE_HOME on Linux). Every write holds a filelock and replaces the file atomically
(temp file + os.replace), so a reader never sees half a file and two doctors never interleave.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from packaging.utils import canonicalize_name

from doctor import envvars
from doctor.actions import Action, PipInstall, PipUninstall
from doctor.errors import DoctorError
from doctor.facts import Facts
from doctor.resolve.plan import Change, Plan

STATE_FORMAT = 1  # bumped when the file's meaning changes; an unknown format is refused, never guessed at
MAX_RECORDS = 20  # applied plans kept per environment (the newest are undone first)
LOCK_TIMEOUT = 30.0  # seconds to wait for another doctor writing the same state file
APP = "tune-doctor"

# Step outcomes, in the order a step passes through them.
PENDING = "not run"
APPLIED = "applied"
FAILED = "failed"

# Record outcomes.
APPLYING = "applying"  # started; a doctor killed mid-plan leaves this (the undo still works)
DONE = "applied"
PARTIAL = "partly applied"
UNDONE = "undone"

# A PyTorch variant label on a version: the build came from that family's index (<base>/cu121).
_VARIANT = re.compile(r"^(cu\d+|cpu|rocm\d+(\.\d+)*|xpu)$")
NO_DEPS_WHY = "--no-deps: the undo restores the exact versions saved before the plan; everything else is as it was"


class Saved(NamedTuple):
    """One package as it was before a plan ran."""

    name: str  # canonical name
    version: Optional[str]  # exact version string, local label included; None: not installed (the plan adds it)
    index_url: Optional[str] = None  # the index it came from, when known
    url: Optional[str] = None  # PEP 610 direct URL (a wheel file or archive), when it was installed from one
    xformers_cuda: Optional[int] = None  # xformers' cpp_lib.json CUDA (1208), its build beside the version


class StepRecord(NamedTuple):
    """One pip run of a plan and how it ended."""

    description: str
    command: str  # the command line as shown to the user
    packages: Tuple[str, ...]  # canonical names it installs or removes
    status: str = PENDING  # PENDING / APPLIED / FAILED
    detail: str = ""  # pip's reason when it failed


class Record(NamedTuple):
    """One applied plan: what was there before, what it meant to change, how far it got."""

    id: str  # when it started, unique within the file ("20260102T030405.123456Z")
    command: str  # "check --fix", "install flash-attn"
    status: str  # APPLYING / DONE / PARTIAL / UNDONE
    before: Tuple[Saved, ...]
    changes: Tuple[Change, ...]
    steps: Tuple[StepRecord, ...]
    python: str = ""  # the interpreter it was applied to

    @property
    def progress(self) -> str:
        """'step 1 applied, step 2 failed, step 3 not run' (or 'all 2 steps applied')."""
        if self.steps and all(s.status == APPLIED for s in self.steps):
            return f"all {len(self.steps)} step(s) applied"
        return ", ".join(f"step {i} {s.status}" for i, s in enumerate(self.steps, 1))


class UndoPlan(NamedTuple):
    """The actions that put an environment back as it was before one record's plan."""

    record: Record
    changes: Tuple[Change, ...]  # now -> before
    actions: Tuple[Action, ...]  # an uninstall of what the plan added, then one install per index
    unchanged: Tuple[str, ...] = ()  # packages already as they were
    notes: Tuple[str, ...] = ()


# -- where the state lives ------------------------------------------------------------------------------------


def default_root() -> str:
    """$DOCTOR_STATE_DIR, else the per-user state directory (platformdirs: $XDG_STATE_HOME/tune-doctor on Linux)."""
    if os.environ.get(envvars.DOCTOR_STATE_DIR):
        return os.path.abspath(os.environ[envvars.DOCTOR_STATE_DIR])
    import platformdirs

    return platformdirs.user_state_dir(APP, appauthor=False)


def environment_key(prefix: str) -> str:
    """A short stable name for one environment: the hash of its real prefix."""
    return hashlib.sha256(os.path.realpath(prefix).encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Store:
    """The state file of one environment, read and written under its lock."""

    def __init__(self, prefix: str, python: str = "", root: Optional[str] = None) -> None:
        self.prefix = prefix
        self.python = python
        self.dir = os.path.join(root or default_root(), "environments", environment_key(prefix))
        self.path = os.path.join(self.dir, "state.json")
        self.constraints_path = os.path.join(self.dir, "constraints.txt")

    def read(self) -> Dict[str, Any]:
        """The file's content (an empty state when there is none); DoctorError when it is unreadable or foreign."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return self._empty()
        except (OSError, ValueError, RecursionError) as exc:
            raise DoctorError(f"the doctor's state file {self.path} is unreadable ({_why(exc)}); "
                              "move it away to start over") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT or not isinstance(data.get("records"), list):
            raise DoctorError(f"the doctor's state file {self.path} is not in a format this doctor knows "
                              f"(format {data.get('format') if isinstance(data, dict) else '?'}); move it away to start over")
        return data

    def _empty(self) -> Dict[str, Any]:
        return {"format": STATE_FORMAT, "prefix": self.prefix, "python": self.python, "records": [], "sources": {}}

    def update(self, change: Callable[[Dict[str, Any]], None]) -> None:
        """Read, change and write back the state under its lock; DoctorError (one line) when that cannot be done."""
        from filelock import FileLock, Timeout

        try:
            os.makedirs(self.dir, exist_ok=True)
            with FileLock(self.path + ".lock", timeout=LOCK_TIMEOUT):
                data = self.read()
                change(data)
                data["records"] = data["records"][-MAX_RECORDS:]
                write_atomic(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        except Timeout:
            raise DoctorError(f"another doctor holds {self.path}.lock for over {LOCK_TIMEOUT:g} s") from None
        except OSError as exc:
            raise DoctorError(f"cannot write the doctor's state in {self.dir} ({_why(exc)})") from None

    def records(self) -> List[Record]:
        """Every record, oldest first."""
        return [_record(r, self.path) for r in self.read()["records"]]

    def sources(self) -> Dict[str, Tuple[str, Optional[str]]]:
        """name -> (version, index URL) of what earlier plans installed here: where those builds came from."""
        out: Dict[str, Tuple[str, Optional[str]]] = {}
        for name, v in (self.read().get("sources") or {}).items():
            if isinstance(v, dict) and isinstance(v.get("version"), str):
                out[name] = (v["version"], v.get("index_url") if isinstance(v.get("index_url"), str) else None)
        return out


def write_atomic(path: str, text: str) -> None:
    """Write text to path through a temp file in the same directory and os.replace (no half-written file)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# -- saving before a plan runs ---------------------------------------------------------------------------------


def touched(plan: Plan) -> Tuple[str, ...]:
    """Canonical names of every package a plan changes (its changes and its actions), in order."""
    names: List[str] = [canonicalize_name(c.name) for c in plan.changes]
    for a in plan.actions:
        names.extend(a.packages())
    return tuple(dict.fromkeys(names))


def snapshot(facts: Facts, names: Sequence[str], sources: Mapping[str, Tuple[str, Optional[str]]] = {}) -> Tuple[Saved, ...]:
    """The exact version and build of each package as installed now, with where it came from when known."""
    out: List[Saved] = []
    for name in names:
        d = facts.dist(name)
        if d is None:
            out.append(Saved(name, None))
            continue
        index = sources[name][1] if name in sources and sources[name][0] == d.version else None
        url = None
        du = d.direct_url or {}
        if isinstance(du.get("url"), str) and "archive_info" in du:  # a wheel or archive file/URL, not a dir or VCS
            url = str(du["url"])
        cuda = facts.xformers.cuda_version if name == "xformers" and facts.xformers is not None else None
        out.append(Saved(name, d.version, index, url, cuda))
    return tuple(out)


def _now_id() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def begin(store: Store, facts: Facts, plan: Plan, command: str, steps: Sequence[Tuple[str, str, Tuple[str, ...]]]) -> str:
    """Save what the plan touches as it is now, and its steps as not run yet; returns the record's id.

    `steps`: (description, command line, packages) of each pip run, in order. DoctorError when the state
    cannot be written: then nothing may be applied.
    """
    rid = _now_id()
    before = snapshot(facts, touched(plan), store.sources())

    def add(data: Dict[str, Any]) -> None:
        data["python"] = store.python or data.get("python", "")
        data["records"].append({
            "id": rid, "command": command, "status": APPLYING, "python": store.python,
            "before": [s._asdict() for s in before],
            "changes": [c._asdict() for c in plan.changes],
            "steps": [{"description": d, "command": c, "packages": list(p), "status": PENDING, "detail": ""}
                      for d, c, p in steps],
        })

    store.update(add)
    return rid


def mark_step(store: Store, rid: str, index: int, status: str, detail: str = "") -> None:
    """Record how step `index` (0-based) of record `rid` ended."""

    def mark(data: Dict[str, Any]) -> None:
        rec = _find(data, rid)
        if rec is not None and 0 <= index < len(rec["steps"]):
            rec["steps"][index].update(status=status, detail=detail)

    store.update(mark)


def finish(store: Store, rid: str, status: str, installed: Sequence[Tuple[str, str, Optional[str]]] = ()) -> None:
    """Close record `rid` with its status; `installed`: (name, version, index URL) now installed by it (their source)."""

    def close(data: Dict[str, Any]) -> None:
        rec = _find(data, rid)
        if rec is not None:
            rec["status"] = status
        sources = data.setdefault("sources", {})
        for name, version, index in installed:
            sources[name] = {"version": version, "index_url": index}

    store.update(close)


def mark_undone(store: Store, rid: str) -> None:
    """Record that `rid`'s plan was undone (the next --undo takes the one before it)."""
    finish(store, rid, UNDONE)


def last_record(store: Store) -> Optional[Record]:
    """The newest record not undone yet, or None."""
    return next((r for r in reversed(store.records()) if r.status != UNDONE), None)


def _find(data: Dict[str, Any], rid: str) -> Optional[Dict[str, Any]]:
    return next((r for r in data["records"] if isinstance(r, dict) and r.get("id") == rid), None)


def _record(raw: Any, path: str) -> Record:
    """A Record from the file; DoctorError naming the file when an entry is not what this doctor wrote."""
    try:
        before = tuple(Saved(canonicalize_name(b["name"]), b.get("version"), b.get("index_url"), b.get("url"),
                             b.get("xformers_cuda")) for b in raw["before"])
        changes = tuple(Change(c["name"], c.get("before"), c.get("after"), c.get("index_url"), c.get("reason", ""),
                               bool(c.get("rebuild"))) for c in raw["changes"])
        steps = tuple(StepRecord(s["description"], s["command"], tuple(s.get("packages", ())), s.get("status", PENDING),
                                 s.get("detail", "")) for s in raw["steps"])
        return Record(str(raw["id"]), str(raw["command"]), str(raw["status"]), before, changes, steps,
                      str(raw.get("python", "")))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DoctorError(f"the doctor's state file {path} has an entry it cannot read ({type(exc).__name__}: {exc}); "
                          "move it away to start over") from None


# -- the undo -------------------------------------------------------------------------------------------------


def source_of(saved: Saved, torch_index_base: str, default_index: Optional[str]) -> Tuple[str, Optional[str]]:
    """(requirement, index URL) that reinstalls exactly `saved`: its direct URL, else `name===version` from its index.

    The index: the one an earlier plan installed it from; else, for a PyTorch variant label (+cu121, +cpu),
    that family's index under `torch_index_base`; else `default_index` (None: pip's configuration).
    """
    assert saved.version is not None
    if saved.url:
        return f"{saved.name} @ {saved.url}", None
    index = saved.index_url
    if index is None:
        label = saved.version.partition("+")[2]
        index = f"{torch_index_base.rstrip('/')}/{label}" if _VARIANT.match(label) else default_index
    return f"{saved.name}==={saved.version}", index


def undo_plan(record: Record, facts: Facts, torch_index_base: str, default_index: Optional[str] = None) -> UndoPlan:
    """The actions that put back `record`'s "before", computed against the environment as it is now (`facts`)."""
    applied = {p for s in record.steps if s.status != PENDING for p in s.packages}  # a failed pip run may have half-run
    rebuilt = {canonicalize_name(c.name) for c in record.changes if c.rebuild or (c.before is not None and c.before == c.after)}
    removals: List[str] = []
    changes: List[Change] = []
    unchanged: List[str] = []
    groups: Dict[Tuple[Optional[str], bool], List[str]] = {}
    for s in record.before:
        now = facts.dist(s.name)
        current = now.version if now is not None else None
        if s.version is None:
            if current is not None:
                removals.append(s.name)
                changes.append(Change(s.name, current, None, None, f"not installed before {record.command}"))
            else:
                unchanged.append(s.name)
            continue
        same_build = (s.xformers_cuda is None or facts.xformers is None or facts.xformers.cuda_version == s.xformers_cuda)
        if current == s.version and same_build and not (s.name in rebuilt and s.name in applied):
            unchanged.append(s.name)
            continue
        req, index = source_of(s, torch_index_base, default_index)
        force = current == s.version  # same version string, another build: pip would call it satisfied
        groups.setdefault((index, force), []).append(req)
        changes.append(Change(s.name, current, s.version, index, f"as before {record.command}", force))
    actions: List[Action] = []
    if removals:
        actions.append(PipUninstall(tuple(removals), description="remove what the plan added: " + ", ".join(removals)))
    for (index, force), reqs in sorted(groups.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or "", kv[0][1])):
        actions.append(PipInstall(tuple(reqs), description="restore " + ", ".join(reqs), index_url=index, no_deps=True,
                                  no_deps_why=NO_DEPS_WHY, force_reinstall=force,
                                  force_reinstall_why="the same version string was there, but another build" if force else ""))
    notes: List[str] = []
    if record.status != DONE:
        notes.append(f"the plan was {record.status}: {record.progress}; the undo is computed from what is installed now")
    return UndoPlan(record, tuple(changes), tuple(actions), tuple(unchanged), tuple(notes))
