"""Rich tables of probe verdicts and of the dispatch choices, readable at 100 columns.

The verdict table carries a short detail (its first line, cut); the full detail and the child's stderr
tail are `render_verdict_details` (shown with -v) and the JSON. Identifiers, verdicts and numbers are
never folded: only the detail column gives way (with an ellipsis) when the terminal is narrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from doctor.verdicts import ProbeResult

SHORT_DETAIL = 48  # characters of a verdict's detail the table shows; the rest is -v / --json
STATUS_STYLES = {"pass": "green", "skipped": "dim"}  # every other verdict is a failure: bold red


def short_detail(detail: str, limit: int = SHORT_DETAIL) -> str:
    """The first non-empty line of a detail, cut to `limit` characters with an ellipsis."""
    first = next((ln.strip() for ln in detail.splitlines() if ln.strip()), "")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def error_text(r: "ProbeResult") -> str:
    """'1.2e-03/1e-02' (error vs reference / tolerance), '' when nothing was compared."""
    if r.error is None:
        return ""
    return f"{r.error:.1e}" + (f"/{r.tolerance:.0e}" if r.tolerance is not None else "")


def time_text(r: "ProbeResult") -> str:
    """'0.42 ms', '' when not timed."""
    return "" if r.time_ms is None else f"{r.time_ms:.3g} ms"


def plain_table(title: str) -> "Table":
    """A table without vertical rules: the columns' own width goes to content, not to borders."""
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 padding=(0, 1), collapse_padding=True)


def verdict_table(results: Iterable["ProbeResult"], title: str = "probe verdicts") -> "Table":
    """A rich Table of verdicts: id, backend, verdict, error/tolerance, time, short detail."""
    from rich.text import Text

    t = plain_table(title)
    for col in ("probe", "backend", "verdict", "error/tol", "time"):
        t.add_column(col, no_wrap=True)  # never folded: these are what a reader scans for
    # The one column that gives way on a narrow terminal (cells are cut with an ellipsis, never folded).
    t.add_column("detail (-v: full)", overflow="ellipsis", min_width=8)
    for r in results:
        style = STATUS_STYLES.get(r.status, "bold red")
        t.add_row(r.id, r.backend, Text(r.status, style=style), error_text(r), time_text(r),
                  Text(short_detail(r.detail), no_wrap=True, overflow="ellipsis"))
    return t


def render_verdict_details(con: "Console", results: Sequence["ProbeResult"]) -> None:
    """The full detail and stderr tail of every verdict that did not pass (the table shows a short form)."""
    from rich.padding import Padding
    from rich.text import Text

    shown = [r for r in results if not r.passed and (r.detail or r.stderr_tail)]
    for r in shown:
        con.print(Text.assemble((f"  {r.id}", "bold"), f" ({r.backend or '-'}): ",
                                (r.status, STATUS_STYLES.get(r.status, "bold red"))))
        if r.detail:
            con.print(Padding(Text(r.detail), (0, 0, 0, 4), expand=False))
        if r.stderr_tail and r.stderr_tail.strip() != r.detail.strip():
            con.print(Padding(Text(r.stderr_tail.rstrip(), style="dim"), (0, 0, 0, 4), expand=False))


def dispatch_table_view(choices: Iterable[Any]) -> "Table":
    """A rich Table of op -> backend and why."""
    t = plain_table("dispatch table")
    t.add_column("op", no_wrap=True)
    t.add_column("backend", no_wrap=True, style="bold")
    t.add_column("why")
    t.add_column("candidates")
    for c in choices:
        t.add_row(c.op, c.backend, c.reason, ", ".join(f"{b}:{st}" for b, st, _ in c.candidates))
    return t
