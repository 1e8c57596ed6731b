"""`doctor probe`: run kernels and attention backends on the real GPU, isolated; verdicts and dispatch table."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Tuple

from doctor.commands import add_common, count_at_least, seconds
from doctor.errors import DoctorError
from doctor.exits import COMMON, ExitCode, epilog

if TYPE_CHECKING:
    from rich.console import Console

    from doctor.facts import GPU

EXIT_CODES = epilog(COMMON, notes=("--list: always 0",
                                   "--distributed: 2 when a rank hung, died or got a wrong result; 1 when only the link grade is low",
                                   "--all-gpus: the worst finding over every GPU; 2 when a GPU fails probes that pass on the "
                                   "others, 1 when one is much slower than its model's others; 0 when no GPU is visible"))


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
                   help="the GPU to probe, by its nvidia-smi index (as --all-gpus names it); under CUDA_VISIBLE_DEVICES it "
                        "must be one that leaves visible; the probes see that GPU alone (by UUID when known)")
    p.add_argument("--all-gpus", action="store_true",
                   help="the probes on every visible GPU (CUDA_VISIBLE_DEVICES respected), the GPUs side by side, each GPU "
                        "named by index and UUID: a GPU that fails what the others pass, or is much slower, is pointed at")
    p.add_argument("--jobs", type=count_at_least(1), default=3, metavar="N",
                   help="probe processes at once (default 3; 1 for undisturbed timings); with --all-gpus, on each GPU")
    p.add_argument("--list", action="store_true", help="list the catalogue and exit")
    p.add_argument("--distributed", action="store_true",
                   help="all-reduce/all-gather correctness and bus bandwidth across processes through torch.distributed "
                        "(NCCL, one process per GPU; without GPUs: gloo over CPU processes)")
    p.add_argument("--nproc", type=count_at_least(1), default=None, metavar="N",
                   help="ranks for --distributed (default: one per visible GPU, or 2 CPU processes)")
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
    if args.distributed or args.nproc is not None:
        return _run_distributed(args, out)
    if args.all_gpus:
        return _run_all_gpus(args, out)
    if args.list:
        render_catalogue(out, CATALOGUE)
        return ExitCode.HEALTHY
    dispatch.validate_overrides()  # a DOCTOR_BACKEND_* typo is bad input before any probe runs
    if args.only and not select(args.only):
        raise DoctorError(f"no probe matches {' '.join(args.only)} (see doctor probe --list)")
    facts = gather()
    if args.gpu is not None:
        from doctor.probes.gpus import gpu_choice_problem

        problem = gpu_choice_problem(facts.hardware.gpus, os.environ, args.gpu)
        if problem:
            raise DoctorError(f"--gpu {args.gpu}: {problem}")
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


def _run_all_gpus(args: argparse.Namespace, out: "Console") -> int:
    """`doctor probe --all-gpus`: the suite on each visible GPU, a row per GPU, findings that point at a bad GPU."""
    from doctor import dispatch
    from doctor.inventory import gather
    from doctor.probes.all_gpus import run_all_gpus
    from doctor.probes.catalogue import select
    from doctor.probes.compare import compare_gpus
    from doctor.probes.gpus import visible_gpus
    from doctor.report.console import console
    from doctor.report.probe import render_all_gpus
    from doctor.report.progress import live_progress
    from doctor.report_data import exit_code_for

    clash = [o for o, on in (("--gpu", args.gpu is not None), ("--list", args.list)) if on]
    if clash:
        raise DoctorError(f"--all-gpus does not combine with {', '.join(clash)}")
    dispatch.validate_overrides()
    if args.only and not select(args.only):
        raise DoctorError(f"no probe matches {' '.join(args.only)} (see doctor probe --list)")
    facts = gather()
    visible = visible_gpus(facts.hardware.gpus, os.environ)
    if visible.problem:
        raise DoctorError(visible.problem)
    if not visible.gpus:  # as `doctor probe` without a GPU: nothing can fail, exit 0
        line = "no GPU visible: " + ("; ".join(visible.notes) or "no NVIDIA GPU found")
        if args.json:
            from doctor.probes.all_gpus import AllGpuRun
            from doctor.report.json import all_gpus_document, dumps

            sys.stdout.write(dumps(all_gpus_document(AllGpuRun((), (line,), 0.0), [], [], 0)) + "\n")
        else:
            out.print(line)
        return ExitCode.HEALTHY
    total = len(select(args.only)) * len(visible.gpus)
    cb, stop = (None, lambda: None) if args.json else live_progress(console(args, stderr=True), total)
    try:
        run = run_all_gpus(facts, visible, only=args.only, timeout=args.timeout, refresh=args.refresh, progress=cb,
                           jobs=args.jobs)
    finally:
        stop()
    findings = compare_gpus(run, facts, _matrix())
    code = int(exit_code_for(findings))
    if args.json:
        from doctor.report.json import all_gpus_document, dumps

        choices = [dispatch.table(gr.run.results) for gr in run.runs]
        sys.stdout.write(dumps(all_gpus_document(run, choices, findings, code)) + "\n")
        return code
    render_all_gpus(out, run, findings, verbose=args.verbose)
    return code


MAX_CPU_RANKS = 64  # gloo ranks on one machine: more is a typo, not a test


def _run_distributed(args: argparse.Namespace, out: "Console") -> int:
    """`doctor probe --distributed [--nproc N]`: the ranks on this machine, verdicts naming each rank."""
    from doctor.inventory import gather
    from doctor.probes.distributed.findings import distributed_findings
    from doctor.probes.distributed.launcher import run_distributed
    from doctor.probes.gpus import visible_gpus
    from doctor.report.console import console
    from doctor.report.distributed import distributed_document, render_distributed
    from doctor.report_data import exit_code_for

    if not args.distributed:
        raise DoctorError("--nproc needs --distributed")
    clash = [o for o, on in (("--list", args.list), ("--only", bool(args.only)), ("--gpu", args.gpu is not None),
                             ("--refresh", args.refresh), ("--all-gpus", args.all_gpus)) if on]
    if clash:
        raise DoctorError(f"--distributed does not combine with {', '.join(clash)}")
    facts = gather()
    if facts.dist("torch") is None:
        raise DoctorError("--distributed needs torch (torch.distributed), which is not installed here")
    shown: Tuple[GPU, ...] = ()
    if facts.hardware.gpus and facts.hardware.source != "override":  # simulated GPUs (DOCTOR_GPUS): the gloo path
        seen = visible_gpus(facts.hardware.gpus, facts.env)  # CUDA_VISIBLE_DEVICES read as CUDA reads it
        if seen.problem:
            raise DoctorError(seen.problem)
        shown = seen.gpus
    gpus = len(shown)
    nccl = bool(gpus and facts.torch is not None and facts.torch.cuda)
    # GPU path (NCCL, one rank per visible GPU) is untested in CI: no GPU there.
    nproc = args.nproc if args.nproc is not None else (gpus if nccl else 2)
    if nccl and nproc > gpus:
        raise DoctorError(f"--nproc {nproc}: only {gpus} GPU(s) visible (NCCL runs one rank per GPU)")
    if not nccl and nproc > MAX_CPU_RANKS:
        raise DoctorError(f"--nproc {nproc}: at most {MAX_CPU_RANKS} CPU processes")
    backend = "nccl" if nccl else "gloo"
    timeout = args.timeout if args.timeout is not None else (60.0 if nccl else 30.0)
    if not args.json:
        console(args, stderr=True).print(f"distributed probe: {nproc} {backend} ranks on this machine ...")
    run = run_distributed(nproc, backend, timeout=timeout, gpu_name=shown[0].name if nccl else "")
    findings = distributed_findings(run)
    code = int(exit_code_for(findings))
    if args.json:
        from doctor.report.json import dumps

        sys.stdout.write(dumps(distributed_document(run, findings, code)) + "\n")
        return code
    render_distributed(out, run, verbose=args.verbose)
    return code


def _matrix():  # type: ignore[no-untyped-def]
    """The compatibility matrix, for fixes that name versions (None if it cannot load)."""
    from doctor.compat_matrix.loader import load_matrix

    try:
        return load_matrix()
    except DoctorError:
        return None
