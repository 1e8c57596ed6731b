"""What each problem a scan found inside one cache means, as a Finding: one small function per problem kind.

The scan (doctor.cache.scan) records plain-data Problems; here each kind gets its severity, its evidence,
its explanation and its repair (a typed action from doctor.cache.repair). Problems of one kind in one root
are said once, with the paths listed, so a cache with 300 stale modules gives one finding, not 300.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Sequence, Tuple

from doctor.actions import Action, Manual
from doctor.cache.repair import chmod_action, quarantine_action, remove_lock_action
from doctor.cache.scan import Expect, Problem, RootScan
from doctor.cache.scan.walk import HEADER_FIELDS
from doctor.findings import Category, Finding, Severity, finding

SHOW = 8  # paths listed in one evidence line


def names(root: str, paths: Sequence[str]) -> str:
    """'a.py, b.py (+3 more)', relative to the root."""
    rel = [os.path.relpath(p, root) if p.startswith(root) else p for p in paths]
    more = f" (+{len(rel) - SHOW} more)" if len(rel) > SHOW else ""
    return ", ".join(rel[:SHOW]) + more


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


class _Ctx:
    """What every problem finding of one root shares: the scan, its real path, the installed stack."""

    def __init__(self, s: RootScan, expect: Expect) -> None:
        self.s, self.expect = s, expect
        self.root = s.root.path
        self.rr = s.real_path or s.root.path  # paths in problems are under the real path
        self.ev: Dict[str, object] = {"cache dir": s.root.path}  # the root once; its source is in the root's lines

    def listing(self, ps: Sequence[Problem], key: str) -> str:
        """'a.py: <key value>; b.py: ...' for the first SHOW problems."""
        return "; ".join(f"{names(self.rr, [p.path])}: {p.get(key)}" for p in ps[:SHOW])


def _zero_byte(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    paths = [p.path for p in ps]
    return [finding("cache.zero-byte", Severity.WARN, Category.CACHES,
                    f"{len(ps)} empty {_plural(len(ps), 'file', 'files')} in the {c.s.root.label}",
                    {**c.ev, "files": names(c.rr, paths)},
                    "A zero-byte entry is what an interrupted in-place write leaves. An empty unsloth "
                    "module imports as an empty module and fails later ('Cannot import ...'); an empty "
                    "Triton binary or metadata file fails when the kernel loads. Moving it aside makes the "
                    "owner regenerate it.", (quarantine_action(c.root, *paths),), subject=c.root)]


def _not_regular(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    return [finding("cache.not-regular", Severity.ERROR, Category.CACHES,
                    f"{os.path.basename(p.path)} in the {c.s.root.label} is {p.get('type')}",
                    {**c.ev, "file": p.path},
                    "The owner reads this path as a file: reading a FIFO blocks forever (a freeze at "
                    "model load), a socket or device fails.", (quarantine_action(c.root, p.path),), subject=p.path)
            for p in ps]


def _bad_header(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    return [finding("cache.unsloth-broken-module", Severity.ERROR, Category.CACHES,
                    f"unsloth compiled module {os.path.basename(p.path)} has a {p.get('header')} version header",
                    {**c.ev, "module": p.path, "header": p.get("header"), "size": p.get("size")},
                    "The version docstring unsloth writes first is cut off or garbled: the file was "
                    "truncated (an in-place write interrupted, a full disk, a race between processes). "
                    "Importing it fails with 'Cannot import ...'.", (quarantine_action(c.root, p.path),),
                    subject=p.path)
            for p in ps]


def _stale_header(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    want = ", ".join(f"{f} {c.expect.versions.get(f, '0')}" for f in HEADER_FIELDS)
    detail = "; ".join(f"{os.path.basename(p.path)}: " + ", ".join(f"{k} {v}" for k, v in p.detail) for p in ps[:SHOW])
    more = f" (+{len(ps) - SHOW} more)" if len(ps) > SHOW else ""
    return [finding("cache.unsloth-stale-module", Severity.WARN, Category.CACHES,
                    f"{len(ps)} unsloth compiled {_plural(len(ps), 'module', 'modules')} built for other package versions",
                    {**c.ev, "installed": want, "stale": detail + more},
                    "Each compiled module records the unsloth_zoo, unsloth, transformers and trl versions "
                    "it was generated for. unsloth rewrites a stale one in place at the next load (racing "
                    "any other process importing it), or keeps it when UNSLOTH_COMPILE_OVERWRITE=0, where "
                    "it may not match the installed transformers/trl. Moving them aside regenerates them "
                    "cleanly.", (quarantine_action(c.root, *[p.path for p in ps]),), subject=c.root)]


def _world_writable(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    ours = [p for p in ps if p.get("ours") == "yes"]
    theirs = [p for p in ps if p.get("ours") != "yes"]
    fixes: List[Action] = [chmod_action(c.root, *[(p.path, int(p.get("mode"), 8) & ~0o022) for p in ours])] if ours else []
    if theirs:
        fixes.append(Manual(f"{len(theirs)} of them belong to another user: ask them, or as root run "
                            "chmod go-w on: " + names(c.rr, [p.path for p in theirs])))
    files = "; ".join(f"{names(c.rr, [p.path])} ({p.get('mode')}, uid {p.get('owner uid')})" for p in ps[:SHOW])
    return [finding("cache.world-writable", Severity.WARN, Category.CACHES,
                    f"{len(ps)} {_plural(len(ps), 'file', 'files')} in the {c.s.root.label} writable by every user",
                    {**c.ev, "files": files},
                    "The training process imports this code: anyone on the machine can change what it runs "
                    "(unsloth 2026.10 writes moe_utils.py as 0666). Permissions are tightened only on files "
                    "this user owns.", fixes, subject=c.root)]


def _stale_lock(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    soft = [p for p in ps if p.get("flock") != "works"]
    why = ("flock does not work on this filesystem, so filelock falls back to lock files whose "
           "existence means 'held': each of these makes the next load wait UNSLOTH_LOCK_TIMEOUT "
           "(10 s) and then fail." if soft else
           "No process holds them (a non-blocking flock succeeded). filelock leaves its lock files "
           "behind by design and an unheld one blocks nobody here, so this is tidying, not a fault; "
           "removal happens while holding the lock, so it cannot race a new holder.")
    return [finding("cache.stale-lock", Severity.WARN if soft else Severity.INFO, Category.CACHES,
                    f"{len(ps)} lock {_plural(len(ps), 'file', 'files')} in the {c.s.root.label} with no live holder",
                    {**c.ev, "locks": names(c.rr, [p.path for p in ps]),
                     "oldest": max((p.get("age") for p in ps), key=lambda a: float(a.split()[0])),
                     "flock on this filesystem": "not supported" if soft else "works"},
                    why, (remove_lock_action(c.root, *[p.path for p in ps]),), subject=c.root)]


def _triton_group(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    sev = Severity.ERROR if any(p.get("severity") == "error" for p in ps) else Severity.WARN
    keys = sorted({os.path.dirname(p.path) for p in ps})
    more = f" (+{len(ps) - SHOW} more)" if len(ps) > SHOW else ""
    return [finding("cache.triton-broken-group", sev, Category.CACHES,
                    f"{len(keys)} Triton kernel {_plural(len(keys), 'entry', 'entries')} in the {c.s.root.label} are broken",
                    {**c.ev, "entries": c.listing(ps, "problem") + more},
                    "Triton finds a kernel through its __grp__<name>.json. A group that does not parse makes "
                    "json.load raise inside the compile call (the training step crashes); a group whose "
                    "metadata exists but whose binary is gone is taken as a cache hit and fails to load. "
                    "Moving the whole kernel directory aside makes Triton recompile it.",
                    (quarantine_action(c.root, *keys),), subject=c.root)]


def _foreign(fid: str, what: str, key: str, here: Callable[[Expect], str]) -> Callable[[_Ctx, List[Problem]], List[Finding]]:
    """Kernels Triton never loads on this machine (another arch, another Triton): disk space only."""

    def build(c: _Ctx, ps: List[Problem]) -> List[Finding]:
        counts: Dict[str, int] = {}
        for p in ps:
            counts[p.get(key)] = counts.get(p.get(key), 0) + 1
        return [finding(fid, Severity.INFO, Category.CACHES,
                        f"{len(ps)} Triton {_plural(len(ps), 'kernel', 'kernels')} in the {c.s.root.label} built for {what}",
                        {**c.ev, "built for": ", ".join(f"{k} ({n})" for k, n in sorted(counts.items())),
                         "this machine": here(c.expect)},
                        "Triton's cache key includes its own version and the target, so these are never "
                        "loaded here: they only take disk space (a cache shared between machines or kept "
                        "across upgrades). `doctor cache clear` moves the whole cache aside.",
                        (Manual(f"doctor cache clear --which {c.s.root.kind}  # optional: reclaims the space"),),
                        subject=c.root)]

    return build


def _symlinks(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    out_ps = [p for p in ps if p.get("outside root") == "yes"]
    return [finding("cache.symlink", Severity.WARN if out_ps else Severity.INFO, Category.CACHES,
                    f"{len(ps)} {_plural(len(ps), 'symlink', 'symlinks')} in the {c.s.root.label}"
                    + (f", {len(out_ps)} pointing outside it" if out_ps else ""),
                    {**c.ev, "links": "; ".join(f"{names(c.rr, [p.path])} -> {p.get('resolves to')}" for p in ps[:SHOW])},
                    "The owner follows these links (unsloth imports through them). The doctor never moves, "
                    "changes or imports what a link points to outside the cache; remove the link yourself "
                    "if it is not intended.", (Manual("inspect and remove the links by hand"),), subject=c.root)]


def _unreadable(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    return [finding("cache.unreadable", Severity.WARN, Category.CACHES,
                    f"{len(ps)} {_plural(len(ps), 'entry', 'entries')} in the {c.s.root.label} cannot be read",
                    {**c.ev, "entries": c.listing(ps, "error")},
                    "The owner would fail the same way when it reads them.",
                    (quarantine_action(c.root, *[p.path for p in ps]),), subject=c.root)]


def _doctor_corrupt(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    return [finding("cache.doctor-corrupt-entry", Severity.INFO, Category.CACHES,
                    f"{len(ps)} unusable {_plural(len(ps), 'entry', 'entries')} in the tune-doctor cache",
                    {**c.ev, "entries": c.listing(ps, "problem")},
                    "Reads treat them as misses and rewrite them, so nothing breaks; moving them aside keeps "
                    "them for a bug report.", (quarantine_action(c.root, *[p.path for p in ps]),), subject=c.root)]


def _temp_leftover(c: _Ctx, ps: List[Problem]) -> List[Finding]:
    return [finding("cache.temp-leftover", Severity.INFO, Category.CACHES,
                    f"{len(ps)} temporary {_plural(len(ps), 'file', 'files')} left by interrupted writers "
                    f"in the {c.s.root.label}",
                    {**c.ev, "entries": names(c.rr, [p.path for p in ps])},
                    "A writer killed between writing its temp file and renaming it leaves these; they are "
                    "never read.", (quarantine_action(c.root, *[p.path for p in ps]),), subject=c.root)]


# Report order; a kind not listed (live-lock) is evidence for other lines, not a finding of its own.
BUILDERS: Tuple[Tuple[str, Callable[[_Ctx, List[Problem]], List[Finding]]], ...] = (
    ("zero-byte", _zero_byte),
    ("not-regular", _not_regular),
    ("bad-header", _bad_header),
    ("stale-header", _stale_header),
    ("world-writable", _world_writable),
    ("stale-lock", _stale_lock),
    ("triton-group", _triton_group),
    ("foreign-arch", _foreign("cache.triton-foreign-arch", "another GPU architecture", "arch",
                              lambda e: ", ".join(f"sm_{a}" for a in sorted(e.archs)))),
    ("foreign-triton", _foreign("cache.triton-foreign-version", "another Triton version", "triton",
                                lambda e: e.triton or "?")),
    ("symlink", _symlinks),
    ("unreadable", _unreadable),
    ("doctor-corrupt", _doctor_corrupt),
    ("temp-leftover", _temp_leftover),
)


def problem_findings(s: RootScan, expect: Expect) -> List[Finding]:
    """The findings for the problems one scanned root holds, grouped by kind, in report order."""
    by: Dict[str, List[Problem]] = {}
    for p in s.problems:
        by.setdefault(p.kind, []).append(p)
    c = _Ctx(s, expect)
    out: List[Finding] = []
    for kind, build in BUILDERS:
        if by.get(kind):
            out.extend(build(c, by[kind]))
    return out
