"""Rich tables of probe verdicts and of the dispatch choices."""

from __future__ import annotations


def verdict_table(results, title: str = "probe verdicts"):  # type: ignore[no-untyped-def]
    """A rich Table of verdicts."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("probe", "backend", "verdict", "error vs ref", "time", "detail"):
        t.add_column(col, overflow="fold")
    for r in results:
        style = {"pass": "green", "skipped": "dim"}.get(r.status, "bold red")
        err = "" if r.error is None else (f"{r.error:.2e}" + (f" / {r.tolerance:.1e}" if r.tolerance is not None else ""))
        t.add_row(r.id, r.backend, f"[{style}]{r.status}[/{style}]", err, "" if r.time_ms is None else f"{r.time_ms:.3g} ms",
                  r.detail[:160])
    return t


def dispatch_table_view(choices):  # type: ignore[no-untyped-def]
    """A rich Table of op -> backend and why."""
    from rich.table import Table

    t = Table(title="dispatch table", title_justify="left")
    for col in ("op", "backend", "why", "candidates"):
        t.add_column(col, overflow="fold")
    for c in choices:
        cands = ", ".join(f"{b}:{st}" for b, st, _ in c.candidates)
        t.add_row(c.op, f"[bold]{c.backend}[/bold]", c.reason, cands)
    return t
