"""Documented failures (matrix known_issues) that the installed versions are affected by."""

from __future__ import annotations

from typing import List

from doctor.actions import PipInstall
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.rules._common import satisfies, version

KERNEL_PACKAGES = {"xformers", "flash-attn", "triton", "bitsandbytes", "liger-kernel"}


def check_known_issues(facts: Facts, matrix: Matrix) -> List[Finding]:
    """One ERROR per known issue whose affected range (and co-requirements) match what is installed."""
    out: List[Finding] = []
    for issue in matrix.known_issues:
        pv = version(facts.version_of(issue.package))
        if pv is None or not satisfies(pv, issue.affected):
            continue
        if not all((ov := version(facts.version_of(o))) is not None and satisfies(ov, s) for o, s in issue.requires.items()):
            continue
        ev = {issue.package: str(pv), "affected versions": str(issue.affected)}
        ev.update({o: facts.version_of(o) or "" for o in issue.requires})
        ev.update({"reports": ", ".join(issue.reports), "source": issue.source})
        out.append(finding(
            issue.id, Severity.ERROR,
            Category.KERNELS if issue.package in KERNEL_PACKAGES else Category.PACKAGES,
            f"{issue.package} {pv}: {issue.title}", ev, issue.cause,
            # --no-deps: known-good pins must not drag in another torch
            [PipInstall((s,), description=f"known-good: {s}", no_deps=True) for s in issue.fix]))
    return out
