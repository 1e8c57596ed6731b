"""A Plan: the typed changes that fix a set of findings, with what stays and how it was verified.

No plan beats a bad plan: a Plan is offered to be applied only when its verification says the rules,
re-run on the environment it would produce, no longer find what it targets and find nothing new at
warn or worse (or only a declared requirement the matrix records as optional at run time).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

from doctor.actions import Action
from doctor.findings import Finding

# Verification outcomes.
VERIFIED = "verified"  # rules re-run on the would-be environment from pip's resolver: targets gone, nothing new
FAILED = "failed"  # no candidate verified: the plan carries no actions, only why
UNVERIFIED = "unverified"  # offline: exact pins from the embedded matrix, not checked against the index
NOTHING = "nothing-to-do"  # no finding a package change can fix

# Packages whose change means a running Python (a Colab/Kaggle kernel) must restart to see it.
RUNTIME_LEVEL = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton", "xformers", "flash-attn",
                 "bitsandbytes", "numpy")


def finding_key(f: Finding) -> str:
    """How a finding is recognised across environments: its id, plus its subject when the id repeats."""
    return f"{f.id}[{f.subject}]" if f.subject else f.id


class Change(NamedTuple):
    """One package's move: before -> after (None: not installed)."""

    name: str  # canonical name
    before: Optional[str]  # installed version string (with its local label, "2.4.0+cu121"); None: new
    after: Optional[str]  # version the plan installs; None: removed
    index_url: Optional[str] = None  # where the new build comes from; None: the default index
    reason: str = ""  # the finding it fixes, or "required by X"
    rebuild: bool = False  # same version, another build (from another index): a forced reinstall

    @property
    def kind(self) -> str:
        """install / remove / rebuild / upgrade / downgrade / change (unreadable versions)."""
        if self.before is None:
            return "install"
        if self.after is None:
            return "remove"
        if self.rebuild or self.before == self.after:
            return "rebuild"
        from doctor.compat_matrix.versions import parse_version  # lazy: packaging.version only when comparing

        b, a = parse_version(self.before), parse_version(self.after)
        if b is None or a is None:
            return "change"
        return "upgrade" if a > b else "downgrade"


class Candidate(NamedTuple):
    """One candidate the planner tried, and what became of it (for `--json` and `-v`)."""

    description: str  # "xformers==0.0.27.post2", "remove xformers", "torch 2.4.1 + xformers 0.0.28.post1"
    outcome: str  # "verified", or why it was rejected
    changes: Tuple[Change, ...] = ()


class Verification(NamedTuple):
    """How the plan was checked, and what the rules said about the environment it would produce."""

    status: str  # VERIFIED / FAILED / UNVERIFIED / NOTHING
    against: str = "index"  # "index" (pip's resolver) or "matrix" (offline)
    fixed: Tuple[Finding, ...] = ()  # targeted findings that are gone in the would-be environment
    remaining: Tuple[Finding, ...] = ()  # targeted findings still there (a plan with any is not verified)
    new: Tuple[Finding, ...] = ()  # warn/error findings the would-be environment has and this one does not
    accepted: Tuple[Tuple[Finding, str], ...] = ()  # new findings accepted, with why (optional at run time)
    tried: Tuple[Candidate, ...] = ()  # every candidate, in the order tried
    resolver_runs: int = 0  # pip resolver invocations (cached reports not counted)
    resolver_seconds: float = 0.0  # wall time inside pip's resolver
    doctor_seconds: float = 0.0  # the planner's own time (would-be Facts, rules), without pip
    reason: str = ""  # when not verified: why, in one sentence

    @property
    def ok(self) -> bool:
        """Whether the plan may be applied without --allow-unverified."""
        return self.status == VERIFIED


class Plan(NamedTuple):
    """The typed actions for a set of findings, what changes and stays, and the verification."""

    targets: Tuple[Finding, ...]  # the findings it is meant to fix
    changes: Tuple[Change, ...] = ()
    actions: Tuple[Action, ...] = ()  # an uninstall first, then one install per index; exact pins only
    keeps: Tuple[str, ...] = ()  # constraints kept in force (`torch===2.4.0+cu121`)
    constraints: Tuple[str, ...] = ()  # the constraints file's lines the installs run with (-c)
    verification: Verification = Verification(NOTHING)
    unfixable: Tuple[Tuple[Finding, str], ...] = ()  # findings no package change fixes here, with why
    notes: Tuple[str, ...] = ()  # e.g. why `pip check` will list an accepted requirement
    python: Optional[str] = None  # the interpreter the plan is for (--python); None: this one

    @property
    def restart(self) -> bool:
        """Whether a running kernel must restart to see the change (torch-level packages move)."""
        return any(c.name in RUNTIME_LEVEL for c in self.changes)

    @property
    def applicable(self) -> bool:
        """Whether there is something to apply (verified or not)."""
        return bool(self.actions)

    def expected_gone(self) -> Tuple[str, ...]:
        """Keys of the findings the verification says the applied plan removes (the re-check must agree)."""
        return tuple(finding_key(f) for f in self.verification.fixed)

    def to_dict(self) -> Dict[str, object]:
        """Plain data for the JSON report (doctor.report.json wraps it in the one envelope)."""
        v = self.verification
        return {
            "status": v.status,
            "verified_against": v.against,
            "reason": v.reason,
            "targets": [finding_key(f) for f in self.targets],
            "changes": [{"name": c.name, "before": c.before, "after": c.after, "kind": c.kind,
                         "index_url": c.index_url, "reason": c.reason} for c in self.changes],
            "keeps": list(self.keeps),
            "constraints": list(self.constraints),
            "actions": [a.to_dict() for a in self.actions],
            "verification": {
                "fixed": [finding_key(f) for f in v.fixed],
                "remaining": [finding_key(f) for f in v.remaining],
                "new": [finding_key(f) for f in v.new],
                "accepted": [{"finding": finding_key(f), "why": why} for f, why in v.accepted],
                "tried": [{"candidate": c.description, "outcome": c.outcome} for c in v.tried],
                "resolver_runs": v.resolver_runs,
                "resolver_seconds": round(v.resolver_seconds, 3),
                "doctor_seconds": round(v.doctor_seconds, 3),
            },
            "unfixable": [{"finding": finding_key(f), "why": why} for f, why in self.unfixable],
            "notes": list(self.notes),
            "restart": self.restart,
        }
