"""Findings: what every check returns (the Actions that fix them are doctor.actions)."""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Dict, Iterable, Mapping, NamedTuple, Optional, Tuple

if TYPE_CHECKING:  # a type only: the action classes (and packaging.requirements) load with the code that builds fixes
    from doctor.actions import Action


class Severity(IntEnum):
    """How bad a finding is; ordered so max() gives the worst."""

    OK = 0
    INFO = 1
    WARN = 2
    ERROR = 3

    @property
    def label(self) -> str:
        """Lower-case name used in JSON and text."""
        return self.name.lower()


class Category(str, Enum):
    """Report sections, in the order a doctor's report shows them."""

    GPU = "GPU & driver"
    TORCH = "PyTorch build"
    KERNELS = "Attention & kernel libraries"
    PACKAGES = "Package versions"
    CACHES = "Caches"
    IMPORTS = "Imports"
    DOCTOR = "Doctor"

    @property
    def key(self) -> str:
        """Stable machine name of the section (JSON)."""
        return self.name.lower()


class Finding(NamedTuple):
    """One result of one check: what, how bad, the evidence, why, and the fix."""

    id: str  # stable, dotted: "xformers.torch-mismatch"
    severity: Severity
    category: Category
    title: str  # one line
    evidence: Tuple[Tuple[str, str], ...] = ()  # ordered (label, value) pairs
    explanation: str = ""
    fix: Tuple[Action, ...] = ()  # doctor.actions: the preferred step first, then alternatives
    subject: str = ""  # what it is about when one id repeats (a GPU index, a package)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready form (schema in doctor.report)."""
        return {
            "id": self.id,
            "severity": self.severity.label,
            "category": self.category.key,
            "title": self.title,
            "subject": self.subject,
            "evidence": {k: v for k, v in self.evidence},
            "explanation": self.explanation,
            "fix": [a.to_dict() for a in self.fix],
        }


def finding(
    id: str,
    severity: Severity,
    category: Category,
    title: str,
    evidence: Optional[Mapping[str, object]] = None,
    explanation: str = "",
    fix: Iterable[Action] = (),
    subject: str = "",
) -> Finding:
    """Build a Finding, turning evidence values into strings in the given order."""
    ev = tuple((str(k), "" if v is None else str(v)) for k, v in (evidence or {}).items())
    return Finding(id, severity, category, title, ev, explanation, tuple(fix), subject)


def worst(findings: Iterable[Finding]) -> Severity:
    """The highest severity among findings (OK when there are none)."""
    return max((f.severity for f in findings), default=Severity.OK)
