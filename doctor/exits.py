"""The exit codes of every `doctor` command, named once with what they mean.

`--help` epilogs, the README table, the JSON `status` field and the summary line all read this table,
so a code cannot mean one thing in the help and another in the output. A code never means two things
within one command: 2 is "errors found (or left)", a change that could not be applied is 5, a verified plan
whose re-check contradicts its verification is 6 (never a loop of further fixes).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Iterable


class ExitCode(IntEnum):
    """How a `doctor` command ended."""

    HEALTHY = 0  # nothing above info
    WARNINGS = 1  # the worst finding is a warning: the user should act
    ERRORS = 2  # the worst finding is an error (for repair/--fix: the one left after the re-check)
    BAD_INPUT = 3  # the doctor could not run on this input: options, env vars, data files, scripts, refusal
    INTERNAL = 4  # a bug in the doctor: an unexpected exception
    CHANGE_FAILED = 5  # a change could not be applied (cache repair/clear, a pip step of --fix/install/--undo)
    PLAN_DEFECT = 6  # a verified plan was applied, and the re-check still shows a finding it said would be gone
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

    @property
    def status(self) -> str:
        """The short word used in JSON `status` and the summary line ('healthy', 'warnings', ...)."""
        return _STATUS[self]

    @property
    def meaning(self) -> str:
        """One line for `--help` and the README."""
        return _MEANING[self]


_STATUS = {
    ExitCode.HEALTHY: "healthy",
    ExitCode.WARNINGS: "warnings",
    ExitCode.ERRORS: "errors",
    ExitCode.BAD_INPUT: "bad input",
    ExitCode.INTERNAL: "internal error",
    ExitCode.CHANGE_FAILED: "a change failed",
    ExitCode.PLAN_DEFECT: "plan defect",
    ExitCode.INTERRUPTED: "interrupted",
}

_MEANING = {
    ExitCode.HEALTHY: "healthy (nothing above info)",
    ExitCode.WARNINGS: "warnings",
    ExitCode.ERRORS: "errors",
    ExitCode.BAD_INPUT: ("the doctor itself could not run: bad input (options, DOCTOR_* variables, matrix data, "
                         "a script) or a change refused for want of confirmation; one line on stderr"),
    ExitCode.INTERNAL: "internal error: a bug in the doctor (one line on stderr; --debug shows the traceback)",
    ExitCode.CHANGE_FAILED: "a change could not be applied (the others were; each is listed)",
    ExitCode.PLAN_DEFECT: ("a verified plan was applied, but the re-check still finds what it said would be gone: a "
                           "defect of the plan (the difference is shown; nothing more is changed, `doctor check --undo` "
                           "puts the environment back)"),
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

# The codes every command can end with; commands that change things add CHANGE_FAILED (and, when they apply a
# verified package plan, PLAN_DEFECT).
COMMON = (ExitCode.HEALTHY, ExitCode.WARNINGS, ExitCode.ERRORS, ExitCode.BAD_INPUT, ExitCode.INTERNAL,
          ExitCode.INTERRUPTED)


def status_of(code: int) -> str:
    """The status word of any int code ('?' for one the doctor never returns)."""
    try:
        return ExitCode(code).status
    except ValueError:
        return "?"


def epilog(codes: Iterable[ExitCode] = COMMON, notes: Iterable[str] = ()) -> str:
    """The 'exit codes:' block of a `--help` text, one code a line, then per-command notes."""
    lines = ["exit codes:"] + [f"  {int(c):>3}  {c.meaning}" for c in sorted(codes)]
    return "\n".join(lines + [f"  {n}" for n in notes])
