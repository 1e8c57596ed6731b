"""`doctor check --fix`: the plan (preferred fix, dedupe, conflicts) and a real apply + re-check in a venv."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from doctor.actions import Manual, MoveToQuarantine, PipInstall, PipUninstall, SetEnv
from doctor.findings import Category, Severity, finding
from doctor.fix import apply_step, pip_command, plan
from tests.conftest import run_doctor


def F(id: str, sev: Severity, *fix):  # type: ignore[no-untyped-def]
    """A finding with a fix list."""
    return finding(id, sev, Category.PACKAGES, id, fix=fix)


def test_plan_takes_first_automatic_action_and_lists_the_rest() -> None:
    """Preferred fix runs; alternatives and manual steps are shown, not run."""
    steps = plan([F("xformers.torch-mismatch", Severity.ERROR,
                    PipInstall(("xformers==0.0.27.post2",), no_deps=True), PipUninstall(("xformers",))),
                  F("gpu.no-bf16", Severity.WARN, Manual("use fp16"))])
    runs = [s.action.command() for s in steps if s.automatic]
    assert runs == ["pip install xformers==0.0.27.post2 --no-deps"]
    notes = {s.action.command() or s.action.description: s.note for s in steps if not s.automatic}
    assert notes["pip uninstall -y xformers"] == "alternative" and "use fp16" in notes


def test_plan_dedupes_and_resolves_conflicts_worst_first() -> None:
    """The same install for two findings runs once; a different version of the same package is a conflict."""
    steps = plan([F("requires.unmet", Severity.WARN, PipInstall(("xformers==0.0.28",), no_deps=True)),
                  F("xformers.dtype-layout", Severity.ERROR, PipInstall(("xformers==0.0.27.post2",), no_deps=True)),
                  F("xformers.torch-mismatch", Severity.ERROR, PipInstall(("xformers==0.0.27.post2",), no_deps=True)),
                  F("cache.x", Severity.WARN, SetEnv("UNSLOTH_COMPILE_LOCATION", "/abs"))])
    runs = [s.action.command() for s in steps if s.automatic]
    assert runs == ["pip install xformers==0.0.27.post2 --no-deps"]
    conflict = [s for s in steps if "conflicts" in s.note]
    assert len(conflict) == 1 and conflict[0].finding_id == "requires.unmet"
    assert any(s.action.command() == "export UNSLOTH_COMPILE_LOCATION=/abs" and not s.automatic for s in steps)


def test_ok_and_info_findings_plan_nothing() -> None:
    """Only warnings and errors are fixed."""
    assert plan([F("a", Severity.OK, PipInstall(("x",))), F("b", Severity.INFO, PipInstall(("y",)))]) == []


def test_same_step_in_other_words_runs_once() -> None:
    """Two findings offering the same install with other descriptions plan it once (equality of what it does)."""
    steps = plan([F("xformers.dtype-layout", Severity.ERROR,
                    PipInstall(("xformers==0.0.27.post2",), description="known-good: xformers==0.0.27.post2", no_deps=True)),
                  F("xformers.torch-mismatch", Severity.ERROR,
                    PipInstall(("xformers==0.0.27.post2",), description="built for torch 2.4.0", no_deps=True))])
    assert [(s.finding_id, s.automatic, s.note) for s in steps] == [("xformers.dtype-layout", True, "")]


def test_conflicts_come_from_the_packages_an_action_names() -> None:
    """A conflict is read from the typed requirements (canonical names), never from a parsed command line."""
    steps = plan([F("a", Severity.ERROR, PipInstall(("Unsloth_Zoo==2025.3.11",), index_url="https://example.invalid/x", no_deps=True)),
                  F("b", Severity.WARN, PipUninstall(("unsloth-zoo",)))])
    assert [s.automatic for s in steps] == [True, False]
    assert steps[1].note.startswith("conflicts with `pip install Unsloth_Zoo==2025.3.11 --index-url https://example.invalid/x --no-deps`")


def test_automatic_comes_from_the_action_type() -> None:
    """pip steps and cache steps run; a cache location SetEnv runs; a plain export and a manual step are shown."""
    steps = plan([F("a", Severity.ERROR, MoveToQuarantine("/c", ("/c/x.py",))),
                  F("b", Severity.WARN, SetEnv("TRITON_CACHE_DIR", "/home/u/.cache/triton", directory=True)),
                  F("c", Severity.WARN, SetEnv("NO_COLOR", "1")),
                  F("d", Severity.WARN, Manual("upgrade the driver"))])
    assert [(s.finding_id, s.automatic) for s in steps] == [("a", True), ("b", True), ("c", False), ("d", False)]


def test_pip_argv_comes_from_the_action() -> None:
    """The pip command line is the action's own argv, for this interpreter; a dry run runs nothing."""
    a = PipInstall(("torch==2.8.0+cu128",), index_url="https://download.pytorch.org/whl/cu128", force_reinstall=True, no_deps=True)
    cmd = pip_command(a)
    assert cmd[-6:] == ["install", "torch==2.8.0+cu128", "--index-url", "https://download.pytorch.org/whl/cu128",
                        "--force-reinstall", "--no-deps"]
    assert pip_command(PipUninstall(("xformers",)))[-3:] == ["uninstall", "-y", "xformers"]
    echoed: list = []
    assert apply_step(plan([F("a", Severity.ERROR, a)])[0], dry_run=True, echo=echoed.append)
    assert echoed == ["$ " + " ".join(cmd)]


def test_fix_without_terminal_or_yes_applies_nothing(tmp_path: Path) -> None:
    """CI has no stdin: the plan is shown and nothing runs."""
    proc = run_doctor("check", "--fix", "--no-probes", env={"DOCTOR_GPUS": "none"})
    assert "fix plan:" in proc.stdout
    assert proc.returncode in (0, 1, 2)
