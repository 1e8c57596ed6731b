"""The five failure classes of the old per-finding prescriptions, each against recorded real metadata.

Each test builds the broken world (real dist-infos from wheels rebuilt from the real index's metadata),
plans with pip's real resolver against the local index, checks the plan, applies its actions with pip
exactly as rendered, and re-checks: the findings the plan targeted are gone and nothing new appears
(no loop, no new finding).
"""

from __future__ import annotations

import os
from typing import List, Tuple

import pytest

from doctor.actions import PipInstall, PipUninstall
from doctor.compat_matrix.loader import load_matrix
from doctor.findings import Finding, Severity
from doctor.inventory import gather
from doctor.resolve.options import IndexConfig, PlanOptions
from doctor.resolve.plan import VERIFIED, Plan, finding_key
from doctor.resolve.planner import plan_fixes
from doctor.rules import run_rules
from tests.resolve.index.venvs import pip, pip_env

pytestmark = pytest.mark.slow


def _options(world, local_index) -> PlanOptions:  # type: ignore[no-untyped-def]
    return PlanOptions(python=str(world.python),
                       indexes=IndexConfig(index_url=local_index.url("pypi"),
                                           torch_index_url=f"http://127.0.0.1:{local_index.port}",
                                           pip_env=tuple(sorted(pip_env().items()))))


def _check(world) -> Tuple[object, List[Finding]]:  # type: ignore[no-untyped-def]
    facts = gather(python=str(world.python))
    findings, _ = run_rules(facts, load_matrix(), skip=("environment", "caches", "cache_location"))
    return facts, findings


def _serious(findings: List[Finding]) -> List[str]:
    return sorted(finding_key(f) for f in findings if f.severity >= Severity.WARN)


def _plan(world, local_index) -> Tuple[Plan, List[Finding]]:  # type: ignore[no-untyped-def]
    facts, findings = _check(world)
    return plan_fixes(facts, load_matrix(), findings, _options(world, local_index)), findings  # type: ignore[arg-type]


def _apply(plan: Plan, world) -> None:  # type: ignore[no-untyped-def]
    """Run the plan's actions with pip as rendered (constraints included), aimed at the world's interpreter."""
    cfile = world.root / "constraints.txt"
    cfile.write_text("".join(line + "\n" for line in plan.constraints))
    for a in plan.actions:
        if isinstance(a, PipUninstall):
            pip("uninstall", *a.argv(), python=world.python)
        else:
            assert isinstance(a, PipInstall)
            pip("install", *a.argv(), "-c", str(cfile), python=world.python)


def _apply_and_recheck(plan: Plan, world, before: List[Finding]) -> List[str]:  # type: ignore[no-untyped-def]
    _apply(plan, world)
    _, after = _check(world)
    left = _serious(after)
    for key in plan.expected_gone():
        assert key not in left, f"{key} still there after applying a plan verified to remove it"
    new = set(left) - set(_serious(before)) - {finding_key(f) for f, _ in plan.verification.accepted}
    assert not new, f"the applied plan added {new}"
    return left


def test_class1_xformers_for_this_torch_keeps_torch(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """S1: torch 2.4.0 with xformers 0.0.26.post1 (pins torch==2.3.0) and triton 2.3.0: the plan installs the
    xformers built for 2.4.0 and torch's own triton, and never touches torch."""
    w = world("S1")
    plan, before = _plan(w, local_index)
    assert plan.verification.status == VERIFIED, plan.verification
    moved = {c.name: c.after for c in plan.changes}
    assert "torch" not in moved
    assert moved["xformers"] in ("0.0.27.post2", "0.0.27.post1") and moved["triton"] == "3.0.0"
    assert "torch===2.4.0" in plan.constraints
    assert all("==" in r for a in plan.actions if isinstance(a, PipInstall) for r in a.requirements)
    left = _apply_and_recheck(plan, w, before)
    assert not [k for k in left if k.startswith(("xformers.", "triton."))]
    assert w.versions()["torch"] == "2.4.0"


def test_class2_no_loop_on_torch_231(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """S2: torch 2.3.1 + xformers 0.0.27 (aten.to.dtype_layout): the fixed release needs torch 2.4 and the older
    one pins 2.3.0, so no xformers verifies with torch kept; the plan that verifies drops xformers (torch SDPA
    covers attention), and applying it leaves a clean re-check instead of another fix."""
    w = world("S2")
    plan, before = _plan(w, local_index)
    assert plan.verification.status == VERIFIED, plan.verification
    assert [(c.name, c.after) for c in plan.changes] == [("xformers", None)]
    outcomes = {c.description: c.outcome for c in plan.verification.tried}
    assert outcomes.get("install xformers==0.0.27.post2", "").startswith("pip:")  # needs torch 2.4.0: refused
    left = _apply_and_recheck(plan, w, before)
    assert not [k for k in left if k.startswith("xformers.")]


def test_class3_minimal_release_line(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """S3: trl 0.13.0 needs transformers>=4.46.0 and 4.45.2 is installed: 4.46.3, transformers alone; the
    unbounded specifier would have installed 5.0.0 and huggingface-hub 1.x."""
    w = world("S3")
    plan, before = _plan(w, local_index)
    assert plan.verification.status == VERIFIED, plan.verification
    assert [(c.name, c.before, c.after) for c in plan.changes] == [("transformers", "4.45.2", "4.46.3")]
    _apply_and_recheck(plan, w, before)
    assert w.versions()["transformers"] == "4.46.3"


def test_class4_stale_step_is_not_planned(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """S4: unsloth needs unsloth_zoo>=2025.7.5; the installed zoo 2025.7.4 also wants protobuf<4 (5.29.5 is
    there). Upgrading the zoo drops that requirement, so the protobuf downgrade is never planned."""
    w = world("S4")
    plan, before = _plan(w, local_index)
    assert plan.verification.status == VERIFIED, plan.verification
    assert [(c.name, c.after) for c in plan.changes] == [("unsloth-zoo", "2025.7.5")]
    keys = {finding_key(f) for f in plan.verification.fixed}
    assert any("protobuf" in k for k in keys) and any(k.startswith("unsloth.zoo-skew") for k in keys)
    _apply_and_recheck(plan, w, before)
    assert w.versions()["protobuf"] == "5.29.5"


def test_class5_rebuild_from_torch_cuda_family_index(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """S5: PyPI's torch 2.5.1 is the cu124 build, PyPI's xformers 0.0.28.post3 the cu121 one: the fix is the same
    xformers version from the cu124 PyTorch index (forced: pip calls the installed one satisfied), not a
    reinstall of the identical PyPI wheel."""
    w = world("S5")
    plan, before = _plan(w, local_index)
    assert plan.verification.status == VERIFIED, plan.verification
    (change,) = plan.changes
    assert (change.name, change.after, change.kind) == ("xformers", "0.0.28.post3", "rebuild")
    assert change.index_url and change.index_url.rstrip("/").endswith("/cu124")
    (action,) = plan.actions
    assert isinstance(action, PipInstall) and action.force_reinstall and action.index_url == change.index_url
    _apply_and_recheck(plan, w, before)
    import json

    cpp = json.loads((w.site_packages() / "xformers" / "cpp_lib.json").read_text())
    assert "cu124" in json.dumps(cpp) or cpp.get("cuda_version") == 1204


def test_torch_index_only_for_torch_family(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """A PyTorch CUDA-family index is only ever --index-url of a torch-family install, never mixed with PyPI."""
    w = world("S5")
    plan, _ = _plan(w, local_index)
    for a in plan.actions:
        if isinstance(a, PipInstall) and a.index_url and "/cu" in a.index_url:
            assert set(a.packages()) <= {"torch", "torchvision", "torchaudio", "triton", "xformers"}
        assert "--extra-index-url" not in (a.command() or "")


def test_offline_plan_is_unverified(world, local_index) -> None:  # type: ignore[no-untyped-def]
    """--offline: exact pins from the matrix only, marked not verified against the index."""
    w = world("S1")
    facts, findings = _check(w)
    plan = plan_fixes(facts, load_matrix(), findings, _options(w, local_index)._replace(offline=True))  # type: ignore[arg-type]
    assert plan.verification.status == "unverified" and plan.verification.against == "matrix"
    assert any("not verified against the index" in n for n in plan.notes)


@pytest.mark.skipif(os.environ.get("DOCTOR_BENCH") is None, reason="timing is a benchmark, not a test")
def test_print_timings(world, local_index) -> None:  # type: ignore[no-untyped-def]
    for name in ("S1", "S2", "S3", "S4", "S5"):
        plan, _ = _plan(world(name), local_index)
        v = plan.verification
        print(name, v.status, v.resolver_runs, round(v.resolver_seconds, 2), round(v.doctor_seconds, 2))
