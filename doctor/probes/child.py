"""The child side of a probe run: `python -m doctor.probes.child JOB_JSON`.

Events go out on the channel of doctor._util.events (JSON lines on an inherited descriptor, never
stdout: a library printing there cannot corrupt the protocol): start, ready (after importing torch),
begin <id>, result <id>, done. Everything the child prints lands in its log, whose tail the runner keeps.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any, Callable, Dict, Optional

from doctor._util.events import open_channel
from doctor.probes.spec import ProbeContext


def resolve(target: str) -> Callable[..., Any]:
    """'package.module:function' -> the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _number(value: Any) -> Optional[float]:
    """A finite-or-not float from a body's number (NaN stays NaN: it means a wrong result)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {value!r}") from None


def run_one(spec: Dict[str, Any], device: str) -> Dict[str, Any]:
    """Run one body and turn what it returned (or raised) into a result record."""
    t0 = time.perf_counter()
    try:
        fn = resolve(spec["target"])
        ret = fn(ProbeContext(device=device, params=spec.get("params") or {}, seed=int(spec.get("seed", 0))))
    except BaseException as exc:  # the body's failure is the verdict
        traceback.print_exc()
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}".strip()[:2000],
                "time_ms": (time.perf_counter() - t0) * 1000}
    elapsed = (time.perf_counter() - t0) * 1000
    if not isinstance(ret, dict):
        return {"status": "error", "detail": f"probe body returned {type(ret).__name__}, not a result dict: {ret!r}"[:500],
                "time_ms": elapsed}
    status = ret.get("status")
    if status == "skipped":
        return {"status": "skipped", "detail": str(ret.get("detail", ""))[:2000], "time_ms": elapsed}
    try:
        error, tol, t_op = _number(ret.get("error")), _number(ret.get("tolerance")), _number(ret.get("time_ms"))
    except ValueError as exc:
        return {"status": "error", "detail": f"probe body returned garbage: {exc}"[:500], "time_ms": elapsed}
    return {"status": "pass", "error": error, "tolerance": tol, "detail": str(ret.get("detail", ""))[:2000],
            "time_ms": t_op if t_op is not None else elapsed}


def main(argv: Optional[list] = None) -> int:
    """Run the probes of one job, reporting each on the event channel."""
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(args[0])
    channel = open_channel()  # from here on stdout joins stderr in the log
    emit = channel.emit
    emit(event="start", pid=os.getpid())
    device = "cpu"
    if job.get("needs_torch"):
        t0 = time.perf_counter()
        import torch

        if job.get("cuda") and torch.cuda.is_available():
            device = "cuda"
            torch.cuda.init()
        emit(event="ready", torch=torch.__version__, cuda=torch.version.cuda, device=device,
             import_s=round(time.perf_counter() - t0, 2))
    else:
        emit(event="ready", device=device)
    for spec in job["probes"]:
        emit(event="begin", id=spec["id"])
        if spec.get("needs_cuda") and device != "cuda":
            # metadata said CUDA; the runtime disagrees (driver too old, no device visible): that is the verdict
            emit(event="result", id=spec["id"], status="error",
                 detail="torch.cuda.is_available() is False in the probe process")
            continue
        emit(event="result", id=spec["id"], **run_one(spec, device))
    emit(event="done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
