"""Run probes in child processes with timeouts; every way a child can fail becomes a verdict.

A group of probes shares one child (torch is imported once). The child reports begin/result events
on a dedicated pipe; the runner enforces a deadline per probe. When a child crashes, hangs or
garbles its channel, the probe in flight gets that verdict and the rest of the group goes on in a
fresh child. The doctor itself never imports torch.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from doctor._util.proc import EventChild, signal_name
from doctor.facts import Facts
from doctor.probes.spec import ProbeSpec
from doctor.verdicts import ProbeResult

IMPORT_TIMEOUT = 180.0  # a cold `import torch` on a network filesystem can take a minute
TAIL_CHARS = 2000
CUDA_MARKERS = ("CUDA error", "CUDA_ERROR", "device-side assert", "cudaError", "no kernel image", "illegal memory access",
                "out of memory", "NCCL error", "PTX", "ptxas")
Progress = Callable[[str, Optional[ProbeResult]], None]  # (probe id, result or None when it starts)


def unmet_requirement(spec: ProbeSpec, facts: Facts, gpu_cc: Optional[Tuple[int, int]]) -> Optional[str]:
    """Why a probe cannot run here (read from Facts, no imports), or None."""
    for name in spec.requires:
        if facts.dist(name) is None:
            return f"{name} is not installed"
    if spec.needs_torch and facts.dist("torch") is None:
        return "torch is not installed"
    if spec.needs_cuda:
        if facts.hardware.source == "override":
            return "simulated hardware (DOCTOR_GPUS / DOCTOR_DRIVER_VERSION): probes need the real GPU"
        if facts.torch is None or not facts.torch.cuda:
            return "torch is not a CUDA build"
        if not facts.hardware.gpus:
            return "no NVIDIA GPU found"
        if spec.min_cc and gpu_cc is not None and gpu_cc < spec.min_cc:
            return f"needs compute capability >= {spec.min_cc[0]}.{spec.min_cc[1]}, the GPU has {gpu_cc[0]}.{gpu_cc[1]}"
    return None


def _cuda_hint(tail: str) -> str:
    """The first line of the log that names a CUDA failure, for the verdict's detail."""
    for line in tail.splitlines():
        if any(m in line for m in CUDA_MARKERS):
            return line.strip()[:300]
    return ""


def _number(value: object) -> Optional[float]:
    """A JSON number as a float (NaN stays NaN: it means a wrong result); anything else is None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _verdict(spec: ProbeSpec, ev: Mapping[str, object], tail: str) -> ProbeResult:
    """A result event -> ProbeResult; a pass whose error exceeds its tolerance is a wrong result."""
    status = str(ev.get("status", "error"))
    error, tol = _number(ev.get("error")), _number(ev.get("tolerance"))
    detail = str(ev.get("detail", ""))
    if status == "pass":
        if error is None or tol is None:
            status, detail = "error", f"probe reported no error/tolerance to judge: {detail}"
        elif not (error <= tol):  # NaN fails too
            status = "wrong-result"
    hint = _cuda_hint(tail) if status == "error" else ""
    return ProbeResult(
        id=spec.id, backend=spec.backend, op=spec.op, status=status, error=error, tolerance=tol,
        time_ms=_number(ev.get("time_ms")),
        detail=(detail + (f" [{hint}]" if hint and hint not in detail else ""))[:2000],
        stderr_tail=tail if status not in ("pass", "skipped") else "",
    )


def _start_child(specs: Sequence[ProbeSpec], env: Mapping[str, str], cuda: bool, seed: int, python: str) -> EventChild:
    """One child process that runs `specs` in turn (`python -m doctor.probes.child JOB_JSON`)."""
    job = {"needs_torch": any(s.needs_torch for s in specs), "cuda": cuda,
           "probes": [{"id": s.id, "target": s.target, "params": dict(s.params), "seed": seed,
                       "needs_cuda": s.needs_cuda} for s in specs]}
    return EventChild([python, "-m", "doctor.probes.child", json.dumps(job)], env)


def run_group(specs: Sequence[ProbeSpec], env: Mapping[str, str], cuda: bool, timeout: Optional[float] = None,
              seed: int = 0, progress: Optional[Progress] = None, python: Optional[str] = None) -> List[ProbeResult]:
    """Run probes in as few children as possible (with `python`, default this interpreter); a child's death costs only the probe in flight."""
    results: Dict[str, ProbeResult] = {}
    pending = list(specs)
    while pending:
        try:
            child = _start_child(pending, env, cuda, seed, python or sys.executable)
        except OSError as exc:  # the interpreter is gone or not executable: every probe left shares the verdict
            for v in pending:
                results[v.id] = ProbeResult(v.id, v.backend, "error", op=v.op,
                                            detail=f"cannot start the probe process: {exc.strerror or exc}")
            break
        current: Optional[ProbeSpec] = None
        ready = False
        deadline = time.monotonic() + IMPORT_TIMEOUT
        with child:
            while True:
                kind, ev = child.next_event(deadline)
                if kind == "event" and ev is not None:
                    name = ev.get("event")
                    if name == "ready":
                        ready = True
                    elif name == "begin":
                        current = next((s for s in pending if s.id == ev.get("id")), None)
                        if current is not None:
                            deadline = time.monotonic() + (timeout if timeout is not None else current.timeout)
                            if progress:
                                progress(current.id, None)
                    elif name == "result" and current is not None and ev.get("id") == current.id:
                        r = _verdict(current, ev, child.tail(TAIL_CHARS))
                        results[current.id] = r
                        pending.remove(current)
                        if progress:
                            progress(current.id, r)
                        current = None
                        deadline = time.monotonic() + IMPORT_TIMEOUT  # until the next begin
                        if r.status == "error" and _cuda_hint(r.detail + "\n" + r.stderr_tail):
                            break  # a CUDA error can poison the context: the rest go on in a fresh child
                    elif name == "done":
                        break
                    continue
                r = _failure(child, kind, ev, current, ready, timeout)
                # before the first probe (torch import failed or hung) every probe shares the verdict
                victims = [current] if current is not None else (list(pending) if not ready else pending[:1])
                for v in victims:
                    rv = r._replace(id=v.id, backend=v.backend, op=v.op)
                    results[v.id] = rv
                    pending.remove(v)
                    if progress:
                        progress(v.id, rv)
                break
    return [results[s.id] for s in specs]


def _failure(child: EventChild, kind: str, ev: Optional[dict], current: Optional[ProbeSpec], ready: bool,
             timeout: Optional[float]) -> ProbeResult:
    """The verdict for the probe in flight when the child garbled its channel, hung or died."""
    name = current.id if current else "?"
    if kind == "garbage":
        child.kill()
        line = ev["line"] if ev else ""
        return _failed_status(name, "error", f"unreadable result from the probe process: {line!r}", child.tail(TAIL_CHARS))
    if kind == "timeout":
        limit = (timeout if timeout is not None else current.timeout) if current else IMPORT_TIMEOUT
        phase = "probe" if current else ("between probes" if ready else "startup (import torch)")
        child.kill()
        return _failed_status(name, "timeout", f"no result within {limit:g} s ({phase}); the process was killed",
                              child.tail(TAIL_CHARS))
    code = child.exit_code()  # eof: the child is gone
    tail = child.tail(TAIL_CHARS)
    if code < 0:
        return _failed_status(name, "crash", f"probe process killed by {signal_name(code)}", tail)
    if not ready:
        return _failed_status(name, "error", f"probe process failed to start (exit code {code})", tail)
    return _failed_status(name, "crash", f"probe process exited with code {code} mid-probe", tail)


def _failed_status(pid: str, status: str, detail: str, tail: str) -> ProbeResult:
    """A failure verdict (id/backend filled in by the caller)."""
    hint = _cuda_hint(tail)
    return ProbeResult(id=pid, backend="", status=status, detail=detail + (f" [{hint}]" if hint else ""), stderr_tail=tail)


def groups_of(specs: Iterable[ProbeSpec]) -> List[List[ProbeSpec]]:
    """Probes batched by group, in catalogue order; ungrouped probes run alone."""
    out: Dict[str, List[ProbeSpec]] = {}
    for s in specs:
        out.setdefault(s.group or f"__{s.id}", []).append(s)
    return list(out.values())
