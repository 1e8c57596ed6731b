"""`torchrun --nnodes N --nproc-per-node G --max-restarts 0 -m doctor.probes.distributed [--out F] [--timeout S]`.

Every rank runs the same worker as `doctor probe --distributed`; rank 0 gathers every rank's events
(gather_object over the same process group), writes one merged report (JSON, --out) and prints the
verdicts. Without the launcher's deadlines, a rank that hangs is caught only by the process group's
timeout: rank 0 then reports its own error and the ranks it heard from (and says the gather failed);
torchrun ends the rest. With NCCL, TORCH_NCCL_ASYNC_ERROR_HANDLING tears a timed-out rank down, so
rank 0 itself may be the one that cannot write: torchrun's own error summary then names the rank.
GPU (NCCL) and multi-node use are untested in CI: it runs there over gloo on CPU processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional

from doctor.envvars import RANK, WORLD_SIZE
from doctor.probes.distributed.launcher import DistRun, transport_settings
from doctor.probes.distributed.verdicts import RankOutcome, bandwidth_rows, rank_verdicts
from doctor.probes.distributed.worker import collector, default_job, nccl_defaults, run_rank


def _backend(requested: str) -> str:
    """nccl when asked, or when 'auto' and CUDA is available; else gloo."""
    if requested != "auto":
        return requested
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def main(argv: Optional[List[str]] = None) -> int:
    """Run this rank; rank 0 writes the merged report. Exit 0 when every verdict passed, 2 otherwise."""
    p = argparse.ArgumentParser(prog="python -m doctor.probes.distributed")
    p.add_argument("--out", default="doctor-distributed.json", help="where rank 0 writes the merged JSON report")
    p.add_argument("--timeout", type=float, default=60.0, help="process-group timeout in seconds")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto")
    args = p.parse_args(argv)
    if RANK not in os.environ or WORLD_SIZE not in os.environ:
        print("run me under torchrun (RANK/WORLD_SIZE unset); on one machine use `doctor probe --distributed`", file=sys.stderr)
        return 3
    backend = _backend(args.backend)
    if backend == "nccl":  # GPU-only path: untested in CI
        for k, v in nccl_defaults(os.path.join(tempfile.gettempdir(), "doctor_nccl_trace_rank_")).items():
            os.environ.setdefault(k, v)
    rank, world = int(os.environ[RANK]), int(os.environ[WORLD_SIZE])
    events: List[Dict[str, Any]] = []
    ok = run_rank(default_job(backend, args.timeout), collector(events), keep_group=True)
    events.append({"event": "done", "ok": ok})
    gathered: List[Any] = [None] * world
    note = ""
    import torch.distributed as dist

    try:
        if dist.is_initialized():
            dist.gather_object(events, gathered if rank == 0 else None, dst=0)
            dist.destroy_process_group()
    except Exception as exc:  # a peer gone: rank 0 reports what it has
        note = f"gather failed ({type(exc).__name__}: {exc}); only rank 0's events are in this report"
    if rank != 0:
        return 0
    if gathered[0] is None:
        gathered = [events] + [None] * (world - 1)
    outcomes = [RankOutcome(r, tuple(ev), 0, False, 0.0) for r, ev in enumerate(gathered) if ev is not None]
    results = rank_verdicts(outcomes, backend, os.environ, args.timeout)
    run = DistRun(backend, world, tuple(results), tuple(bandwidth_rows(outcomes, world)),
                  transport_settings(backend, os.environ), args.timeout, 0.0)
    doc = {**run.to_dict(), "note": note}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    for r in run.results:
        print(f"{r.id:28} {r.backend:14} {r.status:12} {r.detail[:100]}")
    for b in run.bandwidth:
        print(f"{b.collective:10} {b.bytes:>12} B  {b.time_us:10.1f} us  algbw {b.algbw_gbs:8.3f} GB/s  busbw {b.busbw_gbs:8.3f} GB/s")
    if note:
        print(note)
    print(f"report written to {args.out}")
    return 0 if run.passed and not note else 2


if __name__ == "__main__":
    raise SystemExit(main())
