"""Run probes in child processes with timeouts; every way a child can fail becomes a verdict.

A group of probes shares one child (torch is imported once). The child reports begin/result events
on a dedicated pipe; the runner enforces a deadline per probe. When a child crashes, hangs or
garbles its channel, the probe in flight gets that verdict and the rest of the group goes on in a
fresh child. The doctor itself never imports torch.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

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


def _tail(log: "tempfile._TemporaryFileWrapper[bytes]") -> str:
    """The last TAIL_CHARS characters the child printed."""
    try:
        log.flush()
        size = os.fstat(log.fileno()).st_size
        log.seek(max(0, size - TAIL_CHARS * 4))
        return log.read().decode("utf-8", "replace")[-TAIL_CHARS:]
    except OSError:
        return ""


def _cuda_hint(tail: str) -> str:
    """The first line of the log that names a CUDA failure, for the verdict's detail."""
    for line in tail.splitlines():
        if any(m in line for m in CUDA_MARKERS):
            return line.strip()[:300]
    return ""


def _kill(proc: "subprocess.Popen[bytes]") -> None:
    """Kill the child's whole process group (it may have spawned compilers) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _signal_name(code: int) -> str:
    """'SIGSEGV' for -11."""
    try:
        return signal.Signals(-code).name
    except (ValueError, AttributeError):
        return f"signal {-code}"


class _Child:
    """One child process running a list of probes, read event by event."""

    def __init__(self, specs: Sequence[ProbeSpec], env: Mapping[str, str], cuda: bool, seed: int) -> None:
        job = {"needs_torch": any(s.needs_torch for s in specs), "cuda": cuda,
               "probes": [{"id": s.id, "target": s.target, "params": dict(s.params), "seed": seed,
                           "needs_cuda": s.needs_cuda} for s in specs]}
        rfd, wfd = os.pipe()
        self.log = tempfile.TemporaryFile()
        child_env = dict(env)
        child_env["DOCTOR_PROBE_FD"] = str(wfd)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "doctor.probes.child", json.dumps(job)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=child_env,
            pass_fds=(wfd,), start_new_session=True,  # own group: a timeout kills compilers it spawned too
        )
        os.close(wfd)
        self.rfd = rfd
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(rfd, selectors.EVENT_READ)
        self.eof = False

    def next_event(self, deadline: float) -> Tuple[str, Optional[dict]]:
        """('event', dict) | ('garbage', {'line': ...}) | ('timeout', None) | ('eof', None)."""
        while True:
            if b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                try:
                    ev = json.loads(line.decode("utf-8"))
                    if not isinstance(ev, dict) or "event" not in ev:
                        raise ValueError
                except ValueError:
                    return "garbage", {"line": line[:200].decode("utf-8", "replace")}
                return "event", ev
            if self.eof:
                return "eof", None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            if not self.sel.select(timeout=min(remaining, 1.0)):
                continue
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                self.eof = True
            self.buf += chunk

    def close(self) -> None:
        """Kill if still running, release the pipe and the log."""
        if self.proc.poll() is None:
            _kill(self.proc)
        self.sel.close()
        try:
            os.close(self.rfd)
        except OSError:
            pass
        self.log.close()


def _verdict(spec: ProbeSpec, ev: Mapping[str, object], tail: str) -> ProbeResult:
    """A result event -> ProbeResult; a pass whose error exceeds its tolerance is a wrong result."""
    status = str(ev.get("status", "error"))
    error, tol = ev.get("error"), ev.get("tolerance")
    detail = str(ev.get("detail", ""))
    if status == "pass":
        if error is None or tol is None:
            status, detail = "error", f"probe reported no error/tolerance to judge: {detail}"
        elif not (float(error) <= float(tol)):  # NaN fails too
            status = "wrong-result"
    hint = _cuda_hint(tail) if status == "error" else ""
    return ProbeResult(
        id=spec.id, backend=spec.backend, op=spec.op, status=status,
        error=float(error) if isinstance(error, (int, float)) else None,
        tolerance=float(tol) if isinstance(tol, (int, float)) else None,
        time_ms=float(ev["time_ms"]) if isinstance(ev.get("time_ms"), (int, float)) else None,
        detail=(detail + (f" [{hint}]" if hint and hint not in detail else ""))[:2000],
        stderr_tail=tail if status not in ("pass", "skipped") else "",
    )


def run_group(specs: Sequence[ProbeSpec], env: Mapping[str, str], cuda: bool, timeout: Optional[float] = None,
              seed: int = 0, progress: Optional[Progress] = None) -> List[ProbeResult]:
    """Run probes in as few children as possible; a child's death costs only the probe in flight."""
    results: Dict[str, ProbeResult] = {}
    pending = list(specs)
    while pending:
        child = _Child(pending, env, cuda, seed)
        current: Optional[ProbeSpec] = None
        ready = False
        deadline = time.monotonic() + IMPORT_TIMEOUT
        try:
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
                        r = _verdict(current, ev, _tail(child.log))
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
        finally:
            child.close()
    return [results[s.id] for s in specs]


def _failure(child: _Child, kind: str, ev: Optional[dict], current: Optional[ProbeSpec], ready: bool,
             timeout: Optional[float]) -> ProbeResult:
    """The verdict for the probe in flight when the child garbled its channel, hung or died."""
    name = current.id if current else "?"
    if kind == "garbage":
        _kill(child.proc)
        line = ev["line"] if ev else ""
        return _failed_status(name, "error", f"unreadable result from the probe process: {line!r}", _tail(child.log))
    if kind == "timeout":
        limit = (timeout if timeout is not None else current.timeout) if current else IMPORT_TIMEOUT
        phase = "probe" if current else ("between probes" if ready else "startup (import torch)")
        _kill(child.proc)
        return _failed_status(name, "timeout", f"no result within {limit:g} s ({phase}); the process was killed", _tail(child.log))
    try:  # eof: the child is gone
        code = child.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill(child.proc)
        code = child.proc.returncode if child.proc.returncode is not None else -9
    tail = _tail(child.log)
    if code < 0:
        return _failed_status(name, "crash", f"probe process killed by {_signal_name(code)}", tail)
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
