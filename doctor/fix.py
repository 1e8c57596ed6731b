"""`doctor check --fix`: turn findings into an explicit plan, show it, apply it, re-check.

Each finding's first automatable action is its preferred fix; later actions are alternatives or
steps only a person can take, shown but not run. Installs of one package that disagree are a
conflict: the one from the worse finding wins and the other is shown as skipped. Nothing runs
without being printed first; destructive steps need confirmation (a terminal prompt or --yes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from doctor.errors import DoctorError
from doctor.findings import Action, ActionKind, Finding, Severity

AUTOMATIC = {ActionKind.PIP_INSTALL, ActionKind.PIP_UNINSTALL, ActionKind.CACHE_REPAIR}
PIP_TIMEOUT = 1800.0  # a CUDA torch download is GBs


class Step(NamedTuple):
    """One planned action and the finding it fixes."""

    action: Action
    finding_id: str
    automatic: bool
    note: str = ""  # why it is skipped, or that it is an alternative


def _package(spec: str) -> Optional[str]:
    """Canonical package name of a pip argument ('xformers==0.0.27.post2' -> 'xformers'); None for flags/URLs."""
    if spec.startswith("-") or "://" in spec:
        return None
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        return canonicalize_name(Requirement(spec).name)
    except InvalidRequirement:
        return None


def _packages(action: Action) -> Tuple[str, ...]:
    """Packages a pip action touches."""
    if action.kind not in (ActionKind.PIP_INSTALL, ActionKind.PIP_UNINSTALL):
        return ()
    skip_next = False
    names = []
    for a in action.args:
        if skip_next:
            skip_next = False
            continue
        if a in ("--index-url", "--extra-index-url", "-i", "--find-links", "-f"):
            skip_next = True
            continue
        n = _package(a)
        if n:
            names.append(n)
    return tuple(names)


def plan(findings: Iterable[Finding]) -> List[Step]:
    """The ordered plan for every finding at warn or worse (worst first)."""
    steps: List[Step] = []
    seen_cmd: Dict[str, str] = {}
    claimed: Dict[str, Tuple[str, str]] = {}  # package -> (command, finding id) that decides it
    for f in sorted((f for f in findings if f.severity >= Severity.WARN), key=lambda f: -f.severity):
        chosen = False
        for a in f.fix:
            auto = a.kind in AUTOMATIC
            key = a.command() or " ".join((a.kind.value,) + a.args) or a.description
            if auto and chosen:
                steps.append(Step(a, f.id, False, "alternative"))
                continue
            if key in seen_cmd:
                chosen = chosen or auto
                continue  # the same step already planned for another finding
            clash = next(((p, claimed[p]) for p in _packages(a) if p in claimed), None)
            if auto and clash:
                steps.append(Step(a, f.id, False, f"conflicts with `{clash[1][0]}` (for {clash[1][1]}); not run"))
                continue
            steps.append(Step(a, f.id, auto))
            seen_cmd[key] = f.id
            if auto:
                chosen = True
                for p in _packages(a):
                    claimed[p] = (key, f.id)
    return steps


def pip_command(args: Sequence[str], uninstall: bool) -> List[str]:
    """pip for THIS interpreter (the environment being checked); uv's pip where the env has no pip."""
    import importlib.util

    verb = ["uninstall", "-y"] if uninstall else ["install"]
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", *verb, *args]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", *(["uninstall"] if uninstall else ["install"]), "--python", sys.executable, *args]
    raise DoctorError("neither pip nor uv is available for this interpreter: install one, or run the commands by hand")


def apply_step(step: Step, dry_run: bool = False, echo: Callable[[str], None] = print) -> bool:
    """Run one automatic step; True when it succeeded (or would, in a dry run)."""
    a = step.action
    if a.kind in (ActionKind.PIP_INSTALL, ActionKind.PIP_UNINSTALL):
        cmd = pip_command(a.args, a.kind is ActionKind.PIP_UNINSTALL)
        echo("$ " + " ".join(cmd))
        if dry_run:
            return True
        try:
            # pip's output goes to stderr: stdout may be carrying the JSON report
            proc = subprocess.run(cmd, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
        except subprocess.TimeoutExpired:
            echo(f"  timed out after {PIP_TIMEOUT:g} s")
            return False
        return proc.returncode == 0
    if a.kind is ActionKind.CACHE_REPAIR:
        from doctor.cache import apply_cache_action

        echo(apply_cache_action(a, dry_run=dry_run))
        return True
    return False


def confirm(prompt: str) -> bool:
    """Ask on the terminal; False when there is none (CI, pipes)."""
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def render_plan(steps: Sequence[Step], echo: Callable[[str], None] = print) -> None:
    """Print the plan: what will run, and what is left to the user."""
    runs = [s for s in steps if s.automatic]
    echo(f"fix plan: {len(runs)} step(s) to run" + (", destructive steps marked !" if any(s.action.destructive for s in runs) else ""))
    for i, s in enumerate(runs, 1):
        echo(f"  {i}. {'! ' if s.action.destructive else ''}{s.action.command() or s.action.description}    # {s.finding_id}: {s.action.description}")
    rest = [s for s in steps if not s.automatic]
    if rest:
        echo("not run (yours to do, or alternatives):")
        for s in rest:
            text = s.action.command() or s.action.description
            echo(f"  - {text}    # {s.finding_id}" + (f" ({s.note})" if s.note else ""))
    if os.environ.get("CONDA_PREFIX") and any(s.action.kind is ActionKind.PIP_INSTALL for s in runs):
        echo("note: this is a conda environment; pip installs go into it beside conda's packages")
