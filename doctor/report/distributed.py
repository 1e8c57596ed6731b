"""The views of `doctor probe --distributed`: per-rank verdicts, the bus-bandwidth table, the JSON document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable

from doctor.report.tables import render_verdict_details, verdict_table

if TYPE_CHECKING:
    from rich.console import Console

    from doctor.findings import Finding
    from doctor.probes.distributed.launcher import DistRun


def render_distributed(con: "Console", run: "DistRun", verbose: bool = False) -> None:
    """Verdicts (every rank), full details of failures with -v, bandwidth per size, the settings line."""
    from rich.table import Table

    con.print(verdict_table(run.results, title=f"distributed probe: {run.world_size} {run.backend} ranks"))
    if verbose:
        render_verdict_details(con, run.results)
    if run.bandwidth:
        t = Table(title="bus bandwidth (nccl-tests definitions, slowest rank)", title_justify="left")
        for col in ("collective", "size", "time", "algbw", "busbw"):
            t.add_column(col, justify="left" if col == "collective" else "right", no_wrap=True)
        for b in run.bandwidth:
            t.add_row(b.collective, _size(b.bytes), f"{b.time_us:.1f} us", f"{b.algbw_gbs:.3f} GB/s", f"{b.busbw_gbs:.3f} GB/s")
        con.print(t)
    settings = ", ".join(f"{k}={v}" for k, v in run.settings)
    con.print(f"{run.backend}, {run.world_size} ranks, process-group timeout {run.timeout_s:g} s, {run.wall_s:.1f} s"
              + (f"; {settings}" if settings else ""))


def _size(n: int) -> str:
    """4096 -> '4 KiB'."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def distributed_document(run: "DistRun", findings: Iterable["Finding"], exit_code: int) -> Dict[str, Any]:
    """`doctor probe --distributed --json`: the envelope, then the run (verdicts, bandwidth, settings)."""
    from doctor.report.json import envelope

    return {**envelope("probe distributed", exit_code, findings), **run.to_dict()}
