"""The planner: findings -> candidates from pip's resolver -> would-be Facts -> rules again -> a verified Plan.

(Being written; the signatures are the contract doctor.fix and the commands build on.)
"""

from __future__ import annotations

from typing import Sequence

from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Finding
from doctor.resolve.options import PlanOptions
from doctor.resolve.plan import Plan


def plan_fixes(facts: Facts, matrix: Matrix, findings: Sequence[Finding], options: PlanOptions = PlanOptions()) -> Plan:
    """The smallest verified package change that fixes the package findings at warn or worse (or why none)."""
    raise NotImplementedError


def plan_install(facts: Facts, matrix: Matrix, requirements: Sequence[str], options: PlanOptions = PlanOptions()) -> Plan:
    """`doctor install PKG...`: the requested packages, resolved keeping torch, verified like any fix."""
    raise NotImplementedError
