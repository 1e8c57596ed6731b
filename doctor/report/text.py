"""The terminal report (rich): sections, one line per finding, evidence and fix under problems."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from doctor._version import __version__
from doctor.findings import Severity
from doctor.report.console import console as default_console
from doctor.report.console import print_command
from doctor.report.summary import EMPTY_SECTION, ICONS, STYLES, environment_line, grouped, summary_line, torch_label
from doctor.report.tables import dispatch_table_view, render_verdict_details, verdict_table

if TYPE_CHECKING:  # rich is imported lazily: the --json path never pays for it
    from rich.console import Console

    from doctor.findings import Finding
    from doctor.report_data import ReportData as Report


def print_finding(console: "Console", fd: "Finding", detail: bool) -> None:
    """One finding: icon, title, id; with `detail`, its evidence, explanation and fix (indented)."""
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    console.print(Text.assemble((f"  [{ICONS[fd.severity]}] ", STYLES[fd.severity]),
                                (fd.title, "bold" if fd.severity >= Severity.WARN else ""), (f"  ({fd.id})", "dim")))
    if not detail:
        return
    for k, v in fd.evidence:
        console.print(Padding(Text.assemble((k + ": ", "dim"), v), (0, 0, 0, 6), expand=False))
    if fd.explanation:
        console.print(Padding(Text(fd.explanation, style="italic"), (0, 0, 0, 6), expand=False))
    for a in fd.fix:
        cmd = a.command()
        line = f"fix: {escape(cmd)}" if cmd else f"fix: {escape(a.description)}"
        # one line even on a narrow terminal: a wrapped command pastes as a partial one
        print_command(console, Text.from_markup(f"[bold]{line}[/bold]" + (f"  [dim]# {escape(a.description)}[/dim]" if cmd else "")), 6)


def render_text(report: "Report", console: Optional["Console"] = None, verbose: bool = False) -> None:
    """Print the doctor's report: sections, one line per finding, evidence and fix under problems."""
    from rich.text import Text

    console = console or default_console()
    f = report.facts
    gpus = ", ".join(f"{g.name} (cc {g.cc})" for g in f.hardware.gpus) or "no NVIDIA GPU"
    head = Text.assemble(("tune-doctor ", "bold"), f"{__version__}  ·  matrix {report.matrix_version}  ·  Python {f.python.version}"
                         f"  ·  {', '.join(f.env_kinds) or 'system python'}\n",
                         f"GPU: {gpus}  ·  driver {f.hardware.driver_version or 'none'}  ·  "
                         f"torch {torch_label(report)}\n",
                         f"Environment: {environment_line(report)}")
    console.print(head)
    for cat, items in grouped(list(report.findings), report.sections).items():
        console.print()
        console.print(Text(cat.value, style="bold underline"))
        if not items:
            console.print(Text.assemble(("  [✓] ", STYLES[Severity.OK]), EMPTY_SECTION.get(cat, "nothing to report")))
        for fd in items:
            if fd.severity is Severity.OK and not verbose:
                console.print(Text.assemble(("  [✓] ", STYLES[fd.severity]), fd.title))
                continue
            print_finding(console, fd, verbose or fd.severity >= Severity.WARN)
    if report.probes and verbose:
        console.print()
        console.print(verdict_table(report.probes))
        render_verdict_details(console, report.probes)
        console.print(dispatch_table_view(report.dispatch))
    if report.probe_note:
        console.print()
        console.print(Text(report.probe_note, style="dim"))
    console.print()
    style = STYLES[Severity.ERROR] if report.exit_code == 2 else STYLES[Severity.WARN] if report.exit_code == 1 else STYLES[Severity.OK]
    console.print(Text(summary_line(report), style=style))
