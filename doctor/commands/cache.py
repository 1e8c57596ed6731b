"""`doctor cache status | verify | repair | clear`: the compiled caches, inspected, import-checked and repaired."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from doctor.commands import add_common, seconds, stdin_is_terminal
from doctor.errors import DoctorError
from doctor.exits import COMMON, ExitCode, epilog

if TYPE_CHECKING:
    from doctor.report.cache import Applied, CacheOutcome

ACTIONS = ("status", "verify", "repair", "clear")
CHANGES = ("repair", "clear")  # the actions that change files: --dry-run, --yes and confirmation apply
HELP = """actions:
  status   where each cache is (resolved as its owner resolves it), size, entries, writable, filesystem
  verify   status + every unsloth compiled module imported in a child process (with a timeout),
           version headers, dead locks, empty files, broken Triton groups, foreign GPU arch/versions
  repair   verify, then apply the fixes: broken/stale entries MOVED to <cache>.quarantine/<UTC time>/,
           dead locks removed, modes tightened (own files), a bad location replaced (--dry-run: plan only)
  clear    move whole caches to their quarantine (never deleted; --dry-run: plan only)
repair and clear ask before changing anything (a terminal prompt); without a terminal they need --yes.

""" + epilog(COMMON + (ExitCode.CHANGE_FAILED,), notes=(
    "repair: 0/1/2 are what the re-check after the changes found (1 also when a new location must be persisted)",
    "repair/clear: 5 when any change was refused or failed (--dry-run: would be); 2 never means that",
))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor cache` and its options."""
    c = sub.add_parser("cache", help="compiled caches (unsloth, Triton, Inductor, doctor): status, verify, repair, clear",
                       epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    # A plain positional (validated in run) so a wrong action is bad input, exit 3, like every other.
    c.add_argument("action", nargs="?", default="status", metavar="ACTION", help="status (default), verify, repair or clear")
    c.add_argument("--which", default=None, metavar="LIST", help="comma-separated: unsloth,triton,inductor,doctor (default: all)")
    c.add_argument("--dry-run", action="store_true", help="repair/clear: show the plan, change nothing")
    c.add_argument("--yes", action="store_true", help="repair/clear: do not ask for confirmation (needed without a terminal)")
    c.add_argument("--json", action="store_true", help="machine-readable output (has a schema_version)")
    c.add_argument("-v", "--verbose", action="store_true", help="evidence for every finding, OK ones included")
    c.add_argument("--timeout", type=seconds, default=2.0, metavar="S",
                   help="seconds a cache directory may go without answering (default 2)")
    c.add_argument("--import-timeout", type=seconds, default=60.0, metavar="S",
                   help="verify/repair: seconds one compiled module may take to import (default 60)")
    c.add_argument("--preload", action="append", default=None, metavar="MODULE",
                   help="verify/repair: import this first in the checking process (default: unsloth when "
                        "installed, as a training script does); 'none' for nothing; repeatable")
    c.add_argument("--lock-age", type=seconds, default=600.0, metavar="S",
                   help="a lock file nobody holds counts as stale after this many seconds (default 600)")
    add_common(c)
    c.set_defaults(run=run)


def _validate(args: argparse.Namespace) -> Tuple[str, Tuple[str, ...]]:
    """(action, kinds) or DoctorError for bad input."""
    from doctor.cache.roots import parse_which

    action = (args.action or "status").lower()
    if action not in ACTIONS:
        raise DoctorError(f"unknown cache action {args.action!r} (choose from {', '.join(ACTIONS)})")
    if action not in CHANGES and (args.dry_run or args.yes):
        raise DoctorError(f"--{'dry-run' if args.dry_run else 'yes'} applies to repair and clear, not to cache {action}")
    return action, parse_which(args.which)  # timeouts were checked while parsing (commands.seconds)


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
    """Run one cache action and print it; the exit code is documented in HELP (doctor.exits)."""
    action, kinds = _validate(args)
    preload = _preload(args)
    if action in CHANGES and not (args.dry_run or args.yes or stdin_is_terminal()):
        # Refused before any work: the answer must not depend on what the scan finds.
        raise DoctorError(f"doctor cache {action} changes files and needs confirmation: run it in a terminal, "
                          "or add --yes (--dry-run shows the plan)")
    if action == "clear":
        return _clear(args, kinds)
    from doctor.cache.diagnose import LIMITS, diagnose
    from doctor.inventory import gather
    from doctor.report.cache import CacheOutcome
    from doctor.report_data import exit_code_for

    mode = "status" if action == "status" else "verify"
    diag = diagnose(gather(), kinds, mode=mode, timeout=args.timeout, lock_age=args.lock_age,
                    import_timeout=args.import_timeout, preload=preload)
    out = CacheOutcome(f"cache {action}", kinds, exit_code_for(diag.findings), tuple(diag.findings), tuple(diag.scans),
                       diag.verify_note, {k: LIMITS[k] for k in kinds})
    asked = False
    if action == "repair":
        out = _repair(args, out)
        asked = bool(out.plan) and not (args.dry_run or args.yes)  # the terminal already shows scan and plan
    _output(args, out, asked=asked)
    return out.exit_code


def _repair(args: argparse.Namespace, out: "CacheOutcome") -> "CacheOutcome":
    """Plan, confirm (a terminal prompt unless --yes / --dry-run), apply, re-check; the outcome with all of it."""
    from doctor.cache.diagnose import diagnose, plan
    from doctor.inventory import gather
    from doctor.report_data import exit_code_for

    actions = tuple(plan(out.findings))
    out = out._replace(plan=actions, dry_run=bool(args.dry_run))
    if actions and not (args.dry_run or args.yes):
        preview = _ask(args, out, actions)
        if preview is not None:  # not confirmed: the plan as a dry run, nothing changed
            return out._replace(applied=preview, dry_run=True)
    applied, persist = _apply(actions, dry_run=bool(args.dry_run))
    code = out.exit_code
    after = None
    if actions and not args.dry_run:
        # Re-check what is left (cheap depth: quarantined modules are gone, so nothing to import).
        after = tuple(diagnose(gather(), out.which, mode="status", timeout=args.timeout, lock_age=args.lock_age).findings)
        code = exit_code_for(after)
        if persist:  # the shell that started us does not have the new location yet
            code = max(code, ExitCode.WARNINGS)
    if not all(x.ok for x in applied):
        code = ExitCode.CHANGE_FAILED
    return out._replace(applied=applied, persist=persist, after=after, exit_code=int(code))


def _ask(args: argparse.Namespace, out: "CacheOutcome", actions: Sequence[Any]) -> "Optional[Tuple[Applied, ...]]":
    """Show the findings and the plan, ask on the terminal; None when confirmed, else the plan (a dry run)."""
    from doctor.fix import confirm
    from doctor.report.cache import render_cache_plan, render_cache_scan
    from doctor.report.console import console

    con = console(args, stderr=bool(args.json))  # stdout stays one JSON document
    if not args.json:
        render_cache_scan(con, out, verbose=args.verbose)
    preview, _ = _apply(actions, dry_run=True)  # every safety check, nothing changed
    render_cache_plan(con, preview, "Plan")
    sys.stderr.write(f"apply {'this change' if len(actions) == 1 else f'these {len(actions)} changes'}? [y/N] ")
    sys.stderr.flush()
    if confirm(""):
        return None
    print("not applied (no confirmation): nothing changed.", file=sys.stderr)
    return preview


def _apply(actions: Sequence[Any], dry_run: bool) -> "Tuple[Tuple[Applied, ...], Tuple[str, ...]]":
    """Apply (or check, with dry_run) each action: what happened to each, and how to persist a new location."""
    from doctor.cache import apply_cache_action
    from doctor.cache.repair import is_location, persist_lines
    from doctor.report.cache import Applied

    applied: List[Applied] = []
    persist: List[str] = []
    for a in actions:
        try:
            applied.append(Applied(a, True, apply_cache_action(a, dry_run=dry_run)))
        except DoctorError as exc:  # refused or failed: said, and the next one still tried
            applied.append(Applied(a, False, str(exc)))
            continue
        if is_location(a):
            persist.extend(persist_lines(a.name, a.value))
    return tuple(applied), tuple(persist)


def _clear(args: argparse.Namespace, kinds: Tuple[str, ...]) -> int:
    """Move whole caches to their quarantine: 0 done (or nothing there), 5 when one could not be moved."""
    from functools import partial

    from doctor._util.timeouts import TimedOut, call_with_timeout
    from doctor.cache import apply_cache_action
    from doctor.cache.repair import clear_action
    from doctor.cache.roots import resolve_roots
    from doctor.report.cache import Applied, CacheOutcome

    roots = resolve_roots(None, None, kinds)
    if not (args.dry_run or args.yes):
        from doctor.fix import confirm

        sys.stderr.write(f"move these caches to quarantine: {', '.join(r.path for r in roots)}? [y/N] ")
        sys.stderr.flush()
        if not confirm(""):
            print("not cleared (no confirmation): nothing changed.", file=sys.stderr)
            return ExitCode.HEALTHY
    applied: List[Applied] = []
    for r in roots:
        a = clear_action(r.path)
        try:  # a root on a hung mount must not hang the doctor
            exists = call_with_timeout(partial(os.path.isdir, r.path), args.timeout)
        except TimedOut:
            applied.append(Applied(a, False, f"{r.path} did not answer within {args.timeout:g} s; nothing moved"))
            continue
        if not exists:
            continue
        try:
            applied.append(Applied(a, True, apply_cache_action(a, dry_run=args.dry_run)))
        except DoctorError as exc:
            applied.append(Applied(a, False, str(exc)))
    code = ExitCode.HEALTHY if all(x.ok for x in applied) else ExitCode.CHANGE_FAILED
    out = CacheOutcome("cache clear", kinds, int(code), plan=tuple(x.action for x in applied), applied=tuple(applied),
                       dry_run=bool(args.dry_run))
    _output(args, out)
    return out.exit_code


def _output(args: argparse.Namespace, out: "CacheOutcome", asked: bool = False) -> None:
    """JSON or text; after a prompt, the text shows only what the prompt did not (what was done, the summary)."""
    if args.json:
        from doctor.report.json import cache_document, dumps

        sys.stdout.write(dumps(cache_document(out)) + "\n")
        return
    from doctor.report.cache import render_cache, render_cache_changes, render_cache_summary
    from doctor.report.console import console

    con = console(args)
    if not asked:
        render_cache(con, out, verbose=args.verbose)
        return
    if not out.dry_run:  # confirmed: what was done (declined: the plan above was all)
        render_cache_changes(con, out)
    render_cache_summary(con, out)
