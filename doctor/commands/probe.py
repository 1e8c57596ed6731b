"""`doctor probe`: run kernels and attention backends on the real GPU, isolated; verdicts and dispatch table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from doctor.commands import EXIT_CODES, add_common


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor probe` and its options."""
    p = sub.add_parser("probe", help="run each kernel/attention backend on the GPU in its own process and verify it",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=[], metavar="ID", help="probe ids or prefixes (e.g. sdpa xformers.mea)")
    p.add_argument("--json", action="store_true", help="machine-readable verdicts and dispatch table")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="limit per probe (default: each probe's own, 60 s for most)")
    p.add_argument("--refresh", action="store_true", help="ignore cached verdicts for this environment and run again")
    p.add_argument("--gpu", type=int, default=None, metavar="N", help="GPU index to probe (sets CUDA_VISIBLE_DEVICES for the probes)")
    p.add_argument("--jobs", type=int, default=3, metavar="N", help="probe processes at once (default 3; 1 for undisturbed timings)")
    p.add_argument("--list", action="store_true", help="list the catalogue and exit")
    add_common(p)
    p.set_defaults(run=run)








def run(args: argparse.Namespace) -> int:
    """Run the probes and print verdicts + dispatch table; exit 0/1/2 by the worst finding."""
    from rich.console import Console

    from doctor import dispatch
    from doctor.check import exit_code_for
    from doctor.inventory import gather
    from doctor.probes.session import run_probes
    from doctor.probes.catalogue import CATALOGUE, select
    from doctor.probes.findings import probe_findings
    from doctor.report.progress import live_progress
    from doctor.report.tables import dispatch_table_view, verdict_table

    out = Console(no_color=args.no_color or None, highlight=False)
    err = Console(stderr=True, no_color=args.no_color or None, highlight=False)
    if args.list:
        for s in CATALOGUE:
            out.print(f"{s.id:22} {s.title}" + (f"  [dim](needs {', '.join(s.requires)})[/dim]" if s.requires else ""))
        return 0
    if args.only and not select(args.only):
        from doctor.errors import DoctorError

        raise DoctorError(f"no probe matches {' '.join(args.only)} (see doctor probe --list)")
    if args.timeout is not None and not args.timeout > 0:
        from doctor.errors import DoctorError

        raise DoctorError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    if args.jobs < 1:
        from doctor.errors import DoctorError

        raise DoctorError(f"--jobs must be at least 1, not {args.jobs}")
    facts = gather()
    if args.gpu is not None and facts.hardware.gpus and args.gpu not in {g.index for g in facts.hardware.gpus}:
        from doctor.errors import DoctorError

        raise DoctorError(f"--gpu {args.gpu}: no such GPU (found {', '.join(str(g.index) for g in facts.hardware.gpus)})")
    total = len(select(args.only))
    cb, stop = (None, lambda: None) if args.json else live_progress(err, total)
    try:
        pr = run_probes(facts, only=args.only, timeout=args.timeout, refresh=args.refresh, gpu=args.gpu, progress=cb, jobs=args.jobs)
    finally:
        stop()
    choices = dispatch.table(pr.results)
    findings = probe_findings(pr.results, facts, _matrix(), choices)
    code = exit_code_for(findings)
    if args.json:
        sys.stdout.write(json.dumps({
            "schema_version": 1, "fingerprint": pr.fingerprint, "wall_s": round(pr.wall_s, 3), "exit_code": code,
            "ran": list(pr.ran), "cached": list(pr.cached),
            "results": [r.to_dict() for r in pr.results],
            "dispatch": [{"op": c.op, "backend": c.backend, "reason": c.reason,
                          "candidates": [{"backend": b, "status": s, "time_ms": t} for b, s, t in c.candidates]} for c in choices],
            "findings": [f.to_dict() for f in findings],
        }, indent=2) + "\n")
        return code
    out.print(verdict_table(pr.results))
    out.print(dispatch_table_view(choices))
    out.print(f"fingerprint {pr.fingerprint}: ran {len(pr.ran)}, reused {len(pr.cached)} cached verdicts, {pr.wall_s:.1f} s"
              + ("  (--refresh to run again)" if pr.cached else ""))
    return code


def _matrix():  # type: ignore[no-untyped-def]
    """The compatibility matrix, for fixes that name versions (None if it cannot load)."""
    from doctor.compat_matrix.loader import load_matrix
    from doctor.errors import DoctorError

    try:
        return load_matrix()
    except DoctorError:
        return None
