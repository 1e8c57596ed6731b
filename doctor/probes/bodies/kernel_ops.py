"""The training kernels' ops (rms_norm, rope, swiglu, geglu, fused linear cross-entropy), one backend per probe.

Every backend goes through doctor.backends.ops exactly as the runtime calls it, on fresh random inputs at
the catalogue's shapes, forward + backward, and is judged against the op's torch reference evaluated in a
higher precision (fp32 for bf16/fp16 runs, fp64 for fp32 runs): the output and every gradient. Tolerance
per tensor (DESIGN, "Kernels"): at most 2x the error of the same reference evaluated by torch in the probe
dtype, floored at one epsilon of that dtype (see _numerics). The time is the median of fwd+bwd at the same
shapes for every backend of an op, which is what the dispatcher compares.

Where a backend cannot run: Triton-based backends need a CUDA GPU, or TRITON_INTERPRET=1 set for the probe
process (tests do that on CPU; the interpreter has no bf16); torch.compile is probed on the GPU only; a
peer package that is not importable is skipped, not failed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.backends.ops import BACKENDS, REFERENCE, REFERENCES, BackendUnavailable, get
from doctor.envvars import DOCTOR_BACKEND_PREFIX, TRITON_INTERPRET
from doctor.probes.bodies._numerics import (
    dtype_name,
    dtype_skip_reason,
    fmt,
    lowp_tolerance,
    matmul_tf32,
    median_ms,
    own_error_factor,
    probe_dtype,
    rel_err,
    timing_iters,
)
from doctor.probes.spec import ProbeContext

if TYPE_CHECKING:  # pragma: no cover
    import torch

TRITON_BASED = ("triton", "liger", "cut-cross-entropy")  # backends whose kernels are Triton's


class Case(NamedTuple):
    """One op's inputs for a probe: what is differentiated, what is not, and how the op is called."""

    leaves: Dict[str, "torch.Tensor"]  # differentiated inputs (in the probe dtype), by gradient name
    fixed: Dict[str, "torch.Tensor"]  # inputs not differentiated (cos/sin: cast like the leaves; labels: kept)
    call: Callable[[Callable[..., Any], Dict[str, "torch.Tensor"], Dict[str, "torch.Tensor"]], Tuple["torch.Tensor", ...]]
    upstream: Tuple[Optional["torch.Tensor"], ...]  # gradient flowing into each output (None: a scalar loss)
    out_names: Tuple[str, ...]
    reduce_len: int  # longest reduction in the op (sizes the fp32 floor of the tolerance)
    shape: str  # for the detail line


def _seeded(ctx: ProbeContext) -> "torch.Generator":
    import torch

    torch.manual_seed(ctx.seed)
    return torch.Generator(device="cpu").manual_seed(ctx.seed)


def _randn(shape: Sequence[int], dtype: "torch.dtype", device: str, gen: "torch.Generator",
           scale: float = 1.0, shift: float = 0.0) -> "torch.Tensor":
    """Random normal values drawn on the CPU (the same numbers on every device), then moved."""
    import torch

    t = torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * scale + shift
    return t.to(device=device, dtype=dtype)


def _rms_norm_case(ctx: ProbeContext, dtype: "torch.dtype") -> Case:
    p = ctx.params
    rows, hidden = int(p.get("rows", 4096)), int(p.get("hidden", 4096))
    eps, offset = float(p.get("eps", 1e-6)), float(p.get("offset", 0.0))
    g = _seeded(ctx)
    x = _randn((rows, hidden), dtype, ctx.device, g)
    w = _randn((hidden,), dtype, ctx.device, g, scale=0.1, shift=0.0 if offset else 1.0)
    dy = _randn((rows, hidden), dtype, ctx.device, g)

    def call(fn: Callable[..., Any], t: Dict[str, "torch.Tensor"], f: Dict[str, "torch.Tensor"]) -> Tuple["torch.Tensor", ...]:
        return (fn(t["dx"], t["dw"], eps, offset),)

    return Case({"dx": x, "dw": w}, {}, call, (dy,), ("y",), max(rows, hidden),
                f"x [{rows}, {hidden}] offset {offset:g}")


def _rope_case(ctx: ProbeContext, dtype: "torch.dtype") -> Case:
    import torch

    p = ctx.params
    b, hq, hk = int(p.get("batch", 1)), int(p.get("heads_q", 32)), int(p.get("heads_k", 8))
    s, d = int(p.get("seq", 2048)), int(p.get("head_dim", 128))
    # "bshd": q/k are the transposed views of [B, S, H, D] projections, as Hugging Face attention passes them
    views = str(p.get("layout", "bshd")) == "bshd"
    g = _seeded(ctx)
    qb = _randn((b, s, hq, d) if views else (b, hq, s, d), dtype, ctx.device, g)
    kb = _randn((b, s, hk, d) if views else (b, hk, s, d), dtype, ctx.device, g)
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.outer(torch.arange(s, dtype=torch.float64), inv)
    emb = torch.cat([ang, ang], dim=-1)[None]  # [1, S, D]
    cos, sin = emb.cos().to(ctx.device, dtype), emb.sin().to(ctx.device, dtype)
    dq = _randn((b, hq, s, d), dtype, ctx.device, g)
    dk = _randn((b, hk, s, d), dtype, ctx.device, g)

    def call(fn: Callable[..., Any], t: Dict[str, "torch.Tensor"], f: Dict[str, "torch.Tensor"]) -> Tuple["torch.Tensor", ...]:
        q, k = (t["dq"].transpose(1, 2), t["dk"].transpose(1, 2)) if views else (t["dq"], t["dk"])
        qo, ko = fn(q, k, f["cos"], f["sin"])
        return qo, ko

    layout = "views of [B,S,H,D]" if views else "contiguous [B,H,S,D]"
    return Case({"dq": qb, "dk": kb}, {"cos": cos, "sin": sin}, call, (dq, dk), ("q_out", "k_out"), d,
                f"q [{b},{hq},{s},{d}] k [{b},{hk},{s},{d}] {layout}")


def _glu_case(ctx: ProbeContext, dtype: "torch.dtype", geglu: bool) -> Case:
    p = ctx.params
    rows, inter = int(p.get("rows", 4096)), int(p.get("inter", 8192))
    approximate = str(p.get("approximate", "tanh"))
    g = _seeded(ctx)
    gate = _randn((rows, inter), dtype, ctx.device, g)
    up = _randn((rows, inter), dtype, ctx.device, g)
    dy = _randn((rows, inter), dtype, ctx.device, g)

    def call(fn: Callable[..., Any], t: Dict[str, "torch.Tensor"], f: Dict[str, "torch.Tensor"]) -> Tuple["torch.Tensor", ...]:
        return (fn(t["dgate"], t["dup"], approximate) if geglu else fn(t["dgate"], t["dup"]),)

    what = f" approximate={approximate}" if geglu else ""
    # elementwise: no reduction, but transcendental functions (exp, erf, tanh) differ by a few ulps
    return Case({"dgate": gate, "dup": up}, {}, call, (dy,), ("y",), 16, f"gate/up [{rows}, {inter}]{what}")


def _cross_entropy_case(ctx: ProbeContext, dtype: "torch.dtype") -> Case:
    import torch

    p = ctx.params
    n, h, v = int(p.get("tokens", 2048)), int(p.get("hidden", 2048)), int(p.get("vocab", 32768))
    ignored = float(p.get("ignored", 0.1))  # share of labels equal to ignore_index
    softcap = p.get("softcap")
    cap = float(softcap) if softcap is not None else None
    g = _seeded(ctx)
    hid = _randn((n, h), dtype, ctx.device, g)
    w = _randn((v, h), dtype, ctx.device, g, scale=h ** -0.5)  # logits ~ N(0, 1)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignored] = -100
    labels = labels.to(ctx.device)

    def call(fn: Callable[..., Any], t: Dict[str, "torch.Tensor"], f: Dict[str, "torch.Tensor"]) -> Tuple["torch.Tensor", ...]:
        return (fn(t["dhidden"], t["dweight"], f["labels"], -100, "mean", None, cap),)

    return Case({"dhidden": hid, "dweight": w}, {"labels": labels}, call, (None,), ("loss",), max(h, v),
                f"hidden [{n}, {h}] -> vocab {v}, {ignored:.0%} labels ignored" + (f", softcap {cap:g}" if cap else ""))


CASES: Mapping[str, Callable[[ProbeContext, "torch.dtype"], Case]] = {
    "rms_norm": _rms_norm_case,
    "rope": _rope_case,
    "swiglu": lambda ctx, dt: _glu_case(ctx, dt, geglu=False),
    "geglu": lambda ctx, dt: _glu_case(ctx, dt, geglu=True),
    "cross_entropy": _cross_entropy_case,
}
assert set(CASES) == set(BACKENDS)


def _cast(t: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    """Floating tensors to `dtype`; integer ones (labels) as they are."""
    return t.to(dtype) if t.is_floating_point() else t


def fwd_bwd(fn: Callable[..., Any], case: Case, dtype: "torch.dtype") -> List["torch.Tensor"]:
    """[outputs..., gradients...] of fn on fresh leaf copies of the case's inputs cast to `dtype`."""
    import torch

    leaves = {k: _cast(t.detach(), dtype).clone().requires_grad_(True) for k, t in case.leaves.items()}
    fixed = {k: _cast(t, dtype) for k, t in case.fixed.items()}
    outs = case.call(fn, leaves, fixed)
    # clones: an op may overwrite its upstream gradient in place (Liger's RMSNorm can)
    grads = [torch.ones_like(o) if u is None else u.to(o.dtype).clone() for o, u in zip(outs, case.upstream)]
    torch.autograd.backward(list(outs), grads)
    missing = [k for k, t in leaves.items() if t.grad is None]
    if missing:
        raise RuntimeError(f"no gradient reached {', '.join(missing)}")
    return [o.detach() for o in outs] + [t.grad for t in leaves.values()]  # type: ignore[misc]


def _skip_reason(backend: str, device: str, dtype: "torch.dtype") -> Optional[str]:
    """Why this backend cannot be probed here, or None."""
    import torch

    interpret = os.environ.get(TRITON_INTERPRET) == "1"
    if backend in TRITON_BASED and device != "cuda":
        if not interpret:
            return "Triton kernels need a CUDA GPU (TRITON_INTERPRET=1 runs them through Triton's interpreter on CPU)"
        if dtype == torch.bfloat16:
            return "Triton's interpreter cannot compute in bf16 (it stores bf16 as raw bits): probe fp32 or fp16 on CPU"
    if backend == "torch-compile" and device != "cuda":
        return "torch.compile is probed on the GPU only (training compiles for the GPU)"
    return dtype_skip_reason(device, dtype)


def reference_dtype(dtype: "torch.dtype") -> "torch.dtype":
    """fp32 reference for bf16/fp16 runs; fp64 for fp32 runs."""
    import torch

    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def check_op(op: str, backend: str, ctx: ProbeContext, label: str = "") -> Dict[str, Any]:
    """Run backend `backend` of `op` fwd+bwd on fresh inputs and judge it against the reference."""
    import functools

    import torch

    fn = get(op, backend)  # KeyError naming the known ones for a bad name (a catalogue bug)
    dtype = probe_dtype(ctx.params, ctx.device)
    label = label or f"{op} -> {backend}"
    skip = _skip_reason(backend, ctx.device, dtype)
    if skip:
        return {"status": "skipped", "detail": f"{label}: {skip}"}
    case = CASES[op](ctx, dtype)
    ref_dtype = reference_dtype(dtype)
    reference = REFERENCES[op]
    with matmul_tf32(False):  # an fp32 reference computed in TF32 would be worse than the bf16 kernel
        ref = fwd_bwd(functools.partial(reference, compute_dtype=ref_dtype), case, ref_dtype)
        own = fwd_bwd(functools.partial(reference, compute_dtype=dtype), case, dtype)
    try:
        got = fwd_bwd(fn, case, dtype)
    except BackendUnavailable as exc:
        return {"status": "skipped", "detail": f"{label}: {exc}"}
    names = case.out_names + tuple(case.leaves)
    for name, g, r in zip(names, got, ref):
        if tuple(g.shape) != tuple(r.shape):
            raise RuntimeError(f"{label}: {name} has shape {tuple(g.shape)}, expected {tuple(r.shape)}")
    factor = own_error_factor(ctx.params)
    rows = []
    for name, g, r, o in zip(names, got, ref, own):
        err, own_err = rel_err(g, r), rel_err(o, r)
        rows.append((name, err, lowp_tolerance(own_err, dtype, reduce_len=case.reduce_len, factor=factor)))
    # the tensor closest to (or furthest past) its bound: the runner's verdict then matches all of them
    worst = max(rows, key=lambda row: row[1] / row[2] if row[2] > 0 else float("inf"))

    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in case.leaves.items()}
    grads = [u for u in case.upstream]

    def step() -> None:
        for t in leaves.values():
            t.grad = None
        outs = case.call(fn, leaves, case.fixed)
        torch.autograd.backward(list(outs), [torch.ones_like(o) if u is None else u.clone() for o, u in zip(outs, grads)])

    warmup, iters = timing_iters(ctx.params, ctx.device)
    time_ms = median_ms(step, ctx.device, warmup, iters, rounds=int(ctx.params.get("rounds", 5)))
    parts = ", ".join(f"{n} {fmt(e)}/{fmt(t)}" for n, e, t in rows)
    detail = (f"{label}: {dtype_name(dtype)} {case.shape}, fwd+bwd vs {dtype_name(ref_dtype)} reference; "
              f"error/tolerance {parts} (tolerance = max({fmt(factor)}x torch-{dtype_name(dtype)} own error, eps floor)); "
              f"worst {worst[0]}; median {fmt(time_ms)} ms over {iters}")
    return {"error": worst[1], "tolerance": worst[2], "detail": detail, "time_ms": time_ms}


def _backend(ctx: ProbeContext) -> str:
    backend = ctx.params.get("backend")
    if not backend:
        raise ValueError("kernel probe declared without params['backend'] (a catalogue bug)")
    return str(backend)


def rms_norm(ctx: ProbeContext) -> Dict[str, Any]:
    """RMSNorm (params: rows, hidden, offset, eps, dtype, backend)."""
    return check_op("rms_norm", _backend(ctx), ctx)


def rope(ctx: ProbeContext) -> Dict[str, Any]:
    """RoPE on q and k together (params: batch, heads_q, heads_k, seq, head_dim, layout 'bshd'|'bhsd')."""
    return check_op("rope", _backend(ctx), ctx)


def swiglu(ctx: ProbeContext) -> Dict[str, Any]:
    """silu(gate) * up (params: rows, inter)."""
    return check_op("swiglu", _backend(ctx), ctx)


def geglu(ctx: ProbeContext) -> Dict[str, Any]:
    """gelu(gate) * up (params: rows, inter, approximate)."""
    return check_op("geglu", _backend(ctx), ctx)


def cross_entropy(ctx: ProbeContext) -> Dict[str, Any]:
    """Fused linear + cross-entropy (params: tokens, hidden, vocab, ignored, softcap)."""
    return check_op("cross_entropy", _backend(ctx), ctx)


def dispatch(ctx: ProbeContext) -> Dict[str, Any]:
    """The dispatcher's pick for params['op'] (params['choice'], else $DOCTOR_BACKEND_<OP>), checked as above."""
    op = str(ctx.params.get("op", ""))
    if op not in BACKENDS:
        raise ValueError(f"dispatch probe for an unknown op {op!r} (known: {', '.join(BACKENDS)})")
    choice = ctx.params.get("choice") or os.environ.get(DOCTOR_BACKEND_PREFIX + op.upper())
    if not choice:
        # a runner bug, not a property of the machine: fail loudly rather than verify nothing
        raise ValueError(f"dispatch probe got no backend to verify for {op}")
    label = f"dispatch {op} -> {choice}" + (" (the reference)" if choice == REFERENCE else "")
    return check_op(op, str(choice), ctx, label)
