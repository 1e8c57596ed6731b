"""What pip refused, read from its output, and which pins did it.

`%pip install` does not fail a notebook cell when pip refuses, and `pip install` says why in a resolver
report meant for people: this reads that text (pip's own wording, as of pip 23 to 26) back into a Refusal,
with the reasons the pins give for the constraints that stood in the way.
"""

from __future__ import annotations

import re
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from doctor.resolve.pins import PinSet

# The clash between the hook's build-constraint and --no-build-isolation, as the hook and the refusal say it.
NO_BUILD_ISOLATION = ("pip >= 26.2 refuses --no-build-isolation while build-constraint is set (flash-attn's usual "
                      "install): `doctor install flash-attn` handles that case")


class Refusal(NamedTuple):
    """What pip's output says was refused, and which pins did it."""

    refused: bool  # pip refused the install (a resolver conflict, or an option clash with the hook)
    kind: str  # "conflict", "no-build-isolation", "no-version", "" (nothing refused)
    requested: Tuple[str, ...]  # what was asked for ("torch==9.9")
    blocking: Tuple[str, ...]  # the constraint lines that stood in the way ("torch===2.13.0+cpu")
    explanation: str  # one paragraph
    advice: Tuple[str, ...] = ()


def explain_refusal(pip_output: object, pins: Optional[PinSet] = None) -> Refusal:
    """Read pip's output (a string, or the lines of `out = !pip install ...`) for what was refused and why.

    `%pip install` does not fail a notebook cell when pip refuses, so the notebook asks here.
    """
    if isinstance(pip_output, bytes):
        text = pip_output.decode("utf-8", "replace")
    elif isinstance(pip_output, str):
        text = pip_output
    elif isinstance(pip_output, Iterable):  # IPython's SList from `out = !pip ...` is a list of lines
        text = "\n".join(str(x) for x in pip_output)
    else:
        text = str(pip_output or "")
    if "--build-constraint cannot be used with --no-build-isolation" in text:
        return Refusal(True, "no-build-isolation", (), (), NO_BUILD_ISOLATION,
                       ("`doctor install PKG` (it installs without build isolation and keeps the pins)",
                        "or, for that one command: PIP_BUILD_CONSTRAINT=' ' (a space: it replaces pip.conf's value and "
                        "names no file; an empty value is dropped by pip, so pip.conf's would stand) and -c <the hook's "
                        "constraints file>, so the runtime pins still hold"))
    requested: List[str] = []
    blocking: List[str] = []
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^The user requested \(constraint\) (.+)$", s)
        if m:
            blocking.append(m.group(1).strip())
            continue
        m = re.match(r"^The user requested (.+)$", s)
        if m:
            requested.append(m.group(1).strip())
            continue
        m = re.match(r"^(\S+ \S+) depends on (.+)$", s)
        if m:
            requested.append(f"{m.group(1)} (which depends on {m.group(2).strip()})")
    conflict = "ResolutionImpossible" in text or "conflicting dependencies" in text
    if conflict:
        why = _pin_reasons(blocking, pins)
        expl = ("pip refused the install: " + ", ".join(requested or ["what was asked for"]) + " conflicts with the pins "
                + (", ".join(blocking) if blocking else "in force") + ". Nothing was installed." + why)
        return Refusal(True, "conflict", tuple(requested), tuple(blocking), expl,
                       ("install a release that fits the pins: `doctor pin --for PKG` names it",
                        "change torch on purpose: `doctor pin --hook --torch VER --cuda VER`, then install",
                        "or lift the hook: `doctor pin --unhook`"))
    m = re.search(r"Could not find a version that satisfies the requirement (\S+)", text)
    if m:
        return Refusal(True, "no-version", (m.group(1),), (), f"pip found no release of {m.group(1)} that satisfies it and "
                       "the pins in force; nothing was installed", ("`doctor pin --for PKG` says which release fits",))
    return Refusal(False, "", (), (), "pip refused nothing in this output", ())


def _pin_reasons(blocking: Sequence[str], pins: Optional[PinSet]) -> str:
    """' torch===X: <reason>.' for each blocking constraint the pins explain."""
    if pins is None:
        return ""
    out = []
    for line in blocking:
        name = re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0]
        p = pins.pin_for(name)
        if p is not None:
            out.append(f" {p.requirement}: {p.reason}.")
    return "".join(out)
