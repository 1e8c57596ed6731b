"""A Markdown report to paste into a bug report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from doctor._version import __version__
from doctor.findings import Severity
from doctor.report.summary import EMPTY_SECTION, environment_line, facts_summary, grouped, summary_line, torch_label

if TYPE_CHECKING:
    from doctor.report_data import ReportData as Report


def to_markdown(report: "Report") -> str:
    """A Markdown report to paste into a bug report: environment table, then findings by section."""
    s = facts_summary(report)
    lines = [f"## tune-doctor {__version__} report", "",
             f"**Status:** {summary_line(report)}", "",
             "| fact | value |", "|---|---|"]
    rows = [("Python", s["python"]), ("Environment checked", environment_line(report)),
            ("Platform", s["platform"]), ("libc", s["libc"]),
            ("Environment kind", ", ".join(s["environment"]) or "system"),
            ("GPUs", ", ".join(f"{g['name']} (cc {g['compute_capability']})" for g in s["gpus"]) or "none"),
            ("Driver", s["driver"] or "none"),
            ("torch build", f"{torch_label(report)} CUDA {s['torch_build']['cuda']}" if s["torch_build"] else torch_label(report))]
    rows += [(n, v) for n, v in s["packages"].items() if n != "torch"]
    lines += [f"| {k} | `{v}` |" for k, v in rows]
    for cat, items in grouped(list(report.findings), report.sections).items():
        lines += ["", f"### {cat.value}", ""]
        if not items:
            lines.append(f"- {EMPTY_SECTION.get(cat, 'nothing to report')}")
        for fd in items:
            lines.append(f"- **{fd.severity.label.upper()}** `{fd.id}`: {fd.title}")
            if fd.severity >= Severity.WARN:
                for k, v in fd.evidence:
                    lines.append(f"  - {k}: `{v}`")
                if fd.explanation:
                    lines.append(f"  - why: {fd.explanation}")
                for a in fd.fix:
                    cmd = a.command()
                    lines.append(f"  - fix: `{cmd}`" if cmd else f"  - fix: {a.description}")
    if report.probes:
        lines += ["", "### Probe verdicts", "", "| probe | backend | verdict | error / tol | time | detail |", "|---|---|---|---|---|---|"]
        for r in report.probes:  # type: ignore[attr-defined]
            err = "" if r.error is None else f"{r.error:.2e} / {r.tolerance if r.tolerance is not None else float('nan'):.1e}"
            t = "" if r.time_ms is None else f"{r.time_ms:.3g} ms"
            lines.append(f"| {r.id} | {r.backend} | {r.status} | {err} | {t} | {r.detail[:120].replace('|', '/')} |")
        lines += ["", "| op | backend | why |", "|---|---|---|"]
        lines += [f"| {c.op} | {c.backend} | {c.reason} |" for c in report.dispatch]  # type: ignore[attr-defined]
    if report.probe_note:
        lines += ["", f"_{report.probe_note}_"]
    return "\n".join(lines) + "\n"
