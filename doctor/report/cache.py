"""The text view of `doctor cache`: each root, the findings with evidence and fixes, the plan and what was done.

`CacheOutcome` is what one `doctor cache ACTION` produced; this module renders it for a terminal and
doctor.report.json.cache_document for machines. The parts render separately because `cache repair` in a
terminal shows the roots and findings, then asks, then shows what it did.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.cache.diagnose import _size
from doctor.exits import ExitCode, status_of
from doctor.findings import Finding, Severity
from doctor.report.console import print_command
from doctor.report.json import root_document
from doctor.report.summary import ICONS, STYLES, counts

if TYPE_CHECKING:
    from rich.console import Console

SHOW_FIXES = 5  # fixes listed under one finding; `doctor cache repair --dry-run` lists them all
# Evidence that repeats what the root line above already says (shown with -v).
_ROOT_EVIDENCE = ("cache", "resolved from", "path", "filesystem", "real path")
_STATE = {"ok": "exists", "missing": "not created yet", "unresponsive": "DOES NOT ANSWER",
          "not-a-directory": "not a directory", "error": "unreadable"}


class Applied(NamedTuple):
    """One change tried by repair or clear."""

    action: Any  # the doctor.actions Action
    ok: bool  # done (or, in a dry run, would be done)
    result: str  # one line: what happened, or why it was refused


class CacheOutcome(NamedTuple):
    """What one `doctor cache ACTION` produced: the text and JSON renderers read only this."""

    command: str  # "cache status", "cache verify", "cache repair", "cache clear"
    which: Tuple[str, ...]  # the cache kinds asked for (unsloth, triton, inductor, doctor)
    exit_code: int  # doctor.exits.ExitCode
    findings: Tuple[Finding, ...] = ()  # what the scan/verify found (before any repair)
    scans: Tuple[Any, ...] = ()  # doctor.cache.scan.RootScan per root
    verify_note: str = ""  # why module verification was partial or skipped
    limits: Mapping[str, str] = MappingProxyType({})  # per kind: what its metadata cannot tell
    plan: Optional[Tuple[Any, ...]] = None  # repair/clear: the Actions planned; None for status/verify
    applied: Tuple[Applied, ...] = ()  # repair/clear: each change tried, in order
    dry_run: bool = False  # nothing was changed; `applied` says what would be
    persist: Tuple[str, ...] = ()  # lines that make a new cache location stick in later sessions
    after: Optional[Tuple[Finding, ...]] = None  # repair: the re-check after the changes


def render_cache(con: "Console", out: CacheOutcome, verbose: bool = False) -> None:
    """The whole text view: header, roots, findings, changes, summary line."""
    render_cache_scan(con, out, verbose)
    render_cache_changes(con, out)
    render_cache_summary(con, out)


def render_cache_scan(con: "Console", out: CacheOutcome, verbose: bool = False) -> None:
    """Header, one line per root, then the findings (fixes under them unless a plan follows)."""
    from rich.text import Text

    con.print(Text(f"doctor {out.command}", style="bold"))
    for s in out.scans:
        _root_lines(con, s)
    shown = [f for f in out.findings if verbose or f.severity > Severity.OK]
    if shown:
        con.print()
    for f in sorted(shown, key=lambda f: -f.severity):
        _finding_lines(con, f, verbose, with_fixes=out.plan is None)
    if out.verify_note:
        con.print(Text(f"  note: {out.verify_note}", style="yellow"))
    if verbose and out.limits:
        con.print(Text("What the caches' metadata cannot tell:", style="bold"))
        for k, v in out.limits.items():
            _line(con, f"{k}: {v}", 4, "dim")


def render_cache_plan(con: "Console", applied: Sequence[Applied], heading: str) -> None:
    """The changes, one line each: done (✓) or refused/failed (✗)."""
    from rich.text import Text

    con.print()
    con.print(Text(f"{heading}: {len(applied)} action{'s' if len(applied) != 1 else ''}", style="bold"))
    for x in applied:
        print_command(con, Text.assemble(("✓ " if x.ok else "✗ ", "green" if x.ok else "bold red"), x.result), 2)


def render_cache_changes(con: "Console", out: CacheOutcome) -> None:
    """For repair/clear: what was done (or would be), how to keep a new location, what is left."""
    from rich.text import Text

    if out.plan is None:
        return
    render_cache_plan(con, out.applied, "Plan (dry run, nothing changed)" if out.dry_run else "Done")
    if out.persist:
        con.print(Text("To keep the new location in later sessions, use one of:", style="bold"))
        for p in out.persist:
            print_command(con, p, 4)
    if out.after is not None:
        left = [f for f in out.after if f.severity >= Severity.WARN]
        con.print(Text(f"After repair: {len(left)} problem{'s' if len(left) != 1 else ''} left"
                       + ("" if not left else ": " + "; ".join(f"{f.title} ({f.id})" for f in left[:5]))))


def render_cache_summary(con: "Console", out: CacheOutcome) -> None:
    """'0 errors, 1 warnings, 2 notes, 9 ok  (exit 1: warnings)'."""
    from rich.text import Text

    c = counts(list(out.findings))
    parts = [f"{c['error']} errors", f"{c['warn']} warnings", f"{c['info']} notes", f"{c['ok']} ok"]
    code = out.exit_code
    style = (STYLES[Severity.OK] if code == ExitCode.HEALTHY else STYLES[Severity.WARN] if code == ExitCode.WARNINGS
             else STYLES[Severity.ERROR])
    con.print()
    con.print(Text(", ".join(parts) + f"  (exit {code}: {status_of(code)})", style=style))


def _line(con: "Console", text: str, indent: int, style: str = "") -> None:
    """Prose under a root or finding: wrapped to a terminal, never in a pipe."""
    from rich.padding import Padding
    from rich.text import Text

    con.print(Padding(Text(text, style=style), (0, 0, 0, indent), expand=False))


def _root_lines(con: "Console", s: Any) -> None:
    """'  Triton cache  /path  (TRITON_CACHE_DIR)' and its state line."""
    from rich.text import Text

    d = root_document(s)
    con.print(Text.assemble(("  " + s.root.label, "bold"), f"  {s.root.path}", (f"  ({s.root.source})", "dim")))
    bits = [_STATE.get(s.status, s.status)]
    if s.status == "ok":
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
    _line(con, " · ".join(bits), 4, "dim" if s.status == "missing" else "")


def _finding_lines(con: "Console", f: Finding, verbose: bool, with_fixes: bool) -> None:
    """One finding: icon, title, id; for problems (or -v) its evidence, explanation and fixes."""
    from rich.padding import Padding
    from rich.text import Text

    con.print(Text.assemble((f"  [{ICONS[f.severity]}] ", STYLES[f.severity]),
                            (f.title, "bold" if f.severity >= Severity.WARN else ""), (f"  ({f.id})", "dim")))
    if not (f.severity >= Severity.WARN or verbose):
        return
    for k, v in f.evidence:
        if k in _ROOT_EVIDENCE and not verbose:
            continue
        con.print(Padding(Text.assemble((k + ": ", "dim"), v), (0, 0, 0, 6), expand=False))
    if f.explanation:
        _line(con, f.explanation, 6, "italic")
    if not with_fixes:
        return
    for a in f.fix[:SHOW_FIXES]:
        print_command(con, Text(f"fix: {a.command() or a.description}", style="bold"), 6)
    if len(f.fix) > SHOW_FIXES:
        _line(con, f"... and {len(f.fix) - SHOW_FIXES} more (doctor cache repair --dry-run lists them)", 6)
