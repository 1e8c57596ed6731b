"""What `doctor run` shows before it starts a script: the script's import order first, then the check's problems.

Short on purpose: it precedes every training run. Import-order findings for the script come first (all of them,
an ok included, so a healthy script says so); then every warning and error of the rest of the check, with its
evidence and fix as `doctor check` prints them; then the summary line and how probes ran. Healthy sections
are not listed: `doctor check` is the full report.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, List

from doctor.findings import Category, Finding, Severity
from doctor.report.text import print_finding
from doctor.report.summary import STYLES, summary_line

if TYPE_CHECKING:
    from rich.console import Console

    from doctor.report_data import ReportData as Report


def _line(con: "Console", fd: Finding, detail: bool) -> None:
    """One finding as `doctor check` prints it (evidence, explanation and fix with `detail`)."""
    print_finding(con, fd, detail)


def problems(report: "Report") -> List[Finding]:
    """The warnings and errors outside the import order, worst first."""
    found = [fd for fd in report.findings if fd.category is not Category.IMPORTS and fd.severity >= Severity.WARN]
    return sorted(found, key=lambda fd: -fd.severity)


def render_handoff(report: "Report", con: "Console", script: str) -> None:
    """The script's import-order findings, then the check's warnings and errors, then the summary line."""
    from rich.text import Text

    con.print(Text(f"Imports ({os.path.basename(script)})", style="bold underline"))
    imports = sorted((fd for fd in report.findings if fd.category is Category.IMPORTS), key=lambda fd: -fd.severity)
    for fd in imports:
        _line(con, fd, fd.severity >= Severity.WARN)
    con.print(Text.assemble(("  [✓] ", STYLES[Severity.OK]),
                            "the doctor's runtime is patched in before the script's first line (import order by construction)"))
    rest = problems(report)
    if rest:
        con.print(Text("Environment", style="bold underline"))
        for fd in rest:
            _line(con, fd, True)
    if report.probe_note:
        con.print(Text(report.probe_note, style="dim"))
    code = report.exit_code
    style = STYLES[Severity.ERROR] if code == 2 else STYLES[Severity.WARN] if code == 1 else STYLES[Severity.OK]
    con.print(Text("check: " + summary_line(report), style=style))
