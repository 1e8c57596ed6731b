"""Offline plans: exact pins from the embedded matrix only, marked "not verified against the index".

Without the index there is no candidate metadata to verify against, so an offline plan is shown with
what the rules say about it (the matrix's facts still apply) but is never applied by `--yes` alone:
`--allow-unverified` says the user accepts that.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from doctor.actions import Action, PipInstall, PipUninstall
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Finding, Severity
from doctor.resolve.keep import keep_set
from doctor.resolve.options import PlanOptions
from doctor.resolve.pip_report import Resolved
from doctor.resolve.plan import FAILED, NOTHING, UNVERIFIED, Change, Plan, Verification, finding_key
from doctor.resolve.verify import compare, package_findings
from doctor.resolve.would_be import Install, would_be

WHY = "offline: exact pins from the embedded matrix, not verified against the index"


@lru_cache(maxsize=1 << 12)  # the same fixes' pins in request after request (the service)
def _exact(text: str) -> Optional[Tuple[str, str]]:
    """(canonical name, version) of a requirement pinned to one version, else None."""
    try:
        r = Requirement(text)
    except InvalidRequirement:
        return None
    specs = list(r.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return canonicalize_name(r.name), specs[0].version
    return None


def offline_plan(facts: Facts, matrix: Matrix, targets: Sequence[Finding], options: PlanOptions,
                 before: Optional[Sequence[Finding]] = None) -> Plan:
    """The first exact-pin (or removal) fix of each target, with the rules' view of the result; UNVERIFIED.

    `before`: package_findings(facts, matrix) when the caller has them already (the service does), so the
    rules run once more, on the would-be environment only; None: computed here."""
    installs: List[Install] = []
    removals: List[str] = []
    actions: List[Action] = []
    changes: List[Change] = []
    chosen: List[Finding] = []
    unfixable: List[Tuple[Finding, str]] = []
    for f in targets:
        step = next((a for a in f.fix if isinstance(a, PipUninstall)
                     or (isinstance(a, PipInstall) and all(_exact(r) for r in a.requirements))), None)
        if step is None:
            unfixable.append((f, "offline: its fix needs the index to choose a version"))
            continue
        chosen.append(f)
        if isinstance(step, PipUninstall):
            removals.extend(step.packages())
            changes.extend(Change(n, facts.version_of(n), None, None, finding_key(f)) for n in step.packages())
        else:
            for r in step.requirements:
                name, version = _exact(r)  # type: ignore[misc]  # checked above
                installs.append(Install(Resolved(name, version, ()), step.index_url))
                changes.append(Change(name, facts.version_of(name), version, step.index_url, finding_key(f),
                                      step.force_reinstall))
        actions.append(step)
    if not chosen:
        return Plan(tuple(targets), verification=Verification(FAILED, against="matrix", reason=WHY + "; nothing to pin"),
                    unfixable=tuple(unfixable), python=options.python)
    before = package_findings(facts, matrix) if before is None else list(before)
    after = package_findings(would_be(facts, matrix, installs, removals), matrix)
    cmp = compare(before, after, chosen, matrix)
    moving = {c.name for c in changes}
    keeps = keep_set(facts, before, moving=moving)
    return Plan(tuple(chosen), tuple(changes), tuple(sorted(actions, key=lambda a: not isinstance(a, PipUninstall))),
                keeps, keeps,
                Verification(UNVERIFIED, against="matrix", fixed=cmp.fixed, remaining=cmp.remaining, new=cmp.new,
                             accepted=cmp.accepted, reason=WHY),
                tuple(unfixable), (WHY,), options.python)


def pip_fixable(f: Finding) -> bool:
    """A warning or worse whose fix includes a pip install or uninstall (what a package plan can target)."""
    return f.severity >= Severity.WARN and any(isinstance(a, (PipInstall, PipUninstall)) for a in f.fix)


def offline_fixes(facts: Facts, matrix: Matrix, findings: Sequence[Finding], options: PlanOptions) -> Plan:
    """planner.plan_fixes in offline mode for `findings` that ARE package_findings(facts, matrix): the same plan,
    with the rules run on the would-be environment only (not again on `facts`)."""
    targets = [f for f in findings if pip_fixable(f)]
    if not targets:
        return Plan((), verification=Verification(NOTHING, reason="no finding a package change fixes"), python=options.python)
    return offline_plan(facts, matrix, targets, options, before=findings)


def offline_install(facts: Facts, matrix: Matrix, requirements: Sequence[Requirement], options: PlanOptions,
                    before: Optional[Sequence[Finding]] = None) -> Plan:
    """`doctor install --offline`: only exact pins can be planned without the index (`before` as in offline_plan)."""
    pins = [_exact(str(r)) for r in requirements]
    if not all(pins):
        loose = [str(r) for r, p in zip(requirements, pins) if not p]
        return Plan((), verification=Verification(FAILED, against="matrix",
                                                  reason="offline: give exact versions (name==X) for " + ", ".join(loose)),
                    python=options.python)
    installs = [Install(Resolved(n, v, ())) for n, v in pins]  # type: ignore[misc]
    before = package_findings(facts, matrix) if before is None else list(before)
    after = package_findings(would_be(facts, matrix, installs), matrix)
    cmp = compare(before, after, (), matrix)
    keeps = keep_set(facts, before, moving={n for n, _ in pins})  # type: ignore[misc]
    changes = tuple(Change(n, facts.version_of(n), v, None, "requested") for n, v in pins)  # type: ignore[misc]
    action = PipInstall(tuple(f"{n}=={v}" for n, v in pins), only_binary=True)  # type: ignore[misc]
    return Plan((), changes, (action,), keeps, keeps,
                Verification(UNVERIFIED, against="matrix", new=cmp.new, accepted=cmp.accepted, reason=WHY),
                (), (WHY,), options.python)
