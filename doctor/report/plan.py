"""The fix plan as text: what will run (numbered, destructive steps marked), what is left to a person."""

from __future__ import annotations

from typing import Callable, Sequence

from doctor.actions import PipInstall
from doctor.fix import Step


def render_plan(steps: Sequence[Step], echo: Callable[[str], None] = print, conda: bool = False) -> None:
    """Print the plan: what will run, and what is left to the user (`conda`: the checked environment is one)."""
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
    if conda and any(isinstance(s.action, PipInstall) for s in runs):
        echo("note: this is a conda environment; pip installs go into it beside conda's packages")
