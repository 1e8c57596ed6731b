"""`doctor check`: inventory + compatibility matrix, then the report."""

from __future__ import annotations

import argparse
import sys

from doctor.commands import add_common, seconds
from doctor.errors import DoctorError
from doctor.exits import COMMON, epilog
from doctor.report.console import console

EXIT_CODES = epilog(COMMON, notes=("with --fix: the code of the re-check after the changes",))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor check` and its options."""
    c = sub.add_parser("check", help="inventory + compatibility matrix: what is wrong, why, and the exact fix",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable report (has a schema_version)")
    out.add_argument("--markdown", action="store_true", help="Markdown to paste into a bug report")
    c.add_argument("-v", "--verbose", action="store_true", help="evidence and explanation for every finding")
    c.add_argument("--script", action="append", default=[], metavar="PATH",
                   help="also check the import order of a training script or notebook (parsed, never run); repeatable")
    c.add_argument("--fix", action="store_true", help="apply the fixes: the plan is printed first, then confirmed, then re-checked")
    c.add_argument("--yes", action="store_true", help="with --fix: do not ask for confirmation")
    c.add_argument("--dry-run", action="store_true", help="with --fix: print the plan only")
    c.add_argument("--python", default=None, metavar="PATH",
                   help="check another interpreter's environment (a python executable or a venv directory), without "
                        "installing the doctor there; probes and --fix use that interpreter")
    c.add_argument("--no-probes", action="store_true", help="metadata only: do not run probes on the GPU")
    c.add_argument("--refresh", action="store_true", help="re-run probes instead of reusing cached verdicts")
    c.add_argument("--probe-timeout", type=seconds, default=None, metavar="S", help="limit per probe")
    c.add_argument("--gpu-timeout", type=seconds, default=3.0, metavar="S", help="limit for nvidia-smi (default 3 s)")
    add_common(c)
    c.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `doctor check`, print the report, and with --fix apply the plan and re-check."""
    _validate(args)
    report = _run(args)
    _render(report, args)
    if not args.fix:
        return report.exit_code
    return _fix(report, args)


def _validate(args: argparse.Namespace) -> None:
    """DoctorError (exit 3) for options that make no sense together or overrides that name nothing, before any work."""
    from doctor.dispatch import validate_overrides

    if not args.fix and (args.dry_run or args.yes):
        raise DoctorError(f"--{'dry-run' if args.dry_run else 'yes'} only applies with --fix")
    validate_overrides()


def _run(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """run_check with the CLI's options (and a progress display for text output)."""
    from doctor.checkup import run_check

    progress = stop = None
    if not (args.json or args.markdown):
        from doctor.report.progress import LazyProgress, live_progress
        from doctor.probes.catalogue import CATALOGUE

        lazy = LazyProgress(lambda: live_progress(console(args, stderr=True), len(CATALOGUE)))
        progress, stop = lazy, lazy.stop
    try:
        return run_check(scripts=args.script, debug=bool(getattr(args, "debug", False)), gpu_timeout=args.gpu_timeout,
                         probes=not args.no_probes, python=args.python,
                         probe_options={"refresh": args.refresh, "timeout": args.probe_timeout, "progress": progress})
    finally:
        if stop:
            stop()


def _render(report, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """Print the report in the chosen format."""
    if args.json:
        from doctor.report.json import to_json

        sys.stdout.write(to_json(report) + "\n")
    elif args.markdown:
        from doctor.report.markdown import to_markdown

        sys.stdout.write(to_markdown(report))
    else:
        from doctor.report.text import render_text

        render_text(report, console(args), verbose=args.verbose)


def _fix(report, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """Show the plan, confirm, apply it step by step, then check again and return the new exit code."""
    from doctor.fix import apply_step, confirm, plan
    from doctor.report.plan import render_plan

    # plan text goes to stderr under --json/--markdown so stdout stays machine-readable
    echo = (lambda m: print(m, file=sys.stderr)) if (args.json or args.markdown) else print
    steps = plan(report.findings)
    echo("")
    render_plan(steps, echo, conda="conda" in report.facts.env_kinds)
    runs = [s for s in steps if s.automatic]
    if not runs:
        echo("nothing to apply automatically.")
        return report.exit_code
    if args.dry_run:
        echo("dry run: nothing was changed.")
        return report.exit_code
    if not args.yes and not confirm("apply these steps? [y/N] "):
        echo("not applied (no confirmation; rerun with --yes to apply without asking).")
        return report.exit_code
    for i, step in enumerate(runs, 1):
        echo(f"[{i}/{len(runs)}] {step.finding_id}")
        if not apply_step(step, echo=echo, python=report.facts.python.executable if args.python else None):
            echo(f"step {i} failed; stopping. Nothing after it was run.")
            break
    echo("\nre-checking:")
    again = _run(args)
    _render(again, args)
    return again.exit_code
