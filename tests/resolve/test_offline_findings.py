"""Offline plans given the findings already computed (the service's path): the same plan, the rules run once less.

The worlds are the recorded scenarios as Facts (tests.service.worlds: every Requires-Dist line of every
distribution), in-process: no venv is needed to plan offline from the matrix.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, List

import pytest
from packaging.requirements import Requirement

import doctor.rules
from doctor.compat_matrix.loader import load_matrix
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.resolve.offline import offline_fixes, offline_install, offline_plan, pip_fixable
from doctor.resolve.options import PlanOptions
from doctor.resolve.planner import plan_fixes
from doctor.resolve.verify import package_findings
from doctor.service.schema import parse_request
from tests.service.worlds import recorded_doc

SCENARIOS = ["B1", "S1", "S2", "S2u", "S3", "S4", "S5"]
OFFLINE = PlanOptions(offline=True)


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix()


def facts_of(scenario: str) -> Facts:
    """The recorded world as Facts with every Requires-Dist line (not only those the service keeps)."""
    doc = recorded_doc(scenario)
    facts = parse_request(doc).facts
    raw = {d["name"]: tuple(d["requires"]) for d in doc["facts"]["distributions"]}
    return facts._replace(distributions=MappingProxyType(
        {n: d._replace(requires=raw[n]) for n, d in facts.distributions.items()}))


@pytest.fixture
def rule_runs(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """How many times the rules ran (a counting wrapper around the real doctor.rules.run_rules)."""
    calls: List[int] = []
    real: Callable[..., Any] = doctor.rules.run_rules

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(doctor.rules, "run_rules", counted)
    return calls


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_offline_fixes_is_plan_fixes_offline(matrix: Matrix, scenario: str) -> None:
    facts = facts_of(scenario)
    findings = package_findings(facts, matrix)
    assert offline_fixes(facts, matrix, findings, OFFLINE).to_dict() == plan_fixes(facts, matrix, findings, OFFLINE).to_dict()


def test_the_rules_run_once_less(matrix: Matrix, rule_runs: List[int]) -> None:
    facts = facts_of("S4")
    findings = package_findings(facts, matrix)
    targets = [f for f in findings if pip_fixable(f)]
    assert targets and len(rule_runs) == 1
    given = offline_plan(facts, matrix, targets, OFFLINE, before=findings)
    assert len(rule_runs) == 2  # the would-be environment only
    computed = offline_plan(facts, matrix, targets, OFFLINE)
    assert len(rule_runs) == 4  # facts again, then the would-be environment
    assert given.to_dict() == computed.to_dict()
    assert [c.name for c in given.changes] == ["unsloth-zoo"]


def test_nothing_to_fix_runs_no_rules(matrix: Matrix, rule_runs: List[int]) -> None:
    facts = facts_of("S4")
    healthy = [f for f in package_findings(facts, matrix) if not pip_fixable(f)]
    rule_runs.clear()
    plan = offline_fixes(facts, matrix, healthy, OFFLINE)
    assert plan.verification.status == "nothing-to-do" and not plan.actions and rule_runs == []


def test_offline_install_with_findings_given(matrix: Matrix, rule_runs: List[int]) -> None:
    facts = facts_of("S1")
    findings = package_findings(facts, matrix)
    wanted = [Requirement("xformers==0.0.27.post2")]
    rule_runs.clear()
    given = offline_install(facts, matrix, wanted, OFFLINE, before=findings)
    assert len(rule_runs) == 1
    assert given.to_dict() == offline_install(facts, matrix, wanted, OFFLINE).to_dict()
    assert [(c.name, c.after) for c in given.changes] == [("xformers", "0.0.27.post2")]


def test_loose_install_is_refused_before_any_rule(matrix: Matrix, rule_runs: List[int]) -> None:
    facts = facts_of("S1")
    plan = offline_install(facts, matrix, [Requirement("xformers>=0.0.27")], OFFLINE, before=[])
    assert plan.verification.status == "failed" and "xformers>=0.0.27" in plan.verification.reason
    assert rule_runs == []
