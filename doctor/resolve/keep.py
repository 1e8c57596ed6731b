"""The keep-set: what a plan must not move, as constraints pip enforces.

By default the installed torch and the healthy torch-coupled packages stay, each pinned by its exact
installed version string with arbitrary equality: `torch===2.13.0+cpu`. A plain `torch==2.13.0` admits
another build (+cpu or +cu126) in its place; `===` matches the string, local label included.
"""

from __future__ import annotations

from typing import Iterable, List, Set, Tuple

from doctor.actions import PipInstall, PipUninstall
from doctor.compat_matrix.stack import TORCH_COUPLED
from doctor.facts import Facts
from doctor.findings import Finding, Severity
from doctor.resolve.pin_files import one_token



def unhealthy(findings: Iterable[Finding]) -> Set[str]:
    """Packages a warn-or-worse finding proposes to change: they are not kept."""
    out: Set[str] = set()
    for f in findings:
        if f.severity < Severity.WARN:
            continue
        for a in f.fix:
            if isinstance(a, (PipInstall, PipUninstall)):
                out.update(a.packages())
    return out


def pin(name: str, version: str) -> str:
    """`name===version`: this exact version string, local label included."""
    return f"{name}==={version}"


def keep_set(facts: Facts, findings: Iterable[Finding], moving: Iterable[str] = ()) -> Tuple[str, ...]:
    """Constraint lines for torch (always, unless moving) and every healthy torch-coupled package installed."""
    bad = unhealthy(findings)
    move = set(moving)
    out: List[str] = []
    for name in TORCH_COUPLED:
        d = facts.dist(name)
        if d is None or d.error or not d.version.strip() or name in move:
            continue
        if name != "torch" and name in bad:
            continue
        if not one_token(d.version):  # never write a line pip would read as something else
            continue
        out.append(pin(name, d.version))
    return tuple(out)
