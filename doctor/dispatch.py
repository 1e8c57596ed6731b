"""Per-op backend choice from probe verdicts: the fastest backend that passed, else the torch reference.

Override one op with DOCTOR_BACKEND_<OP>=<backend> (DOCTOR_BACKEND_ATTENTION=sdpa-flash); naming a
backend that failed its probe is an error, not a silent fallback.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from doctor.backends.attention import BACKENDS as ATTENTION_BACKENDS
from doctor.backends.ops import BACKENDS as KERNEL_BACKENDS
from doctor.envvars import DOCTOR_BACKEND_PREFIX, backend_op, backend_var
from doctor.errors import DoctorError
from doctor.verdicts import ProbeResult

REFERENCE = "torch"  # plain torch implementation: always available, never the fast path
DEFAULT_ATTENTION = "sdpa"  # SDPA with nothing forced: an attention backend must beat it clearly to be forced
SHAPED_PREFIX = "attention."  # probe ids of attention at a model's training shapes (catalogue.attention_at)
NOISE_MARGIN = 0.05  # "clearly": by more than this fraction of the default's time (timings on a shared GPU wobble)
# Candidates in preference order (used when probes gave no timing to compare).
OPS: Mapping[str, Tuple[str, ...]] = {
    "attention": ATTENTION_BACKENDS,  # their order lives with the backends; "torch" (the reference) is last
    # rms_norm, rope, swiglu, geglu, cross_entropy (fused linear + CE): doctor's Triton kernels, Liger,
    # torch.compile (+ Cut Cross-Entropy for the loss), then the reference; order in doctor.backends.ops
    **KERNEL_BACKENDS,
}


class Choice(NamedTuple):
    """The backend picked for one op, and why."""

    op: str
    backend: str
    reason: str
    candidates: Tuple[Tuple[str, str, Optional[float]], ...]  # (backend, probe status, time ms)


def env_var(op: str) -> str:
    """DOCTOR_BACKEND_ATTENTION for 'attention'."""
    return backend_var(op)


def validate_overrides(environ: Optional[Mapping[str, str]] = None) -> None:
    """DoctorError (one line) for a DOCTOR_BACKEND_<OP> naming no op, or a backend the op does not have.

    Checked by `doctor check` and `doctor probe` before any work, so a typo is bad input (exit 3) in
    both, whether or not probes run; a backend that failed its probe is only known later (choose()).
    """
    env = os.environ if environ is None else environ
    for name in sorted(k for k in env if k.startswith(DOCTOR_BACKEND_PREFIX)):
        value = (env.get(name) or "").strip()
        if not value:  # empty means "not forced", as choose() reads it
            continue
        op = backend_op(name)
        if op not in OPS:
            raise DoctorError(f"{name}={value}: no op called {op!r} (variables: "
                              f"{', '.join(env_var(o) for o in OPS)})")
        if value not in OPS[op]:
            raise DoctorError(f"{name}={value}: unknown backend for {op} (choose from {', '.join(OPS[op])})")


def choose(op: str, verdicts: Mapping[str, ProbeResult], environ: Optional[Mapping[str, str]] = None) -> Choice:
    """Pick the backend for `op` given verdicts by backend name (absent = not probed)."""
    if op not in OPS:
        raise DoctorError(f"unknown op {op!r} (known: {', '.join(OPS)})")
    env = os.environ if environ is None else environ
    cands = OPS[op]
    table = tuple((b, verdicts[b].status if b in verdicts else ("reference" if b == REFERENCE else "not probed"),
                   verdicts[b].time_ms if b in verdicts else None) for b in cands)
    forced = (env.get(env_var(op)) or "").strip()
    if forced:
        if forced not in cands:
            raise DoctorError(f"{env_var(op)}={forced}: unknown backend for {op} (choose from {', '.join(cands)})")
        v = verdicts.get(forced)
        if v is not None and not v.passed:
            passing = [b for b in cands if b in verdicts and verdicts[b].passed] + [REFERENCE]
            what = "is not available here" if v.status == "skipped" else "failed its probe"
            raise DoctorError(f"{env_var(op)}={forced}: that backend {what} ({v.status}: {(v.detail.splitlines() or [''])[0][:120]}); "
                              f"backends that passed: {', '.join(passing)}")
        why = "forced by " + env_var(op) + ("" if v is not None or forced == REFERENCE else " (not probed here)")
        return Choice(op, forced, why, table)
    passed = [(b, verdicts[b]) for b in cands if b in verdicts and verdicts[b].passed]
    if cands == (REFERENCE,):
        return Choice(op, REFERENCE, "torch reference (no other backend for this op yet)", table)
    if not passed:
        return Choice(op, REFERENCE, "no backend passed its probe: plain torch reference", table)
    timed = [(v.time_ms, cands.index(b), b) for b, v in passed if v.time_ms is not None]
    if timed:
        t, _, best = min(timed)
        default = verdicts.get(DEFAULT_ATTENTION) if op == "attention" else None
        if (best != DEFAULT_ATTENTION and default is not None and default.passed and default.time_ms is not None
                and t > default.time_ms * (1.0 - NOISE_MARGIN)):
            # not clearly faster than torch's own pick: forcing it risks the slow case (issue 11, item 2)
            return Choice(op, DEFAULT_ATTENTION, f"SDPA's own choice ({default.time_ms:.3g} ms); the fastest forced "
                          f"backend, {best} ({t:.3g} ms), is within {NOISE_MARGIN:.0%}", table)
        return Choice(op, best, f"fastest that passed ({t:.3g} ms fwd+bwd on the probe shapes)", table)
    best = passed[0][0]
    return Choice(op, best, "first that passed, in preference order", table)


def table(results: Iterable[ProbeResult], environ: Optional[Mapping[str, str]] = None) -> List[Choice]:
    """The dispatch table for every op from a set of probe verdicts."""
    by_op: Dict[str, Dict[str, ProbeResult]] = {op: {} for op in OPS}
    for r in results:
        if r.id.startswith(SHAPED_PREFIX):  # timed at one model's shapes: compared only with each other (runtime)
            continue
        if r.op in by_op and r.backend:
            by_op[r.op][r.backend] = r
    return [choose(op, by_op[op], environ) for op in OPS]


def implementation(op: str, backend: str) -> Callable[..., Any]:
    """The callable behind (op, backend): attention from doctor.backends.attention, the kernel ops from
    doctor.backends.ops (one signature per op). KeyError for a name neither knows."""
    if op == "attention":
        from doctor.backends.attention import get as attention_fn

        return attention_fn(backend)
    from doctor.backends.ops import get as op_fn

    return op_fn(op, backend)
