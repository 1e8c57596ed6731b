"""Pins, the pre-install hook and pip's refusals as text, HTML and JSON; and their notebook face, doctor.pin().

`doctor.pin()` (a notebook's first cell: `import doctor; doctor.check(); doctor.pin(hook=True)`) returns a
PinResult: it prints as text, displays as HTML in Jupyter, and `.explain(pip_output)` says what a later
`%pip install` had refused (`%pip` never fails the cell, so the notebook asks). Plain lines are rendered
here without rich, so `doctor pin` stays fast.
"""

from __future__ import annotations

import html
import json
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from doctor.compat_matrix.loader import load_matrix
from doctor.resolve.hook import HookResult, HookStatus, install_hook, remove_hook
from doctor.resolve.pin_files import constraint_lines, pins_document, requirement_lines
from doctor.resolve.pins import PinSet, known_good_pins, pin_facts
from doctor.resolve.refusal import Refusal, explain_refusal

_HTML = ('<pre style="white-space:pre-wrap;overflow-x:auto;line-height:normal;'
         "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{}</pre>")


# -- text ------------------------------------------------------------------------------------------------


def pins_text(ps: PinSet) -> List[str]:
    """A person's view of the pins: what is kept, what is pinned and why, what does not fit."""
    head = f"tune-doctor pins for torch {ps.torch}" if ps.torch else "tune-doctor pins (no torch)"
    if ps.cuda:
        head += f" (CUDA {ps.cuda})"
    lines = [head + (f"  [{ps.python}]" if ps.python else "")]
    for p in ps.pins:
        where = f"  from {p.index_url}" if p.index_url and not p.kept else ""
        lines.append(f"  {'=' if p.kept else '+'} {p.requirement}{where}")
        lines.append(f"      {p.reason} ({p.source})")
    for u in ps.unfit:
        lines.append(f"  ! {u.name}: no release fits: {u.why}")
        lines.extend(f"      - {a}" for a in u.alternatives)
    lines.extend(f"  note: {n}" for n in ps.notes)
    if not ps.pins and not ps.unfit:
        lines.append("  nothing to pin")
    return lines


def hook_text(r: HookResult) -> List[str]:
    """What the hook did and what the user must know."""
    if r.action == "not-hooked":
        return [f"no hook in {r.prefix}: nothing changed"]
    if r.action == "unhooked":
        return [f"hook removed from {r.prefix}"] + [f"  {m}" for m in r.messages]
    verb = "hook installed" if r.action == "hooked" else "hook updated"
    lines = [f"{verb}: {r.pip_conf}", f"  [install] constraint = {r.constraints}"]
    if r.build_constraint:
        lines.append("  [install] build-constraint (pip >= 26.2)")
    lines.extend(f"  includes the constraint set before: {c}" for c in r.composed)
    if not r.in_force:
        lines.append("  ! not in force in this environment's variables: see below")
    lines.extend(f"  {m}" for m in r.messages)
    if r.environ:
        lines.append("  for shells and CI (uv never reads pip.conf):")
        lines.extend(f"    export {k}={_shell(v)}" for k, v in r.environ.items())
    return lines


def status_text(s: HookStatus) -> List[str]:
    """What pip and uv apply in one environment."""
    state = ("in force" if s.in_force else "installed but NOT in force") if s.hooked else "not installed"
    lines = [f"pre-install hook for {s.prefix}: {state}"]
    lines.append(f"  pip applies constraint: {s.constraint.value} (from {s.constraint.origin})" if s.constraint
                 else "  pip applies no constraint")
    if s.build_constraint:
        lines.append(f"  pip applies build-constraint: {s.build_constraint.value} (from {s.build_constraint.origin})")
    if s.pip_version:
        lines.append(f"  pip {s.pip_version}" + (" (constraints reach build isolation only through build-constraint)"
                                                  if s.build_needed else ""))
    if s.pinned_torch:
        lines.append(f"  the hook keeps torch {s.pinned_torch}")
    lines.append(f"  uv: UV_CONSTRAINT={s.uv_constraint}" if s.uv_constraint else "  uv: UV_CONSTRAINT not set")
    if s.activate_block:
        lines.append("  bin/activate exports the uv variables")
    lines.extend(f"  ! {p}" for p in s.problems)
    lines.extend(f"  note: {n}" for n in s.notes)
    return lines


def refusal_text(r: Refusal) -> List[str]:
    """What pip refused, which pins did it, and what to do."""
    if not r.refused:
        return [r.explanation]
    lines = [r.explanation]
    lines.extend(f"  - {a}" for a in r.advice)
    return lines


def _shell(value: str) -> str:
    import shlex

    return shlex.quote(value)


# -- file formats and JSON ------------------------------------------------------------------------------


def pins_file(ps: PinSet, fmt: str) -> str:
    """The pins in a file format: constraints (pip -c / uv), requirements (pip -r) or json."""
    if fmt == "json":
        return json.dumps(pins_document(ps), indent=2) + "\n"
    if fmt == "requirements":
        return "\n".join(requirement_lines(ps)) + "\n"
    return "\n".join(constraint_lines(ps)) + "\n"


def hook_document(r: HookResult) -> Dict[str, Any]:
    """A hook result as JSON-ready data (`doctor pin --hook --format json`)."""
    doc: Dict[str, Any] = {
        "schema_version": 1, "action": r.action, "prefix": r.prefix, "pip_conf": r.pip_conf,
        "constraints": r.constraints, "build_constraint": r.build_constraint, "pip_version": r.pip_version,
        "composed": list(r.composed), "environ": dict(r.environ), "activate": r.activate,
        "in_force": r.in_force, "messages": list(r.messages),
    }
    if r.pins is not None:
        doc["pins"] = pins_document(r.pins)
    return doc


def status_document(s: HookStatus) -> Dict[str, Any]:
    """A hook status as JSON-ready data (`doctor pin --status --format json`)."""
    def setting(x: Any) -> Optional[Dict[str, str]]:
        return None if x is None else {"value": x.value, "origin": x.origin, "kind": x.kind}

    return {"schema_version": 1, "prefix": s.prefix, "pip_conf": s.pip_conf, "hooked": s.hooked,
            "in_force": s.in_force, "constraint": setting(s.constraint), "build_constraint": setting(s.build_constraint),
            "pip_version": s.pip_version, "build_needed": s.build_needed, "constraints": s.constraints,
            "pinned_torch": s.pinned_torch, "uv_constraint": s.uv_constraint, "activate_block": s.activate_block,
            "problems": list(s.problems), "notes": list(s.notes)}


# -- the notebook face --------------------------------------------------------------------------------------


def _html(lines: Sequence[str]) -> str:
    return _HTML.format(html.escape("\n".join(lines)))


class Explanation(Refusal):
    """A Refusal that prints as text and displays in Jupyter."""

    __slots__ = ()

    def __str__(self) -> str:
        return "\n".join(refusal_text(self)) + "\n"

    def _repr_html_(self) -> str:
        return _html(refusal_text(self))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self).rstrip("\n"))


class PinResult(NamedTuple):
    """What doctor.pin() returns: the pins, and what the hook did (when asked for)."""

    pins: PinSet
    hook: Optional[HookResult] = None

    @property
    def constraints(self) -> str:
        """The pins as a constraints file (`pip install -c` / `uv pip install -c`)."""
        return pins_file(self.pins, "constraints")

    def lines(self) -> List[str]:
        """The text face, line by line."""
        out = pins_text(self.pins)
        if self.hook is not None:
            out += [""] + hook_text(self.hook)
        return out

    def explain(self, pip_output: object) -> Explanation:
        """What pip refused in this output (a string, or `out = !pip install ...`), and which pins did it."""
        return Explanation(*explain_refusal(pip_output, self.pins))

    def unhook(self) -> "PinResult":
        """Remove the hook from this environment (pip.conf back as it was) and the kernel's variables."""
        prefix = self.pins.prefix or sys.prefix
        kernel = os.environ if _same(prefix, sys.prefix) else None
        return PinResult(self.pins, remove_hook(prefix, kernel_env=kernel, pip_version=self.pins.pip_version))

    def __str__(self) -> str:
        return "\n".join(self.lines()) + "\n"

    def __repr__(self) -> str:
        hooked = f", hook {self.hook.action}" if self.hook is not None else ""
        return f"<doctor.PinResult: {len(self.pins.pins)} pins, {len(self.pins.unfit)} unfit{hooked}; print() it>"

    def _repr_html_(self) -> str:
        return _html(self.lines())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Dict[str, str]:
        return {"text/plain": str(self), "text/html": self._repr_html_()}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self).rstrip("\n"))


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def pin(hook: bool = False, *, only: Sequence[str] = (), torch: Optional[str] = None, cuda: Optional[str] = None,
        python: Optional[str] = None, shell: bool = False) -> PinResult:
    """Known-good pins for this environment (or `python`'s); hook=True puts them in force for later installs.

    hook=True writes the target's site pip.conf (it survives a kernel restart) and, when the target is this
    kernel's own environment, sets PIP_CONSTRAINT, PIP_BUILD_CONSTRAINT (pip >= 26.2) and UV_CONSTRAINT /
    UV_BUILD_CONSTRAINT in os.environ, so later `!pip`, `%pip` and `!uv pip` cells inherit them.
    `only` limits the pins to those packages (torch's pin always comes along); `torch`/`cuda` pin for another
    torch build. Raises doctor.DoctorError for bad input or a file that cannot be written (nothing changed).
    """
    if isinstance(only, str):
        only = [only]
    facts = pin_facts(python)
    ps = known_good_pins(facts, load_matrix(), only=only, torch=torch, cuda=cuda)
    if not hook:
        return PinResult(ps)
    kernel = os.environ if _same(ps.prefix, sys.prefix) else None
    return PinResult(ps, install_hook(ps, shell=shell, kernel_env=kernel))
