"""The text view of `doctor probe`: the catalogue, one run's verdicts, dispatch table and fingerprint line, and the
per-GPU table of `--all-gpus` with its findings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, Sequence

from doctor.report.tables import dispatch_table_view, plain_table, render_verdict_details, verdict_table

if TYPE_CHECKING:
    from rich.console import Console

    from doctor.findings import Finding
    from doctor.probes.all_gpus import AllGpuRun
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


def render_all_gpus(con: "Console", run: "AllGpuRun", findings: Sequence["Finding"], verbose: bool = False) -> None:
    """`doctor probe --all-gpus`: one row per GPU (counts, slowest probe, verdict), the notes, the findings (details
    of warnings and errors; -v: of all, and every failed verdict's full detail per GPU), where the verdicts came from."""
    from rich.text import Text

    from doctor.findings import Severity
    from doctor.probes.compare import BAD_GPU, NOT_COMPARED_TIMES, SLOW_GPU
    from doctor.report.text import print_finding

    verdict: Dict[str, Text] = {}
    for f in findings:  # the row's verdict is what the comparison found about that GPU
        if f.id == BAD_GPU:
            verdict[f.subject] = Text("bad GPU", style="bold red")
        elif f.id == SLOW_GPU and f.subject not in verdict:
            verdict[f.subject] = Text("slow", style="yellow")
    t = plain_table(f"probes on {len(run.runs)} GPU(s)")
    # What a reader scans for first, never folded: index, verdict, counts, slowest probe. The UUID and the model give
    # way on a narrow terminal (cut with an ellipsis; a UUID's first characters still tell it; findings carry both in full).
    for col in ("GPU", "verdict", "pass", "fail", "skip", "slowest probe"):
        t.add_column(col, no_wrap=True)
    t.add_column("UUID", overflow="ellipsis", min_width=12)
    t.add_column("model", overflow="ellipsis", min_width=4)
    for gr in run.runs:
        rs = gr.run.results
        timed = [r for r in rs if r.passed and r.time_ms is not None and r.id not in NOT_COMPARED_TIMES]
        slowest = max(timed, key=lambda r: r.time_ms or 0.0, default=None)
        failed = sum(r.status not in ("pass", "skipped") for r in rs)
        ran = any(r.status != "skipped" for r in rs)
        row_verdict = verdict.get(str(gr.gpu.index)) or (Text("env failures", style="red") if failed else
                                                         Text("ok", style="green") if ran else Text("nothing ran", style="dim"))
        t.add_row(str(gr.gpu.index), row_verdict, str(sum(r.passed for r in rs)), str(failed),
                  str(sum(r.status == "skipped" for r in rs)),
                  f"{slowest.id} {slowest.time_ms:.3g} ms" if slowest is not None and slowest.time_ms is not None else "",
                  Text(gr.gpu.uuid or "unknown", no_wrap=True, overflow="ellipsis"),
                  Text(f"{gr.gpu.name} (cc {gr.gpu.cc})", no_wrap=True, overflow="ellipsis"))
    con.print(t)
    for note in run.notes:
        con.print(Text(note, style="dim"))
    con.print()
    for f in findings:
        print_finding(con, f, verbose or f.severity >= Severity.WARN)
    if verbose:
        for gr in run.runs:
            if any(not r.passed and r.status != "skipped" for r in gr.run.results):
                con.print(Text(f"GPU {gr.gpu.index}:", style="bold"))
                render_verdict_details(con, [r for r in gr.run.results if r.status != "skipped"])
    con.print(f"{len(run.runs)} GPU(s): ran {run.ran}, reused {run.cached} cached verdicts, {run.wall_s:.1f} s"
              + ("  (--refresh to run again)" if run.cached else ""))
