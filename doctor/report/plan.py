"""Plans as text: the verified package plan (what changes, what stays, verified or not, the pip runs), the
per-finding steps (numbered, destructive ones marked, what is left to a person), a plan that stopped
halfway, a plan defect, and an undo."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from doctor.actions import PipInstall
from doctor.fix import Step
from doctor.resolve.plan import finding_key

if TYPE_CHECKING:
    from doctor.fix import Applied, Defect, PipRun
    from doctor.resolve.plan import Plan
    from doctor.resolve.undo import UndoPlan


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


# -- the verified package plan ---------------------------------------------------------------------------------

_STATUS_WORDS = {"verified": "verified against the index (pip's resolver; the rules re-run on the result)",
                 "unverified": "NOT verified against the index",
                 "failed": "no plan verified",
                 "nothing-to-do": "nothing to change"}


def render_package_plan(plan: "Plan", echo: Callable[[str], None] = print, env_kinds: Sequence[str] = (),
                        runs: Sequence["PipRun"] = (), verbose: bool = False) -> None:
    """Print a package plan: its verification, what changes (before -> after, kind, index), what stays, the pip
    runs, notes, and the restart notice in Colab/Kaggle when torch-level packages move."""
    v = plan.verification
    head = _STATUS_WORDS.get(v.status, v.status)
    if v.status == "unverified" and v.reason:
        head += f": {v.reason}"
    echo(f"package plan: {head}")
    if v.status in ("failed", "nothing-to-do"):
        if v.reason:
            echo(f"  why: {v.reason}")
        for f, why in plan.unfixable:
            echo(f"  not fixable by a package change: {finding_key(f)}: {why}")
        if verbose or v.status == "failed":
            for cand in v.tried:
                echo(f"  tried {cand.description}: {cand.outcome}")
        return
    if plan.targets:
        echo("  fixes: " + ", ".join(finding_key(f) for f in plan.targets))
    echo("  changes:")
    width = max((len(c.name) for c in plan.changes), default=0)
    for c in plan.changes:
        move = f"{c.before or '(not installed)'} -> {c.after or '(removed)'}"
        where = f", from {c.index_url}" if c.index_url else ""
        why = f"    # {c.reason}" if c.reason else ""
        echo(f"    {c.name:<{width}}  {move}  ({c.kind}{where}){why}")
    if plan.keeps:
        echo("  stays: " + ", ".join(plan.keeps))
    for f, why in plan.unfixable:
        echo(f"  not fixed by this plan: {finding_key(f)}: {why}")
    for f, why in v.accepted:
        echo(f"  accepted: {finding_key(f)}: {why}")
    if runs:
        echo(f"  runs ({len(runs)} pip command(s), each under a deadline; ! replaces or removes packages):")
        for i, r in enumerate(runs, 1):
            echo(f"    {i}. {'! ' if r.action.destructive else ''}{r.command}")
            if r.note:
                echo(f"       note: {r.note}")
    for n in plan.notes:
        if n != v.reason:
            echo(f"  note: {n}")
    if plan.restart and any(k in ("colab", "kaggle") for k in env_kinds):
        echo("  restart: torch-level packages change; restart the runtime (Runtime > Restart session) after this, "
             "before importing them again")


def render_applied(applied: "Applied", echo: Callable[[str], None] = print) -> None:
    """After a plan stopped at a failed step: what was and was not applied, step by step, and how to undo."""
    if applied.ok:
        return
    echo("the plan stopped: pip is not atomic, so here is what was and was not applied:")
    for i, s in enumerate(applied.steps, 1):
        detail = f": {s.detail}" if s.detail else ""
        echo(f"  {i}. {s.status:<8} {s.run.action.description}{detail}")
    if applied.state_file:
        echo("what was there before is saved; `doctor check --undo` puts it back "
             f"(state: {applied.state_file})")


def render_defect(defect: "Defect", echo: Callable[[str], None] = print) -> None:
    """A verified plan whose re-check contradicts its verification: the difference, and no further fix."""
    echo("plan defect: the plan was verified to remove these, and the re-check still finds them:")
    for f in defect.still:
        echo(f"  - {finding_key(f)} ({f.severity.label}): {f.title}")
        for k, val in f.evidence:
            echo(f"      {k}: {val}")
    for name, planned, now in defect.drift:
        echo(f"  installed {name} is {now or '(not installed)'}, the plan meant {planned or '(removed)'}")
    for f in defect.new:
        echo(f"  new since the plan: {finding_key(f)} ({f.severity.label}): {f.title}")
    echo("nothing more is changed (no loop of fixes); `doctor check --undo` puts the environment back. "
         "Please report this with `doctor check --json`.")


def render_undo(u: "UndoPlan", echo: Callable[[str], None] = print, runs: Sequence["PipRun"] = ()) -> None:
    """The undo of the last applied plan: which plan, what moves back, the pip runs."""
    r = u.record
    echo(f"undo of `doctor {r.command}` ({r.id}, {r.progress}):")
    for n in u.notes:
        echo(f"  note: {n}")
    if not u.changes:
        echo("  everything it touched is already as it was before")
    width = max((len(c.name) for c in u.changes), default=0)
    for c in u.changes:
        where = f", from {c.index_url}" if c.index_url else ""
        echo(f"    {c.name:<{width}}  {c.before or '(not installed)'} -> {c.after or '(removed)'}  ({c.kind}{where})")
    if u.unchanged:
        echo("  already as before: " + ", ".join(u.unchanged))
    for i, run in enumerate(runs, 1):
        echo(f"    {i}. {'! ' if run.action.destructive else ''}{run.command}")
