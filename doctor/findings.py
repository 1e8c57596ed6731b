"""Findings and the Actions that fix them: what every check returns."""

from __future__ import annotations

import shlex
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Dict, Iterable, Mapping, NamedTuple, Optional, Tuple

if TYPE_CHECKING:  # a type only: the action classes (and packaging.requirements) load with the code that builds fixes
    from doctor.actions import Action as TypedAction


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


class ActionKind(str, Enum):
    """What an Action does."""

    PIP_INSTALL = "pip-install"
    PIP_UNINSTALL = "pip-uninstall"
    SET_ENV = "set-env"
    RESTART = "restart-runtime"
    REORDER_IMPORTS = "reorder-imports"
    CACHE_REPAIR = "cache-repair"
    MANUAL = "manual"


class Action(NamedTuple):
    """One explicit step of a fix, printable before it runs."""

    kind: ActionKind
    description: str
    args: Tuple[str, ...] = ()  # pip specifiers, or ("NAME", "VALUE") for set-env
    destructive: bool = False  # removes or replaces something that exists

    def command(self) -> Optional[str]:
        """The shell command a user can paste, where the action is one."""
        if self.kind is ActionKind.PIP_INSTALL:
            return "pip install " + " ".join(shlex.quote(a) for a in self.args)
        if self.kind is ActionKind.PIP_UNINSTALL:
            return "pip uninstall -y " + " ".join(shlex.quote(a) for a in self.args)
        if self.kind is ActionKind.SET_ENV and len(self.args) == 2:
            return f"export {self.args[0]}={shlex.quote(self.args[1])}"
        return None

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready form."""
        return {
            "kind": self.kind.value,
            "description": self.description,
            "args": list(self.args),
            "destructive": self.destructive,
            "command": self.command(),
        }


def pip_install(*specs: str, why: str = "", no_deps: bool = False) -> Action:
    """An Action installing exact specifiers; --no-deps keeps pip from touching torch."""
    args = tuple(specs) + (("--no-deps",) if no_deps else ())
    return Action(ActionKind.PIP_INSTALL, why or f"install {' '.join(specs)}", args, destructive=True)


def pip_uninstall(*names: str, why: str = "") -> Action:
    """An Action removing distributions."""
    return Action(ActionKind.PIP_UNINSTALL, why or f"uninstall {' '.join(names)}", tuple(names), destructive=True)


def set_env(name: str, value: str, why: str = "") -> Action:
    """An Action setting an environment variable (persisting it is the user's choice)."""
    return Action(ActionKind.SET_ENV, why or f"set {name}", (name, value))


def manual(description: str) -> Action:
    """A step the doctor cannot do for the user (upgrade a driver, change GPU)."""
    return Action(ActionKind.MANUAL, description)


class Finding(NamedTuple):
    """One result of one check: what, how bad, the evidence, why, and the fix."""

    id: str  # stable, dotted: "xformers.torch-mismatch"
    severity: Severity
    category: Category
    title: str  # one line
    evidence: Tuple[Tuple[str, str], ...] = ()  # ordered (label, value) pairs
    explanation: str = ""
    fix: Tuple[TypedAction, ...] = ()  # doctor.actions: the preferred step first, then alternatives
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
    fix: Iterable[TypedAction] = (),
    subject: str = "",
) -> Finding:
    """Build a Finding, turning evidence values into strings in the given order."""
    ev = tuple((str(k), "" if v is None else str(v)) for k, v in (evidence or {}).items())
    return Finding(id, severity, category, title, ev, explanation, tuple(fix), subject)


def worst(findings: Iterable[Finding]) -> Severity:
    """The highest severity among findings (OK when there are none)."""
    return max((f.severity for f in findings), default=Severity.OK)
