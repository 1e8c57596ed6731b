"""Cache scans (and import verdicts) -> Findings with typed repair actions; the `doctor check` rule.

Three depths:
  check   (inside `doctor check`): only caches that exist or whose owner is installed; a 0.15 s walk
          budget; cheap findings only (writability, network filesystem, version headers, dead locks,
          zero-byte files, broken Triton groups); no child processes. Imports: `doctor cache verify`.
  status  every selected root, walked in full for size and counts, plus unsloth's location findings.
  verify  status + every unsloth compiled module imported in a child process (doctor.cache.verify).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from doctor import envvars
from doctor.actions import Action, SetEnv
from doctor.cache.problems import names as _names
from doctor.cache.problems import problem_findings
from doctor.cache.repair import REPAIRS, is_location, quarantine_action, set_location_action
from doctor.cache.roots import ENV_VARS, KINDS, resolve_roots, suggest_location
from doctor.cache.scan import Expect, RootScan, scan_roots
from doctor.cache.scan.walk import HEADER_FIELDS, LOCK_AGE
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding

if TYPE_CHECKING:
    from doctor.cache.verify import ModuleResult
    from doctor.compat_matrix.model import Matrix

CHECK_BUDGET = 0.15  # seconds of walking inside `doctor check` (all roots, concurrently)
FULL_BUDGET = 60.0
TRITON_DISTS = ("triton", "pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu")


# What the metadata cannot tell, said once instead of guessed per entry.
LIMITS = {
    "unsloth": "Version headers are compared by text, as unsloth compares them. Import checks run with this "
               "environment's packages (unsloth imported first when installed). A module cut exactly between two "
               "statements still imports; only trainer modules missing their class are caught as incomplete.",
    "triton": "GPU arch comes from each kernel's metadata 'target'. The Triton version is known only where the "
              "metadata has 'triton_version' (newer Triton); older entries cannot be dated. Triton's cache key "
              "includes its version and target, so foreign entries are never loaded, only stored.",
    "inductor": "Inductor's FX-graph and AOT entries are pickles: the doctor never unpickles them, so the torch "
                "version an entry was built for is not readable. Inductor's keys include the torch version, so "
                "entries from another torch are unused, not wrong. Its triton/<device>/ kernels get the Triton checks.",
    "doctor": "Entries carry a format stamp (JSON) or a stamp with a sha256 of the code (modules), checked on every read.",
}


class Diagnosis(NamedTuple):
    """Everything one cache inspection produced."""

    scans: Tuple[RootScan, ...]
    findings: Tuple[Finding, ...]
    verified: Tuple["ModuleResult", ...] = ()  # when imports were checked
    verify_note: str = ""


def expect_from(facts: Facts) -> Expect:
    """Installed versions and GPU archs, as unsloth's header and Triton's metadata spell them."""
    versions = {f: facts.version_of(f.replace("_", "-")) or "0" for f in HEADER_FIELDS}
    if versions["unsloth"] == "0" and versions["unsloth_zoo"] == "0":
        versions = {}
    triton = next((facts.version_of(d) for d in TRITON_DISTS if facts.version_of(d)), None)
    archs = frozenset(g.compute_capability[0] * 10 + g.compute_capability[1]
                      for g in facts.hardware.gpus if g.compute_capability)
    return Expect(versions, triton, archs, facts.cwd)


def _owner_installed(facts: Facts, kind: str) -> bool:
    """Whether the library that writes this cache is installed (the doctor always is)."""
    if kind == "unsloth":
        return facts.dist("unsloth") is not None or facts.dist("unsloth-zoo") is not None
    if kind == "triton":
        return any(facts.dist(d) is not None for d in TRITON_DISTS)
    if kind == "inductor":
        return facts.dist("torch") is not None
    return True


def _env(facts: Facts) -> Dict[str, str]:
    """The variables the roots depend on: Facts' relevant ones, plus HOME/user/tmp from this process."""
    env = dict(os.environ)
    for var in (*ENV_VARS.values(), envvars.TRITON_HOME):
        if var in facts.env:
            env[var] = facts.env[var]
        else:
            env.pop(var, None)
    return env


# ----------------------------------------------------------------------------- evidence helpers


def _size(n: int) -> str:
    """Human-readable size."""
    f = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if f < 1024 or unit == "GB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"


def _root_ev(s: RootScan) -> Dict[str, object]:
    ev: Dict[str, object] = {"cache": s.root.label, "path": s.root.path, "resolved from": s.root.source}
    if s.real_path and s.real_path != s.root.path:
        ev["real path"] = s.real_path
    if s.mount:
        ev["filesystem"] = f"{s.mount.fs_type} ({s.mount.source} on {s.mount.mount_point})"
    return ev


def _location_fix(s: RootScan, why: str) -> SetEnv:
    """Point the owner at a local, writable, absolute, per-user directory."""
    return set_location_action(s.root.env_var, suggest_location(s.root.kind, avoid=s.root.path), why)


# ----------------------------------------------------------------------------- findings per root


REPAIR_HINT = " `doctor cache repair` (or `doctor check --fix`) applies it; entries are moved aside, never deleted."


def _hinted(findings: List[Finding]) -> List[Finding]:
    """Say which command applies a cache repair, on the findings that have one."""
    return [f._replace(explanation=f.explanation + REPAIR_HINT)
            if any(isinstance(a, REPAIRS) for a in f.fix) else f
            for f in findings]


def root_findings(s: RootScan, facts: Facts, mode: str) -> List[Finding]:
    """Findings about one root: reachability, writability, filesystem, its problems, and a summary."""
    return _hinted(_root_findings(s, facts, mode))


def _root_findings(s: RootScan, facts: Facts, mode: str) -> List[Finding]:
    """root_findings without the repair hint."""
    installed = _owner_installed(facts, s.root.kind)
    covered = mode == "check" and s.root.kind == "unsloth" and s.root.role == "primary"  # the location rule reports these
    ev = _root_ev(s)
    if s.status == "unresponsive":
        return [] if covered else [_unresponsive(s, ev)]
    if s.status in ("not-a-directory", "error") and not covered:
        return [_unusable(s, ev, installed)]
    out: List[Finding] = []
    wc = s.write_check
    if wc is not None and not wc.writable and not covered:
        out.append(_unwritable(s, ev, installed))
    if s.mount is not None and s.mount.network and (s.status == "ok" or installed):
        out.append(_network_fs(s, ev))
    if s.status == "ok" and s.shared:
        out.append(_shared_directory(s, ev))
        return out
    if s.status == "ok":
        out.extend(problem_findings(s, expect_from(facts)))
    return out


def _unresponsive(s: RootScan, ev: Dict[str, object]) -> Finding:
    """The root did not answer (a stalled mount): its owner would hang the same way."""
    return finding("cache.unresponsive", Severity.ERROR, Category.CACHES,
                   f"{s.root.label} at {s.root.path} did not answer", {**ev, "problem": s.detail},
                   "Reading or writing there hangs (a stalled network mount, a dead FUSE daemon). The "
                   "library that uses this cache would hang the same way, at import or at the first "
                   "compile.", (_location_fix(s, "use a local directory instead"),), subject=s.root.path)


def _unusable(s: RootScan, ev: Dict[str, object], installed: bool) -> Finding:
    """The root is not a directory, or stat fails on it."""
    return finding("cache.unwritable", Severity.ERROR if installed else Severity.WARN, Category.CACHES,
                   f"{s.root.label} at {s.root.path} cannot be used: {s.detail}", {**ev, "problem": s.detail},
                   "Its owner creates files there; it fails at the first write.",
                   (_location_fix(s, "use a writable directory instead"),), subject=s.root.path)


_UNWRITABLE_WHY = {
    "triton": "Triton writes every compiled kernel there; the first kernel compile fails "
              "(PermissionError / OSError), which is how read-only home directories break training.",
    "inductor": "torch.compile writes generated code and kernels there; compilation fails.",
    "doctor": "Probe verdicts cannot be cached: every check re-runs its probes.",
    "unsloth": "unsloth falls back to a temp dir and recompiles on every run.",
}


def _unwritable(s: RootScan, ev: Dict[str, object], installed: bool) -> Finding:
    """The write check failed: the owner cannot create its files there."""
    wc = s.write_check
    sev = Severity.ERROR if installed and s.root.kind != "doctor" else Severity.WARN
    what = "is not writable" if s.status == "ok" else f"cannot be created in {wc.tested}"
    return finding("cache.unwritable", sev, Category.CACHES, f"{s.root.label} at {s.root.path} {what}",
                   {**ev, "tested": wc.tested, "problem": wc.detail}, _UNWRITABLE_WHY[s.root.kind],
                   (_location_fix(s, "use a writable absolute directory"),), subject=s.root.path)


def _network_fs(s: RootScan, ev: Dict[str, object]) -> Finding:
    """The root is on NFS/SMB/Lustre/sshfs."""
    assert s.mount is not None
    return finding("cache.network-fs", Severity.WARN, Category.CACHES,
                   f"{s.root.label} is on a network filesystem ({s.mount.fs_type})", ev,
                   "Compiled caches on NFS/SMB/Lustre/sshfs see stale file handles when another node "
                   "rewrites a file, may show a half-written file as complete (attribute caching), and "
                   "lock differently (flock is emulated or missing; filelock then falls back to lock files "
                   "whose existence alone means 'held'). Keep compiled caches on a local disk; share "
                   "nothing between nodes that they regenerate anyway.",
                   (_location_fix(s, "use a local directory"),), subject=s.root.path)


def _shared_directory(s: RootScan, ev: Dict[str, object]) -> Finding:
    """The variable points at a folder that also holds other files (cwd, home, /tmp)."""
    return finding("cache.shared-directory", Severity.WARN, Category.CACHES,
                   f"{s.root.label} is {s.shared}: {s.root.path}", {**ev, s.root.env_var: s.root.path},
                   f"{s.root.env_var} points at a folder that also holds other files, so the cache mixes "
                   "with them (and stale or broken entries cannot be told apart from your files). The doctor "
                   "does not inspect, repair or clear such a folder. Give the cache its own directory.",
                   (_location_fix(s, "use a dedicated directory"),), subject=s.root.path)


def summary_finding(s: RootScan, mode: str, verified: Sequence["ModuleResult"] = ()) -> Optional[Finding]:
    """The OK line for an existing root: what is there."""
    if s.status != "ok" or s.shared:
        return None
    kind = s.root.kind
    what = {"unsloth": "module", "triton": "kernel", "inductor": "file", "doctor": "entry"}[kind]
    plural = {"module": "modules", "kernel": "kernels", "file": "files", "entry": "entries"}[what]
    n = f"{s.entries}{'' if s.complete else '+'} {what if s.entries == 1 else plural}"
    ev = _root_ev(s)
    if mode != "check":
        ev.update({"files": s.files, "size": _size(s.bytes)})
    if not s.complete:
        ev["scan"] = f"stopped after its time budget; `doctor cache {'verify' if mode == 'check' else 'status'}` reads it all"
    if s.live_locks:
        ev["locks held right now"] = s.live_locks
    tail = ""
    if kind == "unsloth" and s.modules:
        ok = sum(1 for r in verified if r.status == "ok")
        tail = (f"; {ok} of {len(s.modules)} import cleanly" if verified else
                "; import check: `doctor cache verify`")
    fs = f", {s.mount.fs_type}" if s.mount else ""
    size = f", {_size(s.bytes)}" if mode != "check" else ""
    return finding("cache.root", Severity.OK, Category.CACHES, f"{s.root.label} {s.root.path}: {n}{size}{fs}{tail}",
                   ev, subject=s.root.path)


SYNTAX_BUDGET = 0.25  # seconds of compile() per `doctor check`; verdicts are cached by (size, mtime)


def syntax_checked(modules: Sequence[str], budget: float = SYNTAX_BUDGET) -> List["ModuleResult"]:
    """Compile (never run) unsloth's compiled modules so `doctor check` catches truncated files.

    Verdicts are kept in the doctor's own cache keyed by path, size and mtime, so only new or
    rewritten modules cost anything; what does not fit the budget waits for the next check (or
    `doctor cache verify`, which imports every module).
    """
    import time

    # lazy: only when an unsloth cache has modules (verify is the `doctor cache verify` feature)
    from doctor.cache.own import DoctorCache
    from doctor.cache.verify import ModuleResult, syntax_only

    cache = DoctorCache()
    try:
        known = cache.read_json("syntax", "unsloth") or {}
    except OSError:
        known = {}
    out: List[ModuleResult] = []
    changed = False
    deadline = time.monotonic() + budget
    for path in modules:
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        hit = known.get(path)
        if isinstance(hit, list) and len(hit) == 3 and hit[0] == stamp:
            if hit[1] != "ok":
                out.append(ModuleResult(path, "syntax-error", hit[1], hit[2]))
            continue
        if time.monotonic() > deadline:
            continue
        r = syntax_only(path)
        known[path] = [stamp, r.error if r else "ok", r.where if r else ""]
        changed = True
        if r is not None:
            out.append(r)
    if changed:
        try:
            cache.write_json("syntax", "unsloth", {k: v for k, v in known.items() if os.path.exists(k)})
        except OSError:
            pass  # an unwritable doctor cache costs speed next time, not correctness
    return out


def verify_findings(s: RootScan, results: Sequence["ModuleResult"], note: str, facts: Facts) -> List[Finding]:
    """Findings from the child-process imports of one unsloth root."""
    out: List[Finding] = []
    ev = _root_ev(s)
    unverified = []
    for r in results:
        status, path = r.status, r.path
        if r.broken:
            e = {**ev, "module": path, "result": status, "error": r.error}
            if r.where:
                e["where"] = r.where
            if r.rewritten:  # broken again after `import unsloth` rewrote it
                e["found"] = r.before
            title = {"timeout": "hangs on import", "crash": "crashes the importing process",
                     "syntax-error": "has a syntax error (truncated or corrupt)",
                     "incomplete": "is incomplete (truncated at a statement boundary?)"}.get(status, "fails to import")
            out.append(finding("cache.unsloth-broken-module", Severity.ERROR, Category.CACHES,
                               f"unsloth compiled module {os.path.basename(path)} {title}", e,
                               "This is the 'Unsloth: Cannot import unsloth_compiled_cache/...' failure: the file was "
                               "cut short by an interrupted or racing in-place write, or no longer matches the "
                               "installed packages. Moving it aside makes unsloth regenerate it at the next load.",
                               (quarantine_action(s.root.path, path),), subject=path))
        elif r.rewritten:  # `import unsloth` replaced it while verify ran: say what the file as found was
            was = {"syntax-error": "had a syntax error (truncated or corrupt)",
                   "incomplete": "was incomplete (truncated)"}.get(r.before, "was stale")
            e = {**ev, "module": path, "found": r.before, "error": r.error, **({"where": r.where} if r.where else {})}
            out.append(finding("cache.unsloth-rewritten", Severity.INFO if r.before == "ok" else Severity.WARN,
                               Category.CACHES, f"unsloth compiled module {os.path.basename(path)} {was}; "
                               "`import unsloth` rewrote it during verify", e,
                               "unsloth regenerates the compiled modules it finds broken or stale when it is imported; "
                               "the new file was import-checked. One found broken means an earlier write was cut short "
                               f"(an interrupted run, or two runs sharing this cache): if it recurs, give each run its "
                               f"own {envvars.UNSLOTH_COMPILE_LOCATION}.", subject=path))
        elif status in ("missing-dependency", "not-run"):
            unverified.append(r)
    if unverified:
        deps = sorted({r.dependency for r in unverified if r.dependency})
        reason = (f"{', '.join(deps)} cannot be imported in this environment" if deps else
                  (note or unverified[0].error))
        out.append(finding("cache.unsloth-unverified", Severity.INFO, Category.CACHES,
                           f"{len(unverified)} unsloth compiled module{'s' if len(unverified) != 1 else ''} "
                           "could not be import-checked",
                           {**ev, "modules": _names(s.real_path or s.root.path, [r.path for r in unverified]),
                            "reason": reason},
                           "Their imports need packages that do not import here, so a failure would say nothing "
                           "about the files themselves (their syntax was checked). Run verify in the training "
                           "environment.", subject=s.root.path))
    return out


# ----------------------------------------------------------------------------- entry points


def diagnose(facts: Facts, which: Sequence[str] = KINDS, mode: str = "status", timeout: float = 2.0,
             lock_age: float = LOCK_AGE, import_timeout: float = 60.0, preload: Optional[Sequence[str]] = None,
             budget: Optional[float] = None, matrix: Optional["Matrix"] = None) -> Diagnosis:
    """Inspect the selected caches at the given depth (check | status | verify).

    `matrix` grades unsloth's location (its temp-directory fallback by release); loaded when needed.
    """
    roots = resolve_roots(_env(facts), facts.cwd, which)
    if mode == "check":
        # unsloth's location has its own rule (doctor.cache.location), which tests its writability
        write_check = [k for k in which if k != "unsloth" and _owner_installed(facts, k)]
        roots = [r for r in roots if r.kind != "unsloth" or _owner_installed(facts, "unsloth")]
    else:
        write_check = list(which)
    scans = scan_roots(roots, expect_from(facts), budget=budget if budget is not None else
                       (CHECK_BUDGET if mode == "check" else FULL_BUDGET),
                       timeout=timeout, full=mode != "check", lock_age=lock_age, write_check=write_check)
    findings: List[Finding] = []
    if mode != "check" and "unsloth" in which:
        from doctor.cache.location import check_unsloth_cache_location  # lazy: status/verify only (check has its rule)

        if matrix is None and (facts.dist("unsloth") or facts.dist("unsloth-zoo")):
            from doctor.compat_matrix.loader import load_matrix  # lazy: only to grade unsloth's fallback

            matrix = load_matrix()
        findings.extend(f for f in check_unsloth_cache_location(facts, matrix, timeout=timeout)
                        if f.id != "cache.unsloth-location")
    located = {f.id for f in findings}
    verified: List["ModuleResult"] = []
    note = ""
    for s in scans:
        if s.status == "missing" and s.root.role == "fallback":
            continue
        if mode == "check" and s.status == "missing" and not _owner_installed(facts, s.root.kind):
            continue
        fs = root_findings(s, facts, mode)
        if s.root.kind == "unsloth" and s.root.role == "primary" and "cache.unsloth-unresponsive" in located:
            fs = [f for f in fs if f.id != "cache.unresponsive"]
        results: Sequence["ModuleResult"] = ()
        if mode == "check" and s.root.kind == "unsloth" and s.modules:
            seen = {f.subject for f in fs if f.id == "cache.unsloth-broken-module"}  # the header scan may have said it
            results = [r for r in syntax_checked(s.modules) if r.broken and r.path not in seen]
            fs.extend(_hinted(verify_findings(s, results, "", facts)))
            results = ()
        if mode == "verify" and s.root.kind == "unsloth" and s.modules:
            from doctor.cache.verify import verify_modules  # lazy: child-process imports, verify only

            pre = list(preload) if preload is not None else (["unsloth"] if facts.dist("unsloth") else [])
            results, n = verify_modules(s.real_path or s.root.path, s.modules, facts.python.executable or None,
                                        facts.cwd, import_timeout, pre)
            note = note or n
            verified.extend(results)
            broken = {r.path for r in results if r.broken or r.rewritten}  # the import's word, or a new file
            fs = [f for f in fs if not (f.id == "cache.unsloth-broken-module" and f.subject in broken)]
            fs.extend(_hinted(verify_findings(s, results, n, facts)))
        summary = summary_finding(s, mode, results)
        findings.extend(fs)
        if summary is not None:
            findings.append(summary)
    return Diagnosis(tuple(scans), tuple(findings), tuple(verified), note)


def check_caches(facts: Facts) -> List[Finding]:
    """The `doctor check` rule: cheap cache findings (deep import checks are `doctor cache verify`)."""
    return list(diagnose(facts, KINDS, mode="check").findings)


def plan(findings: Iterable[Finding]) -> List[Action]:
    """The repair plan: every cache repair and cache-location SetEnv (as a directory to create), each once.

    One location per variable (the first finding's, the worst when findings come sorted); one repair per target.
    """
    out: List[Action] = []
    seen = set()
    for f in findings:
        for a in f.fix:
            if isinstance(a, SetEnv) and is_location(a):
                a = a if a.directory else set_location_action(a.name, a.value, a.description)
                key: object = ("set-location", a.name)
            elif isinstance(a, REPAIRS):
                key = dataclasses.replace(a, description="")  # the same targets, whatever the wording
            else:
                continue
            if key in seen:
                continue
            seen.add(key)
            out.append(a)
    return out
