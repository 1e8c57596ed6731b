"""Probe declarations and verdicts: the contract between the catalogue, the runner and probe bodies.

A probe body is a plain function `body(ctx: ProbeContext) -> dict` that runs in a child process
(never in the doctor). It returns {"error": float, "tolerance": float, "detail": str, ...} after
comparing its output with a higher-precision reference, or {"status": "skipped", "detail": why}.
Raising, crashing, hanging, printing garbage: the runner turns each into a verdict.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

STATUSES = ("pass", "wrong-result", "error", "crash", "timeout", "skipped")
_EMPTY: Mapping[str, Any] = {}


class ProbeSpec(NamedTuple):
    """One probe: what it runs, what it needs, how long it may take."""

    id: str  # "sdpa.flash"
    title: str  # one line: what it exercises
    target: str  # "package.module:function" run in the child
    op: str = ""  # dispatcher op it proves a backend for ("attention"), or ""
    backend: str = ""  # backend name within the op ("sdpa-flash")
    requires: Tuple[str, ...] = ()  # distributions that must be installed (canonical names)
    needs_cuda: bool = True  # needs a CUDA build of torch and a GPU
    min_cc: Optional[Tuple[int, int]] = None  # minimum compute capability of the probed GPU
    timeout: float = 60.0  # seconds for the body (the child's torch import has its own allowance)
    group: str = ""  # probes of one group share a child process (a crash re-runs the rest in a new one)
    params: Mapping[str, Any] = _EMPTY  # shapes, dtypes: passed to the body as ctx.params
    needs_torch: bool = True  # the child imports torch before the body (planted CPU probes set False)


class ProbeContext(NamedTuple):
    """What a body gets in the child."""

    device: str  # "cuda" (CUDA_VISIBLE_DEVICES selects the GPU) or "cpu"
    params: Mapping[str, Any]
    seed: int


class ProbeResult(NamedTuple):
    """A verdict: status, error vs reference, time, and the evidence when it did not pass."""

    id: str
    backend: str
    status: str  # one of STATUSES
    error: Optional[float] = None  # max error vs reference (relative, as the body defines)
    tolerance: Optional[float] = None
    time_ms: Optional[float] = None  # body wall time (or the op's timed run when the body measured one)
    detail: str = ""  # what was compared, or why it was skipped / failed
    stderr_tail: str = ""  # last lines the child printed, for crashes and errors
    op: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form."""
        return dict(self._asdict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProbeResult":
        """Inverse of to_dict; raises ValueError on a malformed record."""
        if not isinstance(d, Mapping) or d.get("status") not in STATUSES or not isinstance(d.get("id"), str):
            raise ValueError("not a probe result")
        fields = {k: d[k] for k in cls._fields if k in d}
        for k in ("error", "tolerance", "time_ms"):
            if fields.get(k) is not None and not isinstance(fields[k], (int, float)):
                raise ValueError(f"{k} is not a number")
        return cls(**fields)

    @property
    def passed(self) -> bool:
        """True only for a pass verdict."""
        return self.status == "pass"
