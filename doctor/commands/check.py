"""`doctor check`: inventory + compatibility matrix, then the report; `--fix` applies a verified plan,
`--undo` puts back what the last applied plan changed."""

from __future__ import annotations

import argparse
import sys

from doctor.commands import add_common, seconds
from doctor.errors import DoctorError
from doctor.exits import COMMON, ExitCode, epilog
from doctor.report.console import console

EXIT_CODES = epilog(COMMON + (ExitCode.CHANGE_FAILED, ExitCode.PLAN_DEFECT), notes=(
    "with --fix: the code of the re-check after the changes; 5 when a change failed (what was applied is "
    "listed), 6 when the re-check contradicts the verified plan",
    "with --undo: the code of the re-check after putting things back; 3 when nothing is recorded, 5 when a "
    "step failed (run it again)",
))


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
    c.add_argument("--fix", action="store_true", help="apply the fixes: a verified plan is printed first, then confirmed, "
                                                     "applied (what it touches saved first) and re-checked")
    c.add_argument("--undo", action="store_true", help="put back what the last plan applied here changed (--fix or "
                                                      "`doctor install`), from the versions saved before it ran")
    from doctor.commands.install import add_plan_options

    add_plan_options(c)
    c.add_argument("--python", default=None, metavar="PATH",
                   help="check another interpreter's environment (a python executable or a venv directory), without "
                        "installing the doctor there; probes and --fix use that interpreter")
    c.add_argument("--no-probes", action="store_true", help="metadata only: do not run probes on the GPU")
    c.add_argument("--refresh", action="store_true", help="re-run probes instead of reusing cached verdicts")
    c.add_argument("--probe-timeout", type=seconds, default=None, metavar="S", help="limit per probe")
    c.add_argument("--gpu-timeout", type=seconds, default=3.0, metavar="S", help="limit for nvidia-smi (default 3 s)")
    c.add_argument("--service", default=None, metavar="URL",
                   help="also ask this resolution service (default $DOCTOR_SERVICE_URL); on any failure the local matrix "
                        "answers, and one line says so")
    add_common(c)
    c.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `doctor check`, print the report; with --fix apply the plan and re-check; with --undo put things back."""
    _validate(args)
    if args.undo:
        return _undo(args)
    report = _run(args)
    report, answer = _ask_service(report, args)
    if not (args.fix and args.json):  # --fix --json: one document at the end, with the plan and the re-check
        _render(report, args)
    if not args.fix:
        return report.exit_code
    return _fix(report, args, answer)


def _ask_service(report, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """With --service / DOCTOR_SERVICE_URL: the service's findings the local matrix lacks join the report, and its
    answer is kept for --fix; on any failure one line says the local matrix answers. No service: unchanged."""
    import os

    from doctor.envvars import DOCTOR_SERVICE_URL

    args.service_doc = None
    if args.service is None and not os.environ.get(DOCTOR_SERVICE_URL, "").strip():
        return report, None  # the fast path: not even the client module loads
    from doctor.service.client import ServiceError, ask, fallback_line, merged_findings, service_token, service_url

    url = service_url(args.service)
    if url is None:
        return report, None

    try:
        # a plan only for --fix: a plain check never waits on a service's resolver
        answer = ask(url, report.facts, token=service_token(), plan=bool(getattr(args, "fix", False)))
    except ServiceError as exc:
        print(fallback_line(url, exc), file=sys.stderr)
        args.service_doc = {"url": url, "used": False, "reason": str(exc)}
        return report, None
    merged = merged_findings(report.findings, answer)
    print(f"doctor: asked the service {url} (matrix {answer.matrix_version}, {answer.mode}): "
          f"{len(merged) - len(report.findings)} finding(s) the local matrix does not have", file=sys.stderr)
    args.service_doc = {"url": url, "used": True, "mode": answer.mode, "matrix_version": answer.matrix_version,
                        "added": len(merged) - len(report.findings)}
    return report._replace(findings=merged), answer


def _validate(args: argparse.Namespace) -> None:
    """DoctorError (exit 3) for options that make no sense together or overrides that name nothing, before any work."""
    from doctor.commands.install import validate_plan_options
    from doctor.dispatch import validate_overrides

    if args.fix and args.undo:
        raise DoctorError("--fix and --undo contradict each other")
    if args.undo and args.script:
        raise DoctorError("--script does not apply with --undo")
    if args.undo and args.service:
        raise DoctorError("--service does not apply with --undo (it puts back what was saved here)")
    if args.service is not None:
        from doctor.service.client import service_url

        service_url(args.service)  # a malformed URL is bad input now, before any work
    if not (args.fix or args.undo):
        for flag in ("dry_run", "yes"):
            if getattr(args, flag):
                raise DoctorError(f"--{flag.replace('_', '-')} only applies with --fix or --undo")
    if not args.fix:
        for flag in ("offline", "allow_unverified", "torch", "cuda"):
            if getattr(args, flag) not in (None, False):
                raise DoctorError(f"--{flag.replace('_', '-')} only applies with --fix")
    if args.cuda is not None and args.torch is None:
        raise DoctorError("--cuda only applies with --torch (the build of that torch release)")
    validate_plan_options(args)
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
        from doctor.report.json import check_document, dumps

        doc = check_document(report)
        if getattr(args, "service_doc", None) is not None:
            doc["service"] = args.service_doc
        sys.stdout.write(dumps(doc) + "\n")
    elif args.markdown:
        from doctor.report.markdown import to_markdown

        sys.stdout.write(to_markdown(report))
    else:
        from doctor.report.text import render_text

        render_text(report, console(args), verbose=args.verbose)


def _fix(report, args: argparse.Namespace, answer=None) -> int:  # type: ignore[no-untyped-def]
    """Plan the package fixes (verified), show them with the other steps, confirm, apply, re-check; with a service's
    answer, the plan is re-derived locally from its exact pins (pip's resolver and the local rules verify it)."""
    from doctor.actions import PipInstall, PipUninstall
    from doctor.commands.install import _echo, carry_out, render_after
    from doctor.compat_matrix.loader import load_matrix
    from doctor.fix import plan
    from doctor.resolve.options import PlanOptions, default_indexes
    from doctor.resolve.planner import plan_fixes

    echo = _echo(args)
    indexes = default_indexes()
    python = report.facts.python.executable if args.python else None
    options = PlanOptions(python=python, indexes=indexes, offline=args.offline, torch=args.torch, cuda=args.cuda)
    package_plan = None
    if answer is not None:
        from doctor.resolve.planner import plan_install
        from doctor.service.client import exact_requirements

        pins = exact_requirements(answer)
        if pins:
            against = "the index" if answer.mode == "index" else "its matrix"
            echo(f"the service's plan ({answer.plan_status} against {against}): {' '.join(pins)}; re-derived and "
                 "verified here")
            package_plan = plan_install(report.facts, load_matrix(), pins, options)
        else:
            echo("the service's plan has no exact install to re-derive; planned here")
    if package_plan is None:
        package_plan = plan_fixes(report.facts, load_matrix(), report.findings, options)
    # package changes come from the verified plan; the findings' own steps only for the rest (caches, manual)
    steps = [s for s in plan(report.findings) if not isinstance(s.action, (PipInstall, PipUninstall))]
    out = carry_out(package_plan, report, args, echo, "check --fix", indexes, lambda: _run(args), steps,
                    idle_code=report.exit_code, unconfirmed_code=report.exit_code)
    if args.json:
        from doctor.report.json import dumps, fix_document

        doc = fix_document(report, out)
        if getattr(args, "service_doc", None) is not None:
            doc["service"] = args.service_doc
        sys.stdout.write(dumps(doc) + "\n")
    else:
        render_after(out, args, echo)
    return out.exit_code


def _undo(args: argparse.Namespace) -> int:
    """Put back the last applied plan's "before" (saved versions, from their indexes), then re-check."""
    from doctor.commands.install import _echo
    from doctor.fix import apply_undo, confirm, pip_runs
    from doctor.inventory import gather
    from doctor.report.plan import render_applied, render_undo
    from doctor.resolve.options import default_indexes
    from doctor.resolve.undo import UNDONE, Store, finish, last_record, undo_plan

    echo = _echo(args)
    facts = gather(gpu_timeout=args.gpu_timeout, python=args.python)
    store = Store(facts.python.prefix, facts.python.executable)
    record = last_record(store)
    if record is None:
        raise DoctorError(f"nothing to undo: no plan applied by the doctor is recorded for {facts.python.prefix}")
    indexes = default_indexes()
    if indexes.torch_index_url:
        base = indexes.torch_index_url
    else:
        from doctor.compat_matrix.loader import load_matrix

        base = load_matrix().torch_index_url
    undo = undo_plan(record, facts, base, indexes.index_url)
    python = facts.python.executable if args.python else None
    runs = pip_runs(undo.actions, python, facts.python.prefix)
    render_undo(undo, echo, runs)
    applied = None
    if not undo.actions:
        if not args.dry_run:
            finish(store, record.id, UNDONE)
    elif args.dry_run:
        echo("dry run: nothing was changed.")
    elif not args.yes and not confirm("put these back? [y/N] "):
        echo("not applied (no confirmation; rerun with --yes to apply without asking).")
        return ExitCode.BAD_INPUT
    else:
        applied = apply_undo(undo, store, indexes, python, facts.python.prefix, echo)
        render_applied(applied, echo)
        if not applied.ok:
            echo("the record is kept: `doctor check --undo` again retries from what is installed then")
    after = None
    if not args.dry_run:
        echo("\nre-checking:")
        after = _run(args)
    code = int(ExitCode.CHANGE_FAILED if applied is not None and not applied.ok
               else (after.exit_code if after is not None else ExitCode.HEALTHY))
    if args.json:
        from doctor.report.json import dumps, undo_document

        sys.stdout.write(dumps(undo_document(undo, runs, applied, after, code)) + "\n")
    elif after is not None:
        _render(after, args)
    return code
