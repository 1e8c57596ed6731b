"""The text view of `doctor probe`: the catalogue, and one run's verdicts, dispatch table and fingerprint line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from doctor.report.tables import dispatch_table_view, render_verdict_details, verdict_table

if TYPE_CHECKING:
    from rich.console import Console

    from doctor.probes.session import ProbeRun
    from doctor.probes.spec import ProbeSpec


def render_catalogue(con: "Console", specs: Iterable["ProbeSpec"]) -> None:
    """`doctor probe --list`: one probe a line, id, title and what it needs."""
    from rich.text import Text

    for s in specs:
        needs = f"  (needs {', '.join(s.requires)})" if s.requires else ""
        con.print(Text.assemble(f"{s.id:22} {s.title}", (needs, "dim")))


def render_probe_run(con: "Console", run: "ProbeRun", choices: Sequence[Any], verbose: bool = False) -> None:
    """The verdict table (short details; -v adds the full ones), the dispatch table, and where the verdicts came from."""
    con.print(verdict_table(run.results))
    if verbose:
        render_verdict_details(con, run.results)
    con.print(dispatch_table_view(choices))
    con.print(f"fingerprint {run.fingerprint}: ran {len(run.ran)}, reused {len(run.cached)} cached verdicts, {run.wall_s:.1f} s"
              + ("  (--refresh to run again)" if run.cached else ""))
