"""`doctor run [--no-probes] [--force] SCRIPT [ARGS...]`: check, then hand off to the script with the runtime patched in.

Everything after SCRIPT belongs to the script, its --flags included. Output goes to stderr: stdout is the script's.
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence, Tuple

from doctor.commands import Parser, add_common
from doctor.envvars import LOCAL_RANK
from doctor.errors import DoctorError
from doctor.exits import ExitCode, epilog
from doctor.report.console import console

EXIT_CODES = epilog((ExitCode.ERRORS, ExitCode.BAD_INPUT, ExitCode.INTERNAL, ExitCode.INTERRUPTED), notes=(
    "once the script starts, the exit code is the script's own (0 when it ends normally, its sys.exit code, 1 for "
    "an uncaught exception); the codes above are the doctor's, before it starts: 2 when the check found errors "
    "(refused; --force starts anyway)",
))


class _ScriptFirst(Parser):
    """The parser of `doctor run`: its options end at SCRIPT, and what follows SCRIPT reaches the script untouched.

    argparse's REMAINDER drops a `--` right after SCRIPT on some Pythons (3.11: `run train.py -- --x` gave the
    script ['--x']); `python train.py -- --x` gives ['--', '--x'], so the split is made here, before argparse.
    """

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None) -> Tuple[argparse.Namespace, List[str]]:
        """Parse up to SCRIPT (the first argument that is not an option, or the one after `--`); keep the rest."""
        items = list(args or ())
        i = 0
        while i < len(items) and items[i].startswith("-") and items[i] != "--":
            i += 1  # the doctor's own flags (none takes a value)
        if i < len(items) and items[i] == "--":
            i += 1
        ns, extras = super().parse_known_args(items[:i + 1], namespace)
        ns.script_args = items[i + 1:]
        return ns, extras


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor run` and its options."""
    c = sub.add_parser("run", help="check, then run a training script with the doctor's runtime patched in first",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="doctor run [-h] [--no-probes] [--force] [--no-color] SCRIPT [ARGS ...]")
    c.add_argument("--no-probes", action="store_true",
                   help="metadata only: the check runs no probes on the GPU (cached verdicts are still used)")
    c.add_argument("--force", action="store_true", help="start the script even when the check finds errors")
    add_common(c)
    c.add_argument("script", metavar="SCRIPT", help="the training script (a .py file), run as __main__")
    c.add_argument("script_args", metavar="ARGS", nargs="*", default=[],  # filled by _ScriptFirst, untouched
                   help="passed to the script as its sys.argv[1:], --flags included")
    c.__class__ = _ScriptFirst  # argparse builds subparsers of one class; this one splits off the script's arguments
    c.set_defaults(run=run)


def _validate(script: str) -> None:
    """DoctorError (exit 3) for a script that cannot be run, before any check."""
    if not os.path.exists(script):
        raise DoctorError(f"no such script: {script}")
    if os.path.isdir(script):
        raise DoctorError(f"{script} is a directory: give the training script (a .py file)")
    if script.lower().endswith(".ipynb"):
        raise DoctorError(f"{script} is a notebook: `doctor run` runs Python scripts (export it with "
                          "`jupyter nbconvert --to script`, or call doctor.check_imports() in its first cell)")
    if not os.access(script, os.R_OK):
        raise DoctorError(f"cannot read script {script}: permission denied")
    from doctor.dispatch import validate_overrides

    validate_overrides()  # a DOCTOR_BACKEND_<OP> typo is bad input now, as in `doctor check`


def _check(args: argparse.Namespace, con, debug: bool):  # type: ignore[no-untyped-def]
    """run_check for the script, with the probes' progress display on stderr while probes run."""
    from doctor.checkup import run_check
    from doctor.probes.catalogue import CATALOGUE
    from doctor.report.progress import LazyProgress, live_progress

    lazy = LazyProgress(lambda: live_progress(con, len(CATALOGUE)))
    try:
        return run_check(scripts=[args.script], debug=debug, probes=not args.no_probes,
                         probe_options={"progress": lazy})
    finally:
        lazy.stop()


def run(args: argparse.Namespace) -> int:
    """Check (fast path + cached verdicts, the script's import order), refuse on errors unless --force, hand off."""
    from doctor.report.handoff import render_handoff

    _validate(args.script)
    debug = bool(getattr(args, "debug", False))
    con = console(args, stderr=True)
    local_rank = os.environ.get(LOCAL_RANK, "0")
    if local_rank != "0":
        # Under torchrun / accelerate launch every rank runs `doctor run`: the node's local rank 0 checks (and
        # probes) for all of them; a refusal there ends its process, and the launcher stops the others.
        con.print(f"doctor run: local rank {local_rank}: the check is local rank 0's; starting {args.script}",
                  highlight=False)
        report = None
    else:
        report = _check(args, con, debug)
        render_handoff(report, con, args.script)
    if report is not None and report.exit_code >= ExitCode.ERRORS:
        if not args.force:
            con.print(f"doctor run: not starting {args.script}: the check found errors (fix them, or --force to start "
                      "anyway)", style="bold red", highlight=False)
            return int(ExitCode.ERRORS)
        con.print(f"doctor run: starting {args.script} despite the errors above (--force)", style="yellow", highlight=False)
    from doctor.runtime.launch import hand_off

    env = None
    if args.no_probes:  # the runtime, too, then uses cached verdicts only (else the torch references)
        from doctor.envvars import DOCTOR_RUNTIME_PROBES

        env = {**os.environ, DOCTOR_RUNTIME_PROBES: "0"}
    return hand_off(args.script, args.script_args, debug=debug, env=env)
