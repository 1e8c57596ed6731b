"""Which Python environment is checked, and whether it is the one the user has activated.

The doctor checks the environment of the interpreter it runs in (sys.prefix). A `doctor` found on PATH
may belong to another environment than the active one (pipx, uv tool, a base conda env), so its report
would describe packages the training never sees. VIRTUAL_ENV / CONDA_PREFIX name the active one.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional

from doctor.actions import Manual
from doctor.compat_matrix.model import Matrix
from doctor.envvars import ACTIVE_ENV_VARS, VIRTUAL_ENV
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding


class ActiveEnvironment(NamedTuple):
    """The environment the shell has activated, compared with the one being checked."""

    variable: str  # VIRTUAL_ENV or CONDA_PREFIX: which variable names it
    path: str  # its prefix, as the variable says
    is_checked: bool  # whether it is the environment the doctor runs in (sys.prefix), symlinks resolved


def _same_dir(a: str, b: str) -> bool:
    """Whether two paths name one directory (symlinks and case rules of the platform applied)."""
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def active_environment(facts: Facts) -> Optional[ActiveEnvironment]:
    """The activated environment (a venv on top of a conda env wins, as on PATH), or None when none is."""
    for var in ACTIVE_ENV_VARS:
        path = (facts.env.get(var) or "").strip()
        if path:
            return ActiveEnvironment(var, path, _same_dir(path, facts.python.prefix))
    return None


def _python_of(prefix: str) -> str:
    """The interpreter inside an environment prefix (venv and conda layouts)."""
    if os.name == "nt":
        scripts = os.path.join(prefix, "Scripts", "python.exe")
        return scripts if os.path.exists(scripts) else os.path.join(prefix, "python.exe")
    return os.path.join(prefix, "bin", "python")


def check_active_environment(facts: Facts, matrix: Matrix) -> List[Finding]:
    """A warning when the activated environment is not the one checked: the user most likely meant it."""
    active = active_environment(facts)
    if active is None or active.is_checked:
        return []
    kind = "virtual environment" if active.variable == VIRTUAL_ENV else "conda environment"
    python = _python_of(active.path)
    return [finding(
        "environment.not-active", Severity.WARN, Category.DOCTOR,
        f"checked {facts.python.prefix}, not the active {kind} {active.path}",
        {"checked interpreter": facts.python.executable, "checked prefix (sys.prefix)": facts.python.prefix,
         active.variable: active.path},
        f"The doctor checks the environment of the Python it runs in. {active.variable} names another one, where "
        "your training most likely runs; its packages were not looked at, so this report does not describe it.",
        [Manual(f"check that environment instead: run the doctor installed in it (`{python} -m pip install tune-doctor`, "
                f"then `{python} -m doctor check`), or, with a doctor that has the --python option, "
                f"`doctor check --python {python}`")],
        subject=active.path)]
