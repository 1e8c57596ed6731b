"""What each rank of the distributed probe runs: init, collective correctness, bus bandwidth.

Contract: the worker never decides a verdict; it reports events (ready, init, begin, result,
bandwidth, done) through `emit`: the doctor's event channel when launcher.py started it, a list
that rank 0 gathers when torchrun did (__main__.py). Every collective runs under the process
group's timeout (`init_process_group(timeout=...)`): with gloo a peer that hangs turns into an
exception here; with NCCL the watchdog (TORCH_NCCL_ASYNC_ERROR_HANDLING) aborts the rank and the
flight recorder dumps what was in flight. The launcher's own deadline is the backstop for both.

Correctness uses small integers, so every sum is exact in fp32 and bf16 (up to 128 ranks) in any
reduction order: any difference is a wrong result, never rounding. Bandwidth follows nccl-tests:
all-reduce algbw = bytes / time, busbw = algbw * 2(n-1)/n; all-gather bytes = the gathered total,
busbw = algbw * (n-1)/n (computed by verdicts.bandwidth_rows from every rank's time).

Test hooks (documented, read only here): DOCTOR_DIST_TEST_HANG_RANK=R makes rank R hang inside its
first collective; DOCTOR_DIST_TEST_DIE_RANK=R makes rank R exit with code 7 right after init.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from doctor.envvars import (DOCTOR_DIST_TEST_DIE_RANK, DOCTOR_DIST_TEST_HANG_RANK, LOCAL_RANK, NCCL_NVLS_ENABLE, RANK,
                            TORCH_NCCL_ASYNC_ERROR_HANDLING, TORCH_NCCL_DEBUG_INFO_TEMP_FILE, TORCH_NCCL_DUMP_ON_TIMEOUT,
                            TORCH_NCCL_TRACE_BUFFER_SIZE, WORLD_SIZE)

Emit = Callable[..., None]
DTYPES = ("float32", "bfloat16")
CHECK_COUNTS = (1, 1023, 65536)  # elements: a scalar, an odd size, a size that takes the chunked paths
CPU_BW_BYTES = (4096, 262144, 4194304)  # gloo on CPU: small, or a CI run takes minutes
GPU_BW_BYTES = (1 << 20, 1 << 24, 1 << 28)  # NCCL: up to 256 MiB, where busbw reaches the link's plateau
DIE_EXIT_CODE = 7
FLIGHT_RECORD_ENTRIES = "2000"
INIT_MIN_S = 60.0  # rendezvous waits for the slowest rank's `import torch`: a short --timeout must not fail it


def nccl_defaults(dump_prefix: str) -> Dict[str, str]:
    """NCCL settings the probe wants unless the user set them: NVLink multicast off, async errors, flight recorder."""
    # GPU-only path: untested in CI (no GPU there); names and values per torch's ProcessGroupNCCL docs.
    return {NCCL_NVLS_ENABLE: "0", TORCH_NCCL_ASYNC_ERROR_HANDLING: "1", TORCH_NCCL_DUMP_ON_TIMEOUT: "1",
            TORCH_NCCL_TRACE_BUFFER_SIZE: FLIGHT_RECORD_ENTRIES, TORCH_NCCL_DEBUG_INFO_TEMP_FILE: dump_prefix}


def default_job(backend: str, timeout: float) -> Dict[str, Any]:
    """The job every rank runs: backend, process-group timeout, sizes, dtypes."""
    return {"backend": backend, "timeout": timeout, "counts": list(CHECK_COUNTS), "dtypes": list(DTYPES),
            "bw_bytes": list(GPU_BW_BYTES if backend == "nccl" else CPU_BW_BYTES), "iters": 5}


def _hook_rank(name: str) -> Optional[int]:
    """The rank a test hook names (None when unset or not a number)."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _pattern(torch: Any, count: int, rank: int, dtype: Any, device: Any) -> Any:
    """Rank r's tensor: (i + r) % 3, small integers whose sums stay exact in bf16."""
    return ((torch.arange(count, device=device) + rank) % 3).to(dtype)


def _exact_limit(dtype_name: str) -> int:
    """The largest integer every value up to which the dtype holds exactly."""
    return 256 if dtype_name == "bfloat16" else 1 << 24


def _tolerance(dtype_name: str, world: int) -> float:
    """0 while every sum is exact (2n <= the exact limit), else the dtype's relative rounding."""
    return 0.0 if 2 * world <= _exact_limit(dtype_name) else (2.0 ** -7 if dtype_name == "bfloat16" else 2.0 ** -23)


def _check(torch: Any, dist: Any, collective: str, count: int, dtype_name: str, rank: int, world: int, device: Any,
           group: Any) -> float:
    """Run one collective on the pattern and return the max relative error against the exact answer."""
    dtype = getattr(torch, dtype_name)
    if collective == "all_reduce":
        t = _pattern(torch, count, rank, dtype, device)
        dist.all_reduce(t, group=group)
        want = sum(_pattern(torch, count, r, torch.float64, device) for r in range(world))
        got = t.to(torch.float64)
    else:
        mine = _pattern(torch, count, rank, dtype, device)
        outs = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(outs, mine, group=group)
        want = torch.cat([_pattern(torch, count, r, torch.float64, device) for r in range(world)])
        got = torch.cat(outs).to(torch.float64)
    return float(((got - want).abs() / want.abs().clamp_min(1.0)).max().item())


def _sync(torch: Any, device: Any) -> None:
    """Wait for the GPU (timings must include the collective, not its launch)."""
    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def _bandwidth(torch: Any, dist: Any, collective: str, nbytes: int, world: int, iters: int, device: Any, group: Any) -> float:
    """Microseconds per collective of `nbytes` (all-gather: the gathered total), after one warm-up."""
    per_rank = max(1, nbytes // 4 // (world if collective == "all_gather" else 1))
    t = torch.ones(per_rank, dtype=torch.float32, device=device)
    outs = [torch.empty_like(t) for _ in range(world)]

    def once() -> None:
        if collective == "all_reduce":
            dist.all_reduce(t, group=group)
        else:
            dist.all_gather(outs, t, group=group)

    once()
    _sync(torch, device)
    dist.barrier(group=group)
    t0 = time.perf_counter()
    for _ in range(iters):
        once()
    _sync(torch, device)
    return (time.perf_counter() - t0) / iters * 1e6


def run_rank(job: Mapping[str, Any], emit: Emit, env: Optional[Mapping[str, str]] = None, keep_group: bool = False) -> bool:
    """Run the probe as this rank (RANK/WORLD_SIZE/MASTER_* from env); True when every step passed."""
    environ = os.environ if env is None else env
    rank, world = int(environ.get(RANK, "0")), int(environ.get(WORLD_SIZE, "1"))
    t0 = time.perf_counter()
    import torch
    import torch.distributed as dist

    backend = str(job.get("backend", "gloo"))
    device: Any = torch.device("cpu")
    if backend == "nccl":  # GPU-only path: untested in CI
        device = torch.device("cuda", int(environ.get(LOCAL_RANK, "0")))
        torch.cuda.set_device(device)
    emit(event="ready", rank=rank, pid=os.getpid(), torch=torch.__version__, device=str(device),
         import_s=round(time.perf_counter() - t0, 2))
    emit(event="begin", rank=rank, check="init", dtype="")
    t1 = time.perf_counter()
    timeout = float(job.get("timeout", 30.0))
    try:
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=max(timeout, INIT_MIN_S)))
        # the collectives run in a group with the short timeout: a hung peer is noticed in `timeout` s
        group = dist.new_group(timeout=datetime.timedelta(seconds=timeout)) if timeout < INIT_MIN_S else None
    except Exception as exc:  # the rendezvous failed: that is the verdict
        traceback.print_exc()
        emit(event="result", rank=rank, check="init", dtype="", status="error",
             detail=f"init_process_group({backend}) failed: {type(exc).__name__}: {exc}"[:2000])
        return False
    emit(event="result", rank=rank, check="init", dtype="", status="pass", error=0.0, tolerance=0.0,
         time_ms=(time.perf_counter() - t1) * 1000, detail=f"{backend}, {world} ranks")
    if _hook_rank(DOCTOR_DIST_TEST_DIE_RANK) == rank:
        print(f"test hook {DOCTOR_DIST_TEST_DIE_RANK}: rank {rank} exits with code {DIE_EXIT_CODE}", file=sys.stderr, flush=True)
        os._exit(DIE_EXIT_CODE)
    ok = _run_checks(torch, dist, job, emit, rank, world, device, group)
    if not keep_group:
        dist.destroy_process_group()
    return ok


def _run_checks(torch: Any, dist: Any, job: Mapping[str, Any], emit: Emit, rank: int, world: int, device: Any,
                group: Any) -> bool:
    """Correctness per (collective, dtype) over every size, then bandwidth; stops at the first failure."""
    hang = _hook_rank(DOCTOR_DIST_TEST_HANG_RANK) == rank
    ok = True
    counts: Sequence[int] = job.get("counts") or CHECK_COUNTS
    for collective in ("all_reduce", "all_gather"):
        for dtype_name in job.get("dtypes") or DTYPES:
            emit(event="begin", rank=rank, check=collective, dtype=dtype_name)
            if hang:  # the test hook: a rank stuck inside a collective, as a broken link leaves it
                while True:
                    time.sleep(3600)
            tol = _tolerance(dtype_name, world)
            t0 = time.perf_counter()
            try:
                err = max(_check(torch, dist, collective, c, dtype_name, rank, world, device, group) for c in counts)
            except Exception as exc:  # a peer gone or timed out: the group is unusable from here on
                traceback.print_exc()
                emit(event="result", rank=rank, check=collective, dtype=dtype_name, status="error",
                     detail=f"{type(exc).__name__}: {exc}".strip()[:2000])
                return False
            status = "pass" if err <= tol else "wrong-result"
            ok = ok and status == "pass"
            emit(event="result", rank=rank, check=collective, dtype=dtype_name, status=status, error=err, tolerance=tol,
                 time_ms=(time.perf_counter() - t0) * 1000,
                 detail=f"{len(counts)} sizes ({', '.join(map(str, counts))} elements), {world} ranks")
    for collective in ("all_reduce", "all_gather"):
        for nbytes in job.get("bw_bytes") or CPU_BW_BYTES:
            emit(event="begin", rank=rank, check=f"{collective}.bandwidth", dtype="float32", bytes=nbytes)
            try:
                us = _bandwidth(torch, dist, collective, int(nbytes), world, int(job.get("iters", 5)), device, group)
            except Exception as exc:
                traceback.print_exc()
                emit(event="result", rank=rank, check=f"{collective}.bandwidth", dtype="float32", status="error",
                     detail=f"{type(exc).__name__}: {exc}".strip()[:2000])
                return False
            emit(event="bandwidth", rank=rank, collective=collective, bytes=int(nbytes), time_us=us)
    return ok


def collector(into: List[Dict[str, Any]]) -> Emit:
    """An emit that keeps events in a list (torchrun: rank 0 gathers them)."""

    def emit(**event: Any) -> None:
        into.append(event)

    return emit


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m doctor.probes.distributed.worker JOB_JSON`, started by the launcher with an event channel."""
    import json

    from doctor._util.events import open_channel

    args = sys.argv[1:] if argv is None else argv
    job = json.loads(args[0])
    channel = open_channel()  # stdout joins stderr in the log from here on
    ok = run_rank(job, channel.emit)
    channel.emit(event="done", ok=ok)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
