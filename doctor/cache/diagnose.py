"""Cache scans (and import verdicts) -> Findings with CACHE_REPAIR actions; the `doctor check` rule.

Three depths:
  check   (inside `doctor check`): only caches that exist or whose owner is installed; a 0.15 s walk
          budget; cheap findings only (writability, network filesystem, version headers, dead locks,
          zero-byte files, broken Triton groups); no child processes. Imports: `doctor cache verify`.
  status  every selected root, walked in full for size and counts, plus unsloth's location findings.
  verify  status + every unsloth compiled module imported in a child process (doctor.cache.verify).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from doctor.cache.roots import KINDS, resolve_roots
from doctor.cache.scan import HEADER_FIELDS, LOCK_AGE, Expect, Problem, RootScan, scan_roots
from doctor.facts import Facts
from doctor.findings import Action, ActionKind, Category, Finding, Severity, finding, manual

if TYPE_CHECKING:
    from doctor.cache.verify import ModuleResult

CHECK_BUDGET = 0.15  # seconds of walking inside `doctor check` (all roots, concurrently)
FULL_BUDGET = 60.0
TRITON_DISTS = ("triton", "pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu")
SHOW = 8  # paths listed in one evidence line


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
    for var in ("UNSLOTH_COMPILE_LOCATION", "TRITON_CACHE_DIR", "TRITON_HOME", "TORCHINDUCTOR_CACHE_DIR", "DOCTOR_CACHE_DIR"):
        if var in facts.env:
            env[var] = facts.env[var]
        else:
            env.pop(var, None)
    return env


# ----------------------------------------------------------------------------- evidence helpers


def _names(root: str, paths: Sequence[str]) -> str:
    """'a.py, b.py (+3 more)', relative to the root."""
    rel = [os.path.relpath(p, root) if p.startswith(root) else p for p in paths]
    more = f" (+{len(rel) - SHOW} more)" if len(rel) > SHOW else ""
    return ", ".join(rel[:SHOW]) + more


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


def _location_fix(s: RootScan, why: str) -> Action:
    """Point the owner at a local, writable, absolute directory."""
    from doctor.cache.repair import set_location_action
    from doctor.cache.roots import suggest_location

    return set_location_action(s.root.env_var, suggest_location(s.root.kind, avoid=s.root.path), why)


# ----------------------------------------------------------------------------- findings per root


REPAIR_HINT = " `doctor cache repair` (or `doctor check --fix`) applies it; entries are moved aside, never deleted."


def _hinted(findings: List[Finding]) -> List[Finding]:
    """Say which command applies a cache repair, on the findings that have one."""
    return [f._replace(explanation=f.explanation + REPAIR_HINT)
            if any(a.kind is ActionKind.CACHE_REPAIR and a.args[:1] != ("set-location",) for a in f.fix) else f
            for f in findings]


def root_findings(s: RootScan, facts: Facts, mode: str) -> List[Finding]:
    """Findings about one root: reachability, writability, filesystem, its problems, and a summary."""
    return _hinted(_root_findings(s, facts, mode))


def _root_findings(s: RootScan, facts: Facts, mode: str) -> List[Finding]:
    """root_findings without the repair hint."""
    out: List[Finding] = []
    kind, root = s.root.kind, s.root.path
    installed = _owner_installed(facts, kind)
    covered = mode == "check" and kind == "unsloth" and s.root.role == "primary"  # the location rule reports these
    ev = _root_ev(s)
    if s.status == "unresponsive":
        if not covered:
            out.append(finding("cache.unresponsive", Severity.ERROR, Category.CACHES,
                               f"{s.root.label} at {root} did not answer", {**ev, "problem": s.detail},
                               "Reading or writing there hangs (a stalled network mount, a dead FUSE daemon). The "
                               "library that uses this cache would hang the same way, at import or at the first "
                               "compile.", (_location_fix(s, "use a local directory instead"),), subject=root))
        return out
    if s.status in ("not-a-directory", "error") and not covered:
        out.append(finding("cache.unwritable", Severity.ERROR if installed else Severity.WARN, Category.CACHES,
                           f"{s.root.label} at {root} cannot be used: {s.detail}", {**ev, "problem": s.detail},
                           "Its owner creates files there; it fails at the first write.",
                           (_location_fix(s, "use a writable directory instead"),), subject=root))
        return out
    pr = s.probe
    if pr is not None and not pr.writable and not covered:
        sev = Severity.ERROR if installed and kind != "doctor" else Severity.WARN
        what = "is not writable" if s.status == "ok" else f"cannot be created in {pr.tested}"
        expl = {"triton": "Triton writes every compiled kernel there; the first kernel compile fails "
                          "(PermissionError / OSError), which is how read-only home directories break training.",
                "inductor": "torch.compile writes generated code and kernels there; compilation fails.",
                "doctor": "Probe verdicts cannot be cached: every check re-runs its probes.",
                "unsloth": "unsloth falls back to a temp dir and recompiles on every run."}[kind]
        out.append(finding("cache.unwritable", sev, Category.CACHES, f"{s.root.label} at {root} {what}",
                           {**ev, "tested": pr.tested, "problem": pr.detail}, expl,
                           (_location_fix(s, "use a writable absolute directory"),), subject=root))
    if s.mount is not None and s.mount.network and (s.status == "ok" or installed):
        out.append(finding("cache.network-fs", Severity.WARN, Category.CACHES,
                           f"{s.root.label} is on a network filesystem ({s.mount.fs_type})", ev,
                           "Compiled caches on NFS/SMB/Lustre/sshfs see stale file handles when another node "
                           "rewrites a file, may show a half-written file as complete (attribute caching), and "
                           "lock differently (flock is emulated or missing; filelock then falls back to lock files "
                           "whose existence alone means 'held'). Keep compiled caches on a local disk; share "
                           "nothing between nodes that they regenerate anyway.",
                           (_location_fix(s, "use a local directory"),), subject=root))
    if s.status == "ok" and s.shared:
        out.append(finding("cache.shared-directory", Severity.WARN, Category.CACHES,
                           f"{s.root.label} is {s.shared}: {root}", {**ev, s.root.env_var: root},
                           f"{s.root.env_var} points at a folder that also holds other files, so the cache mixes "
                           "with them (and stale or broken entries cannot be told apart from your files). The doctor "
                           "does not inspect, repair or clear such a folder. Give the cache its own directory.",
                           (_location_fix(s, "use a dedicated directory"),), subject=root))
        return out
    if s.status != "ok" or not s.problems:
        return out
    from doctor.cache.repair import chmod_action, quarantine_action, remove_lock_action

    by: Dict[str, List[Problem]] = {}
    for p in s.problems:
        by.setdefault(p.kind, []).append(p)
    rr = s.real_path or root
    ev = {"cache dir": root}  # problem findings: the root once; where it came from is in the root's own lines

    if by.get("zero-byte"):
        ps = [p.path for p in by["zero-byte"]]
        out.append(finding("cache.zero-byte", Severity.WARN, Category.CACHES,
                           f"{len(ps)} empty file{'s' if len(ps) != 1 else ''} in the {s.root.label}",
                           {**ev, "files": _names(rr, ps)},
                           "A zero-byte entry is what an interrupted in-place write leaves. An empty unsloth "
                           "module imports as an empty module and fails later ('Cannot import ...'); an empty "
                           "Triton binary or metadata file fails when the kernel loads. Moving it aside makes the "
                           "owner regenerate it.", (quarantine_action(root, *ps),), subject=root))
    if by.get("not-regular"):
        for p in by["not-regular"]:
            out.append(finding("cache.not-regular", Severity.ERROR, Category.CACHES,
                               f"{os.path.basename(p.path)} in the {s.root.label} is {p.get('type')}",
                               {**ev, "file": p.path},
                               "The owner reads this path as a file: reading a FIFO blocks forever (a freeze at "
                               "model load), a socket or device fails.", (quarantine_action(root, p.path),),
                               subject=p.path))
    if by.get("bad-header"):
        for p in by["bad-header"]:
            out.append(finding("cache.unsloth-broken-module", Severity.ERROR, Category.CACHES,
                               f"unsloth compiled module {os.path.basename(p.path)} has a {p.get('header')} version header",
                               {**ev, "module": p.path, "header": p.get("header"), "size": p.get("size")},
                               "The version docstring unsloth writes first is cut off or garbled: the file was "
                               "truncated (an in-place write interrupted, a full disk, a race between processes). "
                               "Importing it fails with 'Cannot import ...'.", (quarantine_action(root, p.path),),
                               subject=p.path))
    if by.get("stale-header"):
        ps = by["stale-header"]
        want = ", ".join(f"{f} {s_}" for f, s_ in zip(HEADER_FIELDS, _installed(facts)))
        detail = "; ".join(f"{os.path.basename(p.path)}: " + ", ".join(f"{k} {v}" for k, v in p.detail) for p in ps[:SHOW])
        out.append(finding("cache.unsloth-stale-module", Severity.WARN, Category.CACHES,
                           f"{len(ps)} unsloth compiled module{'s' if len(ps) != 1 else ''} built for other package versions",
                           {**ev, "installed": want, "stale": detail + (f" (+{len(ps) - SHOW} more)" if len(ps) > SHOW else "")},
                           "Each compiled module records the unsloth_zoo, unsloth, transformers and trl versions "
                           "it was generated for. unsloth rewrites a stale one in place at the next load (racing "
                           "any other process importing it), or keeps it when UNSLOTH_COMPILE_OVERWRITE=0, where "
                           "it may not match the installed transformers/trl. Moving them aside regenerates them "
                           "cleanly.", (quarantine_action(root, *[p.path for p in ps]),), subject=root))
    if by.get("world-writable"):
        ps = by["world-writable"]
        ours = [p for p in ps if p.get("ours") == "yes"]
        theirs = [p for p in ps if p.get("ours") != "yes"]
        fixes: List[Action] = [chmod_action(root, *[(p.path, int(p.get("mode"), 8) & ~0o022) for p in ours])] if ours else []
        if theirs:
            fixes.append(manual(f"{len(theirs)} of them belong to another user: ask them, or as root run "
                                "chmod go-w on: " + _names(rr, [p.path for p in theirs])))
        out.append(finding("cache.world-writable", Severity.WARN, Category.CACHES,
                           f"{len(ps)} file{'s' if len(ps) != 1 else ''} in the {s.root.label} writable by every user",
                           {**ev, "files": "; ".join(f"{_names(rr, [p.path])} ({p.get('mode')}, uid {p.get('owner uid')})"
                                                     for p in ps[:SHOW])},
                           "The training process imports this code: anyone on the machine can change what it runs "
                           "(unsloth 2026.10 writes moe_utils.py as 0666). Permissions are tightened only on files "
                           "this user owns.", fixes, subject=root))
    if by.get("stale-lock"):
        ps = by["stale-lock"]
        soft = [p for p in ps if p.get("flock") != "works"]
        sev = Severity.WARN if soft else Severity.INFO
        out.append(finding("cache.stale-lock", sev, Category.CACHES,
                           f"{len(ps)} lock file{'s' if len(ps) != 1 else ''} in the {s.root.label} with no live holder",
                           {**ev, "locks": _names(rr, [p.path for p in ps]),
                            "oldest": max((p.get("age") for p in ps), key=lambda a: float(a.split()[0])),
                            "flock on this filesystem": "not supported" if soft else "works"},
                           ("flock does not work on this filesystem, so filelock falls back to lock files whose "
                            "existence means 'held': each of these makes the next load wait UNSLOTH_LOCK_TIMEOUT "
                            "(10 s) and then fail." if soft else
                            "No process holds them (a non-blocking flock succeeded). filelock leaves its lock files "
                            "behind by design and an unheld one blocks nobody here, so this is tidying, not a fault; "
                            "removal happens while holding the lock, so it cannot race a new holder."),
                           (remove_lock_action(root, *[p.path for p in ps]),), subject=root))
    if by.get("triton-group"):
        ps = by["triton-group"]
        sev = Severity.ERROR if any(p.get("severity") == "error" for p in ps) else Severity.WARN
        keys = sorted({os.path.dirname(p.path) for p in ps})
        out.append(finding("cache.triton-broken-group", sev, Category.CACHES,
                           f"{len(keys)} Triton kernel entr{'ies' if len(keys) != 1 else 'y'} in the {s.root.label} are broken",
                           {**ev, "entries": "; ".join(f"{_names(rr, [p.path])}: {p.get('problem')}" for p in ps[:SHOW])
                            + (f" (+{len(ps) - SHOW} more)" if len(ps) > SHOW else "")},
                           "Triton finds a kernel through its __grp__<name>.json. A group that does not parse makes "
                           "json.load raise inside the compile call (the training step crashes); a group whose "
                           "metadata exists but whose binary is gone is taken as a cache hit and fails to load. "
                           "Moving the whole kernel directory aside makes Triton recompile it.",
                           (quarantine_action(root, *keys),), subject=root))
    for pk, fid, what in (("foreign-arch", "cache.triton-foreign-arch", "another GPU architecture"),
                          ("foreign-triton", "cache.triton-foreign-version", "another Triton version")):
        if by.get(pk):
            ps = by[pk]
            counts: Dict[str, int] = {}
            for p in ps:
                v = p.get("arch") or p.get("triton")
                counts[v] = counts.get(v, 0) + 1
            here = (", ".join(f"sm_{a}" for a in sorted(_archs(facts))) if pk == "foreign-arch"
                    else (expect_from(facts).triton or "?"))
            out.append(finding(fid, Severity.INFO, Category.CACHES,
                               f"{len(ps)} Triton kernel{'s' if len(ps) != 1 else ''} in the {s.root.label} built for {what}",
                               {**ev, "built for": ", ".join(f"{k} ({n})" for k, n in sorted(counts.items())),
                                "this machine": here},
                               "Triton's cache key includes its own version and the target, so these are never "
                               "loaded here: they only take disk space (a cache shared between machines or kept "
                               "across upgrades). `doctor cache clear` moves the whole cache aside.",
                               (manual(f"doctor cache clear --which {kind}  # optional: reclaims the space"),), subject=root))
    if by.get("symlink"):
        ps = by["symlink"]
        out_ps = [p for p in ps if p.get("outside root") == "yes"]
        out.append(finding("cache.symlink", Severity.WARN if out_ps else Severity.INFO, Category.CACHES,
                           f"{len(ps)} symlink{'s' if len(ps) != 1 else ''} in the {s.root.label}"
                           + (f", {len(out_ps)} pointing outside it" if out_ps else ""),
                           {**ev, "links": "; ".join(f"{_names(rr, [p.path])} -> {p.get('resolves to')}" for p in ps[:SHOW])},
                           "The owner follows these links (unsloth imports through them). The doctor never moves, "
                           "changes or imports what a link points to outside the cache; remove the link yourself "
                           "if it is not intended.", (manual("inspect and remove the links by hand"),), subject=root))
    if by.get("unreadable"):
        ps = by["unreadable"]
        out.append(finding("cache.unreadable", Severity.WARN, Category.CACHES,
                           f"{len(ps)} entr{'ies' if len(ps) != 1 else 'y'} in the {s.root.label} cannot be read",
                           {**ev, "entries": "; ".join(f"{_names(rr, [p.path])}: {p.get('error')}" for p in ps[:SHOW])},
                           "The owner would fail the same way when it reads them.",
                           (quarantine_action(root, *[p.path for p in ps]),), subject=root))
    if by.get("doctor-corrupt"):
        ps = by["doctor-corrupt"]
        out.append(finding("cache.doctor-corrupt-entry", Severity.INFO, Category.CACHES,
                           f"{len(ps)} unusable entr{'ies' if len(ps) != 1 else 'y'} in the tune-doctor cache",
                           {**ev, "entries": "; ".join(f"{_names(rr, [p.path])}: {p.get('problem')}" for p in ps[:SHOW])},
                           "Reads treat them as misses and rewrite them, so nothing breaks; moving them aside keeps "
                           "them for a bug report.", (quarantine_action(root, *[p.path for p in ps]),), subject=root))
    if by.get("temp-leftover"):
        ps = by["temp-leftover"]
        out.append(finding("cache.temp-leftover", Severity.INFO, Category.CACHES,
                           f"{len(ps)} temporary file{'s' if len(ps) != 1 else ''} left by interrupted writers "
                           f"in the {s.root.label}",
                           {**ev, "entries": _names(rr, [p.path for p in ps])},
                           "A writer killed between writing its temp file and renaming it leaves these; they are "
                           "never read.", (quarantine_action(root, *[p.path for p in ps]),), subject=root))
    return out


def _installed(facts: Facts) -> List[str]:
    e = expect_from(facts)
    return [e.versions.get(f, "0") for f in HEADER_FIELDS]


def _archs(facts: Facts) -> List[int]:
    return sorted(expect_from(facts).archs)


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
    from doctor.cache.repair import quarantine_action

    out: List[Finding] = []
    ev = _root_ev(s)
    unverified = []
    for r in results:
        status, path = r.status, r.path
        if r.broken:
            e = {**ev, "module": path, "result": status, "error": r.error}
            if r.where:
                e["where"] = r.where
            title = {"timeout": "hangs on import", "crash": "crashes the importing process",
                     "syntax-error": "has a syntax error (truncated or corrupt)",
                     "incomplete": "is incomplete (truncated at a statement boundary?)"}.get(status, "fails to import")
            out.append(finding("cache.unsloth-broken-module", Severity.ERROR, Category.CACHES,
                               f"unsloth compiled module {os.path.basename(path)} {title}", e,
                               "This is the 'Unsloth: Cannot import unsloth_compiled_cache/...' failure: the file was "
                               "cut short by an interrupted or racing in-place write, or no longer matches the "
                               "installed packages. Moving it aside makes unsloth regenerate it at the next load.",
                               (quarantine_action(s.root.path, path),), subject=path))
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
             budget: Optional[float] = None) -> Diagnosis:
    """Inspect the selected caches at the given depth (check | status | verify)."""
    roots = resolve_roots(_env(facts), facts.cwd, which)
    if mode == "check":
        probe = [k for k in which if k != "unsloth" and _owner_installed(facts, k)]
        roots = [r for r in roots if r.kind != "unsloth" or _owner_installed(facts, "unsloth")]
    else:
        probe = list(which)
    scans = scan_roots(roots, expect_from(facts), budget=budget if budget is not None else
                       (CHECK_BUDGET if mode == "check" else FULL_BUDGET),
                       timeout=timeout, full=mode != "check", lock_age=lock_age, probe=probe)
    findings: List[Finding] = []
    if mode != "check" and "unsloth" in which:
        from doctor.cache.location import check_unsloth_cache_location

        findings.extend(f for f in check_unsloth_cache_location(facts, timeout) if f.id != "cache.unsloth-location")
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
            from doctor.cache.verify import verify_modules

            pre = list(preload) if preload is not None else (["unsloth"] if facts.dist("unsloth") else [])
            results, n = verify_modules(s.real_path or s.root.path, s.modules, facts.python.executable or None,
                                        facts.cwd, import_timeout, pre)
            note = note or n
            verified.extend(results)
            broken = {r.path for r in results if r.broken}
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
    """The repair plan: every cache-repair action (cache-location env fixes as set-location), each once."""
    from doctor.cache.repair import LOCATION_VARS, set_location_action

    out: List[Action] = []
    seen = set()
    for f in findings:
        for a in f.fix:
            if a.kind is ActionKind.SET_ENV and len(a.args) == 2 and a.args[0] in LOCATION_VARS:
                a = set_location_action(a.args[0], a.args[1], a.description)
            if a.kind is not ActionKind.CACHE_REPAIR:
                continue
            key = ("set-location", a.args[1]) if a.args[0] == "set-location" else a.args
            if key in seen:
                continue
            seen.add(key)
            out.append(a)
    return out
