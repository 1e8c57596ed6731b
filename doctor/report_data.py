"""What one check produced, as the immutable record every renderer reads. Pure data: no I/O, no rendering.

The public `doctor.Report` (doctor.checkup) is this record with its faces (text, HTML in Jupyter, JSON).
The faces call the renderers in doctor.report, and the renderers read this record: keeping the record
here, below both, is what lets the two meet without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, NamedTuple, Tuple

from doctor.exits import ExitCode
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, worst
from doctor.verdicts import ProbeResult

if TYPE_CHECKING:  # a type only: the record never needs the dispatcher at run time
    from doctor.dispatch import Choice


class ReportData(NamedTuple):
    """Everything one check produced: the facts it saw, the matrix version and the findings."""

    facts: Facts  # the environment that was checked
    matrix_version: str  # data_version of the compatibility matrix the rules read
    findings: Tuple[Finding, ...]  # in the order the checks produced them (renderers group and sort)
    rules_run: Tuple[str, ...]  # names of the checks that ran ("driver", "script:train.py", "probes", ...)
    probes: Tuple[ProbeResult, ...] = ()  # probe verdicts when probes ran (or were reused)
    dispatch: Tuple["Choice", ...] = ()  # the per-op backend choices derived from them
    probe_note: str = ""  # why probes did not run, or how they ran (cached / fresh)
    sections: Tuple[Category, ...] = ()  # the report sections this check covered; empty: all of them

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings, 2 errors (doctor.exits)."""
        return exit_code_for(self.findings)


def exit_code_for(findings: Iterable[Finding]) -> int:
    """Map the worst severity to the documented exit code."""
    w = worst(findings)
    if w >= Severity.ERROR:
        return int(ExitCode.ERRORS)
    if w >= Severity.WARN:
        return int(ExitCode.WARNINGS)
    return int(ExitCode.HEALTHY)
