"""`doctor cache status | verify | repair | clear`: the compiled caches, inspected, import-checked and repaired."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from doctor.commands import EXIT_CODES, add_common
from doctor.errors import DoctorError

ACTIONS = ("status", "verify", "repair", "clear")
JSON_SCHEMA_VERSION = 1
HELP = """actions:
  status   where each cache is (resolved as its owner resolves it), size, entries, writable, filesystem
  verify   status + every unsloth compiled module imported in a child process (with a timeout),
           version headers, dead locks, empty files, broken Triton groups, foreign GPU arch/versions
  repair   verify, then apply the fixes: broken/stale entries MOVED to <cache>.quarantine/<UTC time>/,
           dead locks removed, modes tightened (own files), a bad location replaced (--dry-run: plan only)
  clear    move whole caches to their quarantine (never deleted; --dry-run: plan only)

""" + EXIT_CODES


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor cache` and its options."""
    c = sub.add_parser("cache", help="compiled caches (unsloth, Triton, Inductor, doctor): status, verify, repair, clear",
                       epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    # A plain positional (validated in run) so a wrong action is bad input, exit 3, like every other.
    c.add_argument("action", nargs="?", default="status", metavar="ACTION", help="status (default), verify, repair or clear")
    c.add_argument("--which", default=None, metavar="LIST", help="comma-separated: unsloth,triton,inductor,doctor (default: all)")
    c.add_argument("--dry-run", action="store_true", help="repair/clear: show the plan, change nothing")
    c.add_argument("--yes", action="store_true", help="clear: do not ask for confirmation (needed without a terminal)")
    c.add_argument("--json", action="store_true", help="machine-readable output (has a schema_version)")
    c.add_argument("-v", "--verbose", action="store_true", help="evidence for every finding, OK ones included")
    c.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="seconds a cache directory may go without answering (default 2)")
    c.add_argument("--import-timeout", type=float, default=60.0, metavar="S",
                   help="verify/repair: seconds one compiled module may take to import (default 60)")
    c.add_argument("--preload", action="append", default=None, metavar="MODULE",
                   help="verify/repair: import this first in the checking process (default: unsloth when "
                        "installed, as a training script does); 'none' for nothing; repeatable")
    c.add_argument("--lock-age", type=float, default=600.0, metavar="S",
                   help="a lock file nobody holds counts as stale after this many seconds (default 600)")
    add_common(c)
    c.set_defaults(run=run)


def _validate(args: argparse.Namespace) -> Tuple[str, Tuple[str, ...]]:
    """(action, kinds) or DoctorError for bad input."""
    from doctor.cache.roots import parse_which

    action = (args.action or "status").lower()
    if action not in ACTIONS:
        raise DoctorError(f"unknown cache action {args.action!r} (choose from {', '.join(ACTIONS)})")
    for name in ("timeout", "import_timeout", "lock_age"):
        v = getattr(args, name)
        if not (v == v and 0 < v < 1e6):  # rejects NaN, zero, negatives, absurd values
            raise DoctorError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v}")
    return action, parse_which(args.which)


def _preload(args: argparse.Namespace) -> Optional[List[str]]:
    """--preload values: None (default choice), [] for none, else the module names."""
    if args.preload is None:
        return None
    mods = [m.strip() for v in args.preload for m in v.split(",") if m.strip()]
    if any(m.lower() == "none" for m in mods):
        return []
    for m in mods:
        if not all(part.isidentifier() for part in m.split(".")):
            raise DoctorError(f"--preload {m!r} is not a module name")
    return mods


def run(args: argparse.Namespace) -> int:
    """Run one cache action; exit code 0/1/2 from the findings (2 also when a change failed), 3 for bad input."""
    action, kinds = _validate(args)
    preload = _preload(args)
    from doctor.check import exit_code_for
    from doctor.inventory import gather

    facts = gather()
    doc: Dict[str, Any] = {"command": f"cache {action}", "which": list(kinds)}
    if action == "clear":
        return _clear(args, kinds, doc)
    from doctor.cache.diagnose import diagnose, plan

    mode = "status" if action == "status" else "verify"
    diag = diagnose(facts, kinds, mode=mode, timeout=args.timeout, lock_age=args.lock_age,
                    import_timeout=args.import_timeout, preload=preload)
    findings = list(diag.findings)
    code = exit_code_for(findings)
    from doctor.cache.diagnose import LIMITS

    doc.update(roots=[_root_dict(s) for s in diag.scans], findings=[f.to_dict() for f in findings],
               verify_note=diag.verify_note, limits={k: LIMITS[k] for k in kinds})
    applied: List[Dict[str, Any]] = []
    persist: List[str] = []
    if action == "repair":
        from doctor.cache import apply_cache_action
        from doctor.cache.repair import persist_lines

        actions = plan(findings)
        failed = False
        for a in actions:
            try:
                result, ok = apply_cache_action(a, dry_run=args.dry_run), True
            except DoctorError as exc:
                result, ok, failed = str(exc), False, True
            applied.append({"action": a.to_dict(), "ok": ok, "result": result})
            if ok and a.args and a.args[0] == "set-location":
                persist.extend(persist_lines(a.args[1], a.args[2]))
        doc["plan"] = [a.to_dict() for a in actions]
        doc["dry_run"] = bool(args.dry_run)
        if not args.dry_run and actions:
            # Re-check what is left (cheap depth: quarantined modules are gone, so nothing to import).
            after = diagnose(gather(), kinds, mode="status", timeout=args.timeout, lock_age=args.lock_age)
            left = [f for f in after.findings]
            doc["after"] = [f.to_dict() for f in left]
            code = exit_code_for(left)
            if persist:  # the shell that started us does not have the new location yet
                code = max(code, 1)
        if failed:
            code = max(code, 2)
    doc["applied"] = applied
    doc["persist"] = persist
    _output(args, doc, code, findings, diag.scans)
    return code


def _clear(args: argparse.Namespace, kinds: Sequence[str], doc: Dict[str, Any]) -> int:
    """Move whole caches to their quarantine."""
    from doctor.cache import apply_cache_action
    from doctor.cache.repair import clear_action
    from doctor.cache.roots import resolve_roots

    from pathlib import Path

    from doctor._util.timeouts import TimedOut, call_with_timeout

    applied: List[Dict[str, Any]] = []
    failed = False
    if not args.dry_run and not args.yes:
        from doctor.fix import confirm

        names = ", ".join(r.path for r in resolve_roots(None, None, kinds))
        if not confirm(f"move these caches to quarantine: {names}? [y/N] "):
            raise DoctorError("doctor cache clear needs confirmation: run it in a terminal, or add --yes (--dry-run shows the plan)")
    for r in resolve_roots(None, None, kinds):
        try:  # a root on a hung mount must not hang the doctor
            exists = call_with_timeout(lambda p=r.path: Path(p).is_dir(), args.timeout)
        except TimedOut:
            applied.append({"action": clear_action(r.path).to_dict(), "ok": False,
                            "result": f"{r.path} did not answer within {args.timeout:g} s; nothing moved"})
            failed = True
            continue
        if not exists:
            continue
        a = clear_action(r.path)
        try:
            result, ok = apply_cache_action(a, dry_run=args.dry_run), True
        except DoctorError as exc:
            result, ok, failed = str(exc), False, True
        applied.append({"action": a.to_dict(), "ok": ok, "result": result})
    doc.update(dry_run=bool(args.dry_run), plan=[x["action"] for x in applied], applied=applied)
    code = 2 if failed else 0
    _output(args, doc, code, [], ())
    return code


def _root_dict(s: Any) -> Dict[str, Any]:
    """A RootScan as JSON."""
    pr = s.probe
    return {
        "kind": s.root.kind, "role": s.root.role, "path": s.root.path, "real_path": s.real_path or None,
        "source": s.root.source, "relative": s.root.relative, "env_var": s.root.env_var,
        "status": s.status, "exists": None if s.status == "unresponsive" else s.status in ("ok", "not-a-directory"),
        "writable": None if pr is None else pr.writable, "writable_detail": None if pr is None else (pr.detail or pr.status),
        "fs_type": s.mount.fs_type if s.mount else None, "mount_point": s.mount.mount_point if s.mount else None,
        "network_fs": bool(s.mount and s.mount.network),
        "entries": s.entries, "files": s.files, "bytes": s.bytes, "complete": s.complete,
        "live_locks": s.live_locks, "quarantine": s.quarantine or None,
        "detail": s.detail or None, "elapsed_s": round(s.elapsed, 4),
    }


def _output(args: argparse.Namespace, doc: Dict[str, Any], code: int, findings: List[Any], scans: Sequence[Any]) -> None:
    """JSON or text."""
    from doctor._version import __version__
    from doctor.report.summary import EXIT_MEANING, counts

    if args.json:
        full = {"schema_version": JSON_SCHEMA_VERSION, "doctor_version": __version__, "exit_code": code,
                "status": EXIT_MEANING.get(code, "?"), "summary": counts(findings), **doc}
        sys.stdout.write(json.dumps(full, indent=2, ensure_ascii=False) + "\n")
        return
    _render_text(args, doc, code, findings, scans)


def _render_text(args: argparse.Namespace, doc: Dict[str, Any], code: int, findings: List[Any], scans: Sequence[Any]) -> None:
    """The terminal view: roots, findings with evidence and fixes, the plan and what was done."""
    from rich.padding import Padding
    from rich.text import Text

    from doctor.report.console import console
    from doctor.findings import Severity
    from doctor.report.summary import EXIT_MEANING, ICONS, STYLES, counts

    con = console(args)

    def line(text: str, indent: int = 6, style: str = "") -> None:
        con.print(Padding(Text(text, style=style), (0, 0, 0, indent), expand=False))

    con.print(Text(f"doctor {doc['command']}", style="bold"))
    for s in scans:
        d = _root_dict(s)
        state = {"ok": "exists", "missing": "not created yet", "unresponsive": "DOES NOT ANSWER",
                 "not-a-directory": "not a directory", "error": "unreadable"}.get(s.status, s.status)
        con.print(Text.assemble(("  " + s.root.label, "bold"), f"  {s.root.path}", (f"  ({s.root.source})", "dim")))
        bits = [state]
        if s.status == "ok":
            from doctor.cache.diagnose import _size

            bits += [f"{s.entries}{'' if s.complete else '+'} entries", f"{s.files} files", _size(s.bytes)]
        if d["writable"] is not None:
            bits.append("writable" if d["writable"] else f"NOT writable ({d['writable_detail']})")
        if d["fs_type"]:
            bits.append(f"{d['fs_type']}{' (network filesystem)' if d['network_fs'] else ''}")
        if s.live_locks:
            bits.append(f"{s.live_locks} locks held now")
        if d["quarantine"]:
            bits.append(f"quarantine: {d['quarantine']}")
        if s.detail:
            bits.append(s.detail)
        line(" · ".join(bits), 4, "dim" if s.status == "missing" else "")
    shown = [f for f in findings if args.verbose or f.severity > Severity.OK]
    if shown:
        con.print()
    for f in sorted(shown, key=lambda f: -f.severity):
        con.print(Text.assemble((f"  [{ICONS[f.severity]}] ", STYLES[f.severity]),
                                (f.title, "bold" if f.severity >= Severity.WARN else ""), (f"  ({f.id})", "dim")))
        if f.severity >= Severity.WARN or args.verbose:
            for k, v in f.evidence:
                if k in ("cache", "resolved from", "path", "filesystem", "real path") and not args.verbose:
                    continue
                con.print(Padding(Text.assemble((k + ": ", "dim"), v), (0, 0, 0, 6), expand=False))
            if f.explanation and (args.verbose or f.severity >= Severity.WARN):
                line(f.explanation, 6, "italic")
            if "plan" not in doc:
                for a in f.fix[:5]:
                    cmd = a.command()
                    line(f"fix: {cmd or a.description}", 6, "bold")
                if len(f.fix) > 5:
                    line(f"... and {len(f.fix) - 5} more (doctor cache repair --dry-run lists them)", 6)
    if doc.get("verify_note"):
        con.print(Text(f"  note: {doc['verify_note']}", style="yellow"))
    if args.verbose and doc.get("limits"):
        con.print(Text("What the caches' metadata cannot tell:", style="bold"))
        for k, v in doc["limits"].items():
            line(f"{k}: {v}", 4, "dim")
    if "plan" in doc:
        con.print()
        verb = "Plan (dry run, nothing changed)" if doc.get("dry_run") else "Done"
        con.print(Text(f"{verb}: {len(doc['applied'])} action{'s' if len(doc['applied']) != 1 else ''}", style="bold"))
        for x in doc["applied"]:
            con.print(Text.assemble(("  ✓ " if x["ok"] else "  ✗ ", "green" if x["ok"] else "bold red"), x["result"]))
        if doc.get("persist"):
            con.print(Text("To keep the new location in later sessions, use one of:", style="bold"))
            for p in doc["persist"]:
                line(p, 4)
        if doc.get("after") is not None:
            left = [f for f in doc["after"] if f["severity"] in ("warn", "error")]
            con.print(Text(f"After repair: {len(left)} problem{'s' if len(left) != 1 else ''} left"
                           + ("" if not left else ": " + "; ".join(f"{f['title']} ({f['id']})" for f in left[:5]))))
    c = counts(findings)
    parts = [f"{c['error']} errors", f"{c['warn']} warnings", f"{c['info']} notes", f"{c['ok']} ok"]
    con.print()
    con.print(Text(", ".join(parts) + f"  (exit {code}: {EXIT_MEANING.get(code, '?')})",
                   style=STYLES[Severity.ERROR] if code == 2 else STYLES[Severity.WARN] if code == 1 else STYLES[Severity.OK]))
