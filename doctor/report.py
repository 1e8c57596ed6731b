"""Findings -> terminal (rich), JSON (with a schema version) and Markdown for bug reports."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from doctor import __version__
from doctor.findings import Category, Finding, Severity

if TYPE_CHECKING:  # rich is imported lazily: the --json path never pays for it
    from rich.console import Console

    from doctor.check import Report

JSON_SCHEMA_VERSION = 1
ICONS = {Severity.OK: "✓", Severity.INFO: "i", Severity.WARN: "!", Severity.ERROR: "✗"}
STYLES = {Severity.OK: "green", Severity.INFO: "cyan", Severity.WARN: "yellow", Severity.ERROR: "bold red"}
EXIT_MEANING = {0: "healthy", 1: "warnings", 2: "errors"}


def facts_summary(report: "Report") -> Dict[str, Any]:
    """The facts a reader of a report needs, as plain JSON-ready data."""
    f = report.facts
    stack = ("torch", "triton", "xformers", "flash-attn", "bitsandbytes", "transformers", "trl", "peft",
             "accelerate", "unsloth", "unsloth-zoo", "liger-kernel")
    return {
        "python": f.python.version,
        "executable": f.python.executable,
        "platform": f"{f.platform.system} {f.platform.machine} {f.platform.release}",
        "libc": f"{f.platform.libc or '?'} {f.platform.libc_version or ''}".strip(),
        "environment": list(f.env_kinds),
        "torch_build": None if f.torch is None else {"version": f.torch.version, "cuda": f.torch.cuda, "hip": f.torch.hip,
                                                     "git_version": f.torch.git_version, "error": f.torch.error},
        "xformers_build": None if f.xformers is None else {
            "torch": f.xformers.torch_version, "cuda": f.xformers.cuda_version, "python": f.xformers.python_version,
            "arch_list": f.xformers.arch_list, "error": f.xformers.error},
        "driver": f.hardware.driver_version,
        "gpus": [{"index": g.index, "name": g.name, "compute_capability": g.cc, "memory_mib": g.memory_mib}
                 for g in f.hardware.gpus],
        "gpu_source": f.hardware.source,
        "packages": {n: f.version_of(n) for n in stack if f.version_of(n) is not None},
        "env": dict(f.env),
        "distributions": len(f.distributions),
    }


def counts(findings: List[Finding]) -> Dict[str, int]:
    """Number of findings per severity label."""
    out = {s.label: 0 for s in Severity}
    for fd in findings:
        out[fd.severity.label] += 1
    return out


def to_json(report: "Report") -> str:
    """The whole report as JSON (schema_version lets consumers detect changes)."""
    findings = list(report.findings)
    doc = {
        "schema_version": JSON_SCHEMA_VERSION,
        "doctor_version": __version__,
        "matrix_version": report.matrix_version,
        "exit_code": report.exit_code,
        "status": EXIT_MEANING.get(report.exit_code, "?"),
        "summary": counts(findings),
        "facts": facts_summary(report),
        "findings": [fd.to_dict() for fd in findings],
        "rules_run": list(report.rules_run),
        "probes": [r.to_dict() for r in report.probes],  # type: ignore[attr-defined]
        "dispatch": [{"op": c.op, "backend": c.backend, "reason": c.reason} for c in report.dispatch],  # type: ignore[attr-defined]
        "probe_note": report.probe_note,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _grouped(findings: List[Finding]) -> Dict[Category, List[Finding]]:
    """Findings by category in report order, worst first inside each."""
    groups: Dict[Category, List[Finding]] = {c: [] for c in Category}
    for fd in findings:
        groups[fd.category].append(fd)
    for c in groups:
        groups[c].sort(key=lambda fd: -fd.severity)
    return {c: v for c, v in groups.items() if v or c is not Category.DOCTOR}


EMPTY_SECTION = {
    Category.IMPORTS: "not checked: pass --script train.py, or run doctor.check_imports() in the notebook",
}


def summary_line(report: "Report") -> str:
    """'2 errors, 1 warning, 9 ok  (exit 2: errors)'."""
    c = counts(list(report.findings))
    parts = []
    for label, n in (("error", c["error"]), ("warning", c["warn"]), ("note", c["info"]), ("ok", c["ok"])):
        if n or label == "ok":
            parts.append(f"{n} {label}" + ("s" if n != 1 and label != "ok" else ""))
    return ", ".join(parts) + f"  (exit {report.exit_code}: {EXIT_MEANING.get(report.exit_code, '?')})"


def render_text(report: "Report", console: Optional["Console"] = None, verbose: bool = False) -> None:
    """Print the doctor's report: sections, one line per finding, evidence and fix under problems."""
    from rich.console import Console
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    console = console or Console()
    f = report.facts
    gpus = ", ".join(f"{g.name} (cc {g.cc})" for g in f.hardware.gpus) or "no NVIDIA GPU"
    head = Text.assemble(("tune-doctor ", "bold"), f"{__version__}  ·  matrix {report.matrix_version}  ·  Python {f.python.version}"
                         f"  ·  {', '.join(f.env_kinds) or 'system python'}\n",
                         f"GPU: {gpus}  ·  driver {f.hardware.driver_version or 'none'}  ·  "
                         f"torch {(f.torch.version if f.torch else None) or 'not installed'}")
    console.print(head)
    for cat, items in _grouped(list(report.findings)).items():
        console.print()
        console.print(Text(cat.value, style="bold underline"))
        if not items:
            console.print(Text.assemble(("  [✓] ", STYLES[Severity.OK]), EMPTY_SECTION.get(cat, "nothing to report")))
        for fd in items:
            if fd.severity is Severity.OK and not verbose:
                console.print(Text.assemble(("  [✓] ", STYLES[fd.severity]), fd.title))
                continue
            console.print(Text.assemble((f"  [{ICONS[fd.severity]}] ", STYLES[fd.severity]), (fd.title, "bold" if fd.severity >= Severity.WARN else ""),
                                        (f"  ({fd.id})", "dim")))
            show_detail = verbose or fd.severity >= Severity.WARN
            if not show_detail:
                continue
            for k, v in fd.evidence:
                console.print(Padding(Text.assemble((k + ": ", "dim"), v), (0, 0, 0, 6), expand=False))
            if fd.explanation:
                console.print(Padding(Text(fd.explanation, style="italic"), (0, 0, 0, 6), expand=False))
            for a in fd.fix:
                cmd = a.command()
                line = f"fix: {escape(cmd)}" if cmd else f"fix: {escape(a.description)}"
                console.print(Padding(Text.from_markup(f"[bold]{line}[/bold]" + (f"  [dim]# {escape(a.description)}[/dim]" if cmd else "")),
                                      (0, 0, 0, 6), expand=False))
    if report.probes and verbose:
        from doctor.commands.probe import dispatch_table_view, verdict_table

        console.print()
        console.print(verdict_table(report.probes))
        console.print(dispatch_table_view(report.dispatch))
    if report.probe_note:
        console.print()
        console.print(Text(report.probe_note, style="dim"))
    console.print()
    style = STYLES[Severity.ERROR] if report.exit_code == 2 else STYLES[Severity.WARN] if report.exit_code == 1 else STYLES[Severity.OK]
    console.print(Text(summary_line(report), style=style))


def to_markdown(report: "Report") -> str:
    """A Markdown report to paste into a bug report: environment table, then findings by section."""
    s = facts_summary(report)
    lines = [f"## tune-doctor {__version__} report", "",
             f"**Status:** {summary_line(report)}", "",
             "| fact | value |", "|---|---|"]
    rows = [("Python", f"{s['python']} ({s['executable']})"), ("Platform", s["platform"]), ("libc", s["libc"]),
            ("Environment", ", ".join(s["environment"]) or "system"),
            ("GPUs", ", ".join(f"{g['name']} (cc {g['compute_capability']})" for g in s["gpus"]) or "none"),
            ("Driver", s["driver"] or "none"),
            ("torch build", f"{s['torch_build']['version']} CUDA {s['torch_build']['cuda']}" if s["torch_build"] else "not installed")]
    rows += [(n, v) for n, v in s["packages"].items() if n != "torch"]
    lines += [f"| {k} | `{v}` |" for k, v in rows]
    for cat, items in _grouped(list(report.findings)).items():
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
