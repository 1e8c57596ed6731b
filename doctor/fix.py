"""`doctor check --fix`: turn findings into an explicit plan, show it, apply it, re-check.

Each finding's first automatable action is its preferred fix; later actions are alternatives or
steps only a person can take, shown but not run. Installs of one package that disagree are a
conflict: the one from the worse finding wins and the other is shown as skipped. Nothing runs
without being printed first; destructive steps need confirmation (a terminal prompt or --yes).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from doctor.actions import Action, MoveToQuarantine, PipInstall, PipUninstall, RemoveStaleLock, SetEnv, TightenMode
from doctor.errors import DoctorError
from doctor.findings import Finding, Severity

PIP_TIMEOUT = 1800.0  # a CUDA torch download is GBs
# Cache steps, applied by doctor.cache (it checks every path against the cache roots first).
CACHE_ACTIONS = (MoveToQuarantine, RemoveStaleLock, TightenMode)
_PROSE = ("description", "no_deps_why", "force_reinstall_why")  # fields that explain an action, not what it does


class Step(NamedTuple):
    """One planned action and the finding it fixes."""

    action: Action
    finding_id: str
    automatic: bool  # run by --fix (else shown for a person to do)
    note: str = ""  # why it is skipped, or that it is an alternative


def plan(findings: Iterable[Finding]) -> List[Step]:
    """The ordered plan for every finding at warn or worse (worst first)."""
    steps: List[Step] = []
    seen: Dict[Action, str] = {}  # effect of an action -> the finding it was planned for
    claimed: Dict[str, Tuple[Action, str]] = {}  # package -> (action, finding id) that decides it
    for f in sorted((f for f in findings if f.severity >= Severity.WARN), key=lambda f: -f.severity):
        chosen = False
        for a in f.fix:
            auto = a.automatic
            if auto and chosen:
                steps.append(Step(a, f.id, False, "alternative"))
                continue
            if _effect(a) in seen:
                chosen = chosen or auto
                continue  # the same step already planned for another finding
            clash = next(((p, claimed[p]) for p in a.packages() if p in claimed), None)
            if auto and clash:
                other, other_id = clash[1]
                steps.append(Step(a, f.id, False, f"conflicts with `{other.command() or other.description}` (for {other_id}); not run"))
                continue
            steps.append(Step(a, f.id, auto))
            seen[_effect(a)] = f.id
            if auto:
                chosen = True
                for p in a.packages():
                    claimed[p] = (a, f.id)
    return steps


def _effect(action: Action) -> Action:
    """The action without its prose (description, the why of a flag): two findings offering one step in other
    words plan it once. Actions are frozen dataclasses, so the rest compares as data."""
    prose = {f.name: "" for f in dataclasses.fields(action) if f.name in _PROSE}  # type: ignore[arg-type]
    return dataclasses.replace(action, **prose) if prose else action  # type: ignore[type-var]


def pip_command(action: Union[PipInstall, PipUninstall], python: Optional[str] = None) -> List[str]:
    """pip for the environment being checked: this interpreter's, or with `python` (--python) this doctor's pip
    aimed at that interpreter (`pip --python`, pip >= 22.3), as uv's pip does; uv's pip where there is no pip."""
    import importlib.util

    verb = "uninstall" if isinstance(action, PipUninstall) else "install"
    args = list(action.argv())
    target = python or sys.executable
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", *(["--python", target] if python else []), verb, *args]
    uv = shutil.which("uv")
    if uv:
        if isinstance(action, PipUninstall):
            args = [a for a in args if a != "-y"]  # uv pip uninstall does not ask, and has no -y
        return [uv, "pip", verb, "--python", target, *args]
    raise DoctorError("neither pip nor uv is available for this interpreter: install one, or run the commands by hand")


def apply_step(step: Step, dry_run: bool = False, echo: Callable[[str], None] = print, python: Optional[str] = None) -> bool:
    """Run one automatic step; True when it succeeded (or would, in a dry run)."""
    a = step.action
    if isinstance(a, (PipInstall, PipUninstall)):
        cmd = pip_command(a, python)
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
    if isinstance(a, CACHE_ACTIONS) or (isinstance(a, SetEnv) and a.directory):
        from doctor.cache import apply_cache_action  # lazy: the cache package is only needed when a cache step runs

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
