"""Verification: the rules re-run on a would-be environment, compared with the one that is there.

A plan verifies when every finding it targets is gone and no new warning or error appears, except a
declared requirement the matrix records as optional at run time (Unsloth declares xformers and trains
on SDPA without it): that one is accepted, with the reason, because `pip check` will still list it.
"""

from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Finding, Severity
from doctor.resolve.plan import finding_key

# Rules about the machine, the shell or the caches: a package change does not move them.
NOT_PACKAGE_RULES = ("environment", "cache_location", "caches")


def package_findings(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Every finding of the package-level rules on `facts` (crash-isolated like the check's runner)."""
    from doctor.rules import run_rules

    findings, _ = run_rules(facts, matrix, skip=NOT_PACKAGE_RULES)
    return findings


def serious(findings: Iterable[Finding]) -> List[Finding]:
    """Warnings and errors only."""
    return [f for f in findings if f.severity >= Severity.WARN]


def score(findings: Iterable[Finding]) -> Tuple[int, int]:
    """(errors, warnings): a candidate may not make this worse."""
    s = serious(findings)
    return (sum(f.severity >= Severity.ERROR for f in s), sum(f.severity == Severity.WARN for f in s))


class Comparison(NamedTuple):
    """Targets fixed or remaining, new findings, and the new ones accepted with why."""

    fixed: Tuple[Finding, ...]
    remaining: Tuple[Finding, ...]
    new: Tuple[Finding, ...]
    accepted: Tuple[Tuple[Finding, str], ...]

    @property
    def ok(self) -> bool:
        """Something fixed, nothing targeted left, nothing new that is not accepted."""
        return bool(self.fixed) and not self.remaining and not self.new


def _missing_names(f: Finding) -> List[Tuple[str, str]]:
    """(requirer, dependency) pairs a requires.missing / requires.unmet finding is about."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    ev = dict(f.evidence)
    if "->" in f.subject:
        requirer, dep = f.subject.split("->", 1)
        return [(requirer, dep)]
    out: List[Tuple[str, str]] = []
    for part in ev.get("missing", "").split(", "):
        try:
            out.append((f.subject, canonicalize_name(Requirement(part).name)))
        except InvalidRequirement:
            return []
    return out


def optional_reason(f: Finding, matrix: Matrix, facts: Optional[Facts] = None) -> Optional[str]:
    """Why a new finding is acceptable: every requirement it names is optional at run time (matrix), else None."""
    if f.id not in ("requires.missing",):
        return None
    from doctor.compat_matrix import lookup

    pairs = _missing_names(f)
    if not pairs:
        return None
    reasons = []
    for requirer, dep in pairs:
        row = lookup.optional_at_runtime(matrix, requirer, dep, facts.version_of(requirer) if facts else None)
        if row is None:
            return None
        reasons.append(f"{requirer} declares {dep} but does not need it to run: {row.why} ({row.source})")
    return "; ".join(reasons)


def compare(before: Sequence[Finding], after: Sequence[Finding], targets: Sequence[Finding], matrix: Matrix,
            ignore: Iterable[str] = (), facts: Optional[Facts] = None) -> Comparison:
    """What the would-be environment (`after`) says about the targets and what is new against `before`."""
    after_keys: Set[str] = {finding_key(f) for f in serious(after)}
    before_keys: Set[str] = {finding_key(f) for f in serious(before)} | set(ignore)
    fixed = tuple(t for t in targets if finding_key(t) not in after_keys)
    remaining = tuple(t for t in targets if finding_key(t) in after_keys)
    new: List[Finding] = []
    accepted: List[Tuple[Finding, str]] = []
    for f in serious(after):
        if finding_key(f) in before_keys:
            continue
        why = optional_reason(f, matrix, facts)
        if why:
            accepted.append((f, why))
        else:
            new.append(f)
    return Comparison(fixed, remaining, tuple(new), tuple(accepted))
