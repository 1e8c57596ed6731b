"""What every renderer shares: severity icons and styles, counts, sections, the facts a reader needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from doctor.compat_matrix.stack import TRAINING_STACK
from doctor.exits import status_of
from doctor.findings import Category, Finding, Severity
from doctor.rules.environment import active_environment

if TYPE_CHECKING:
    from doctor.report_data import ReportData as Report

ICONS = {Severity.OK: "✓", Severity.INFO: "i", Severity.WARN: "!", Severity.ERROR: "✗"}
STYLES = {Severity.OK: "green", Severity.INFO: "cyan", Severity.WARN: "yellow", Severity.ERROR: "bold red"}
EMPTY_SECTION = {
    Category.IMPORTS: "not checked: pass --script train.py, or run doctor.check_imports() in the notebook",
}


def facts_summary(report: "Report") -> Dict[str, Any]:
    """The facts a reader of a report needs, as plain JSON-ready data."""
    f = report.facts
    active = active_environment(f)
    return {
        "python": f.python.version,
        "executable": f.python.executable,  # the interpreter whose environment was checked
        "prefix": f.python.prefix,  # its sys.prefix
        "active_environment": None if active is None else active._asdict(),  # VIRTUAL_ENV / CONDA_PREFIX, if set
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
        "packages": {n: f.version_of(n) for n in TRAINING_STACK if f.version_of(n) is not None},
        "env": dict(f.env),
        "distributions": len(f.distributions),
    }


def torch_label(report: "Report") -> str:
    """'2.11.0+cu130', or the metadata's version when torch/version.py gave none; 'not installed' only when it is not."""
    f = report.facts
    if f.torch is not None and f.torch.version:
        return f.torch.version
    meta = f.version_of("torch")
    if meta is not None:
        return f"{meta} (build info unreadable)"
    return "not installed"


def counts(findings: List[Finding]) -> Dict[str, int]:
    """Number of findings per severity label."""
    out = {s.label: 0 for s in Severity}
    for fd in findings:
        out[fd.severity.label] += 1
    return out


def grouped(findings: List[Finding], sections: Sequence[Category] = ()) -> Dict[Category, List[Finding]]:
    """Findings by category in report order, worst first inside each; only `sections` (when given) and sections
    with findings: a check of the imports alone does not list GPU or packages as "nothing to report"."""
    groups: Dict[Category, List[Finding]] = {c: [] for c in Category if not sections or c in sections}
    for fd in findings:
        groups.setdefault(fd.category, []).append(fd)
    groups = {c: groups[c] for c in Category if c in groups}  # report order, whatever came in
    for c in groups:
        groups[c].sort(key=lambda fd: -fd.severity)
    return {c: v for c, v in groups.items() if v or c is not Category.DOCTOR}


def summary_line(report: "Report") -> str:
    """'2 errors, 1 warning, 9 ok  (exit 2: errors)'."""
    c = counts(list(report.findings))
    parts = []
    for label, n in (("error", c["error"]), ("warning", c["warn"]), ("note", c["info"]), ("ok", c["ok"])):
        if n or label == "ok":
            parts.append(f"{n} {label}" + ("s" if n != 1 and label != "ok" else ""))
    return ", ".join(parts) + f"  (exit {report.exit_code}: {status_of(report.exit_code)})"


def environment_line(report: "Report") -> str:
    """'/venv/bin/python (prefix /venv)', and the activated environment when it is another one."""
    f = report.facts
    text = f"{f.python.executable or '?'} (prefix {f.python.prefix})"
    active = active_environment(f)
    if active is not None and not active.is_checked:
        text += f"; NOT the active {active.variable}={active.path}"
    return text
