"""`doctor install PKG...`: the requested packages through a verified plan that keeps torch, then a re-check.

Also home of the flow `doctor check --fix` shares: show the plan -> refuse or confirm -> save "before" ->
apply -> re-check -> a defect when the re-check contradicts the verification (doctor.fix does the work,
doctor.report.plan the text).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from doctor.commands import add_common, seconds
from doctor.errors import DoctorError
from doctor.exits import COMMON, ExitCode, epilog
from doctor.report.console import console

if TYPE_CHECKING:
    from doctor.checkup import Report
    from doctor.facts import Facts
    from doctor.fix import Outcome, Step
    from doctor.resolve.options import IndexConfig
    from doctor.resolve.plan import Plan

EXIT_CODES = epilog(COMMON + (ExitCode.CHANGE_FAILED, ExitCode.PLAN_DEFECT), notes=(
    "0-2: what the re-check after installing found (a dry run, or nothing to install: 0)",
    "3 also: no confirmation (no terminal and no --yes), or an unverified plan with --yes but no --allow-unverified",
    "5: no plan verified (nothing was installed), or a pip step failed (what was applied is listed; "
    "`doctor check --undo` puts it back)",
))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor install` and its options."""
    c = sub.add_parser("install", help="install packages through a verified plan that keeps torch (shown, confirmed, "
                                       "re-checked; `doctor check --undo` puts it back)",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("packages", nargs="+", metavar="PKG", help="requirements: flash-attn, 'trl<0.20', xformers==0.0.28")
    c.add_argument("--python", default=None, metavar="PATH",
                   help="install into another interpreter's environment (a python executable or a venv directory)")
    add_plan_options(c)
    c.add_argument("--json", action="store_true", help="machine-readable outcome: the plan, the steps, the re-check")
    c.add_argument("-v", "--verbose", action="store_true", help="every candidate the planner tried")
    c.add_argument("--gpu-timeout", type=seconds, default=3.0, metavar="S", help="limit for nvidia-smi (default 3 s)")
    c.add_argument("--service", default=None, metavar="URL",
                   help="ask this resolution service which versions fit (default $DOCTOR_SERVICE_URL); the plan is still "
                        "made and verified here; on any failure the local matrix answers, and one line says so")
    add_common(c)
    c.set_defaults(run=run)


def add_plan_options(c: argparse.ArgumentParser) -> None:
    """Options of every command that applies a package plan."""
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation (a verified plan)")
    c.add_argument("--dry-run", action="store_true", help="print the plan only; nothing is written or run")
    c.add_argument("--offline", action="store_true",
                   help="plan from the embedded matrix only (exact pins), not verified against the index")
    c.add_argument("--allow-unverified", action="store_true",
                   help="with --yes: apply a plan that is not verified against the index (offline)")
    c.add_argument("--torch", default=None, metavar="VER", help="target this torch release on purpose")
    c.add_argument("--cuda", default=None, metavar="VER", help="that torch build's CUDA (12.1, or cpu)")


def validate_plan_options(args: argparse.Namespace) -> None:
    """DoctorError (exit 3) for plan options that make no sense, before any work."""
    import re

    from doctor.compat_matrix.versions import parse_version

    if args.yes and args.dry_run:
        raise DoctorError("--yes and --dry-run contradict each other")
    if args.allow_unverified and not args.yes:
        raise DoctorError("--allow-unverified only applies with --yes (at a prompt, you decide)")
    if args.torch is not None and parse_version(args.torch) is None:
        raise DoctorError(f"--torch: not a version: {args.torch!r}")
    if args.cuda is not None and not re.fullmatch(r"cpu|\d{1,2}\.\d{1,2}", args.cuda):
        raise DoctorError(f"--cuda: expected a CUDA version like 12.1, or cpu; got {args.cuda!r}")


def run(args: argparse.Namespace) -> int:
    """Plan the install, show it, confirm, apply, re-check; the exit code says how it ended."""
    from packaging.requirements import InvalidRequirement, Requirement

    validate_plan_options(args)
    for text in args.packages:
        try:
            Requirement(text)
        except InvalidRequirement as exc:
            raise DoctorError(f"not a requirement: {text!r} ({exc})") from None
    import os

    from doctor.envvars import DOCTOR_SERVICE_URL

    url = None
    if args.service is not None or os.environ.get(DOCTOR_SERVICE_URL, "").strip():
        from doctor.service.client import service_url

        url = service_url(args.service)
    from doctor.checkup import run_check
    from doctor.compat_matrix.loader import load_matrix
    from doctor.resolve.options import PlanOptions, default_indexes
    from doctor.resolve.planner import plan_install

    report = run_check(python=args.python, probes=False, gpu_timeout=args.gpu_timeout)
    python = report.facts.python.executable if args.python else None
    indexes = default_indexes()
    options = PlanOptions(python=python, indexes=indexes, offline=args.offline, torch=args.torch, cuda=args.cuda,
                          wanted=tuple(args.packages))
    echo = _echo(args)
    wanted = list(args.packages)
    if url is not None:
        wanted = list(_service_requirements(url, report.facts, wanted, args, echo))
    plan = plan_install(report.facts, load_matrix(), wanted, options)

    def recheck() -> "Report":
        return run_check(python=args.python, probes=False, gpu_timeout=args.gpu_timeout)

    out = carry_out(plan, report, args, echo, "install " + " ".join(args.packages), indexes, recheck)
    if args.json:
        from doctor.report.json import dumps, install_document

        sys.stdout.write(dumps(install_document(list(args.packages), report, out)) + "\n")
    else:
        render_after(out, args, echo)
    return out.exit_code


def _service_requirements(url: str, facts: "Facts", wanted: List[str], args: argparse.Namespace,
                          echo: Callable[[str], None]) -> Sequence[str]:
    """The requirements narrowed to the service's exact pins where it has one that fits (the plan is still made and
    verified here), or as given when the service fails (one line says so)."""
    from doctor.service.client import ServiceError, ask, fallback_line, narrowed, service_token

    try:
        answer = ask(url, facts, packages=wanted, torch=args.torch, cuda=args.cuda, token=service_token())
    except ServiceError as exc:
        print(fallback_line(url, exc), file=sys.stderr)
        return wanted
    out = narrowed(wanted, answer)
    changed = [f"{a} -> {b}" for a, b in zip(wanted, out) if a != b]
    echo(f"the service {url} (matrix {answer.matrix_version}): " + (", ".join(changed) if changed else "no exact pin "
         "for these") + "; planned and verified here")
    return out


def _echo(args: argparse.Namespace) -> Callable[[str], None]:
    """Plan text: stdout, or stderr when stdout carries JSON/Markdown."""
    if getattr(args, "json", False) or getattr(args, "markdown", False):
        return lambda m: print(m, file=sys.stderr)
    return print


def carry_out(plan: "Plan", report: "Report", args: argparse.Namespace, echo: Callable[[str], None], command: str,
              indexes: "IndexConfig", recheck: Callable[[], "Report"], steps: Optional[Sequence["Step"]] = None,
              idle_code: Optional[int] = None, unconfirmed_code: int = ExitCode.BAD_INPUT) -> "Outcome":
    """Show the plan (and, for --fix, the findings' other steps), refuse or confirm, save, apply, re-check, compare.

    `steps`: the non-package fix steps (None: there are none to show). `idle_code`: the exit code when nothing
    runs (a dry run, nothing to do); None: 0, or 5 for a plan that failed to verify. `unconfirmed_code`: when
    nobody confirmed.
    """
    from doctor.fix import Outcome, apply_plan, apply_step, confirm, find_defect, pip_runs, refusal
    from doctor.report.plan import render_applied, render_package_plan, render_plan
    from doctor.resolve.plan import FAILED, NOTHING, UNVERIFIED
    from doctor.resolve.undo import Store

    facts = report.facts
    python = facts.python.executable if args.python else None
    store = Store(facts.python.prefix, facts.python.executable)
    runs = tuple(pip_runs(plan.actions, python, facts.python.prefix, store.constraints_path if plan.constraints else None))
    echo("")
    if plan.verification.status != NOTHING or not steps:
        render_package_plan(plan, echo, facts.env_kinds, runs, verbose=getattr(args, "verbose", False))
    if steps is not None:
        render_plan(steps, echo, conda="conda" in facts.env_kinds)
    status = plan.verification.status
    package = plan.applicable and status != FAILED
    others = [s for s in steps or () if s.automatic]
    if idle_code is None:
        idle_code = ExitCode.CHANGE_FAILED if status == FAILED else ExitCode.HEALTHY
    if not package and not others:
        echo("nothing to apply automatically.")
        return Outcome(plan, runs, int(idle_code), message=plan.verification.reason or "nothing to apply")
    if package:
        why = refusal(plan, args.yes, args.allow_unverified)
        if why:
            raise DoctorError(f"{why}; nothing was changed")
    if args.dry_run:
        echo("dry run: nothing was changed.")
        return Outcome(plan, runs, int(idle_code), dry_run=True)
    if not args.yes:
        warn = " (NOT verified against the index)" if package and status == UNVERIFIED else ""
        if not confirm(f"apply this plan{warn}? [y/N] "):
            echo("not applied (no confirmation; rerun with --yes to apply without asking).")
            return Outcome(plan, runs, int(unconfirmed_code), message="not confirmed")
    applied = None
    if package:
        applied = apply_plan(plan, facts, store, command, indexes, python, echo)
        render_applied(applied, echo)
    done: List[Tuple["Step", bool]] = []
    if applied is None or applied.ok:
        for i, step in enumerate(others, 1):
            echo(f"[{i}/{len(others)}] {step.finding_id}")
            ok = apply_step(step, echo=echo, python=python)
            done.append((step, ok))
            if not ok:
                echo(f"step {i} failed; stopping. Nothing after it was run.")
                break
    echo("\nre-checking:")
    after = recheck()
    defect = find_defect(plan, report.findings, after.findings, after.facts) if applied is not None and applied.ok else None
    if (applied is not None and not applied.ok) or not all(ok for _, ok in done):
        code = int(ExitCode.CHANGE_FAILED)
    elif defect is not None:
        code = int(ExitCode.PLAN_DEFECT)
    else:
        code = after.exit_code
    return Outcome(plan, runs, code, False, applied, tuple(done), after, defect)


def render_after(out: "Outcome", args: argparse.Namespace, echo: Callable[[str], None]) -> None:
    """The re-check as text (Markdown with --markdown), then the defect, last, where it is seen."""
    if out.after is not None:
        if getattr(args, "markdown", False):
            from doctor.report.markdown import to_markdown

            sys.stdout.write(to_markdown(out.after))
        else:
            from doctor.report.text import render_text

            render_text(out.after, console(args), verbose=getattr(args, "verbose", False))
    if out.defect is not None:
        from doctor.report.plan import render_defect

        render_defect(out.defect, echo)
