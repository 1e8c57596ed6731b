"""Probe declarations: the contract between the catalogue, the runner and probe bodies.

A probe body is a plain function `body(ctx: ProbeContext) -> dict` that runs in a child process
(never in the doctor). It returns {"error": float, "tolerance": float, "detail": str, ...} after
comparing its output with a higher-precision reference, or {"status": "skipped", "detail": why}.
Raising, crashing, hanging, printing garbage: the runner turns each into a verdict (doctor.verdicts).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Tuple

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
