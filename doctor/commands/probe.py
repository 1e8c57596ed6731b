"""`doctor probe`: run kernels and attention backends on the real GPU, isolated; verdicts and dispatch table."""

from __future__ import annotations

import argparse
import sys

from doctor.commands import add_common, count_at_least, seconds
from doctor.errors import DoctorError
from doctor.exits import COMMON, ExitCode, epilog

EXIT_CODES = epilog(COMMON, notes=("--list: always 0",))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor probe` and its options."""
    p = sub.add_parser("probe", help="run each kernel/attention backend on the GPU in its own process and verify it",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=[], metavar="ID", help="probe ids or prefixes (e.g. sdpa xformers.mea)")
    p.add_argument("--json", action="store_true", help="machine-readable verdicts and dispatch table")
    p.add_argument("-v", "--verbose", action="store_true", help="the full detail and stderr tail of every verdict that did not pass")
    p.add_argument("--timeout", type=seconds, default=None, metavar="S", help="limit per probe (default: each probe's own, 60 s for most)")
    p.add_argument("--refresh", action="store_true", help="ignore cached verdicts for this environment and run again")
    p.add_argument("--gpu", type=count_at_least(0), default=None, metavar="N",
                   help="GPU index to probe (sets CUDA_VISIBLE_DEVICES for the probes)")
    p.add_argument("--jobs", type=count_at_least(1), default=3, metavar="N",
                   help="probe processes at once (default 3; 1 for undisturbed timings)")
    p.add_argument("--list", action="store_true", help="list the catalogue and exit")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the probes and print verdicts + dispatch table; exit 0/1/2 by the worst finding."""
    from doctor import dispatch
    from doctor.inventory import gather
    from doctor.probes.catalogue import CATALOGUE, select
    from doctor.probes.findings import probe_findings
    from doctor.probes.session import run_probes
    from doctor.report.console import console
    from doctor.report.probe import render_catalogue, render_probe_run
    from doctor.report.progress import live_progress
    from doctor.report_data import exit_code_for

    out = console(args)
    if args.list:
        render_catalogue(out, CATALOGUE)
        return ExitCode.HEALTHY
    dispatch.validate_overrides()  # a DOCTOR_BACKEND_* typo is bad input before any probe runs
    if args.only and not select(args.only):
        raise DoctorError(f"no probe matches {' '.join(args.only)} (see doctor probe --list)")
    facts = gather()
    if args.gpu is not None and facts.hardware.gpus and args.gpu not in {g.index for g in facts.hardware.gpus}:
        raise DoctorError(f"--gpu {args.gpu}: no such GPU (found {', '.join(str(g.index) for g in facts.hardware.gpus)})")
    total = len(select(args.only))
    cb, stop = (None, lambda: None) if args.json else live_progress(console(args, stderr=True), total)
    try:
        pr = run_probes(facts, only=args.only, timeout=args.timeout, refresh=args.refresh, gpu=args.gpu, progress=cb, jobs=args.jobs)
    finally:
        stop()
    choices = dispatch.table(pr.results)
    findings = probe_findings(pr.results, facts, _matrix(), choices)
    code = int(exit_code_for(findings))
    if args.json:
        from doctor.report.json import dumps, probe_document

        sys.stdout.write(dumps(probe_document(pr, choices, findings, code)) + "\n")
        return code
    render_probe_run(out, pr, choices, verbose=args.verbose)
    return code


def _matrix():  # type: ignore[no-untyped-def]
    """The compatibility matrix, for fixes that name versions (None if it cannot load)."""
    from doctor.compat_matrix.loader import load_matrix

    try:
        return load_matrix()
    except DoctorError:
        return None
