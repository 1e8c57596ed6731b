"""One attention check shared by every attention probe (sdpa, xformers, flash-attn, the dispatcher's pick).

Same shapes for every backend (from ctx.params), fresh random inputs, causal forward + backward, compared
with a higher-precision reference: out, dq, dk, dv. Tolerance per tensor follows DESIGN: at most 2x the
error of torch's own attention in the probe dtype, floored at one epsilon of that dtype.

"torch's own" is the textbook attention evaluated entirely in the low dtype (QK^T, softmax, PV each rounded
to bf16/fp16), as flash-attn's own test-suite does. Not SDPA's math backend: since torch 2.5 it upcasts
bf16/fp16 to fp32 internally, which would make the bound depend on the torch version and be tighter than
any fused kernel that keeps P in bf16 for the PV matmul can meet.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from doctor.backends.attention import AttentionFn, reference
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

NAMES = ("out", "dq", "dk", "dv")


def shapes(ctx: ProbeContext) -> Tuple[int, int, int, int, bool]:
    """(batch, heads, seq, head_dim, causal) from the catalogue's params (defaults: a small causal case)."""
    p = ctx.params
    return (int(p.get("batch", 2)), int(p.get("heads", 8)), int(p.get("seq", 512)), int(p.get("head_dim", 64)),
            bool(p.get("causal", True)))


def reference_dtype(dtype: "torch.dtype") -> "torch.dtype":
    """fp32 reference for bf16/fp16 runs; fp64 for fp32 runs (an fp32 reference could not judge fp32)."""
    import torch

    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def fwd_bwd(fn: Callable[..., "torch.Tensor"], q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor",
            dout: "torch.Tensor", causal: bool) -> List["torch.Tensor"]:
    """[out, dq, dk, dv] of fn on leaf copies of q, k, v (in their dtype) with upstream gradient dout."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves, causal)
    out.backward(dout.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]  # type: ignore[misc]


def call_with_reasons(thunk: Callable[[], Any]) -> Any:
    """Run thunk; if it raises RuntimeError, append the UserWarnings torch emitted on the way.

    A forced SDPA backend that cannot run raises only 'No available kernel'; the reason (head_dim, dtype,
    arch, build) is in the warnings issued just before. The exception type and message are kept.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return thunk()
        except RuntimeError as exc:
            reasons = "; ".join(dict.fromkeys(str(w.message).strip() for w in caught if str(w.message).strip()))
            if not reasons or len(str(exc)) > 1000:  # long messages (xformers' 'No operator found') say it all
                raise
            try:
                richer = type(exc)(f"{exc} [warnings: {reasons[:1000]}]")
            except Exception:  # an exception type with another constructor: keep the original as is
                raise exc from None
            raise richer from exc


def _inputs(ctx: ProbeContext, label: str, dtype: "torch.dtype", n: int):  # type: ignore[no-untyped-def]
    """n fresh random [B, H, S, D] tensors for this probe, or the skipped-result dict when the dtype cannot run here."""
    import torch

    skip = dtype_skip_reason(ctx.device, dtype)
    if skip:
        return {"status": "skipped", "detail": f"{label}: {skip}"}
    batch, heads, seq, head_dim, _causal = shapes(ctx)
    torch.manual_seed(ctx.seed)
    return tuple(torch.randn((batch, heads, seq, head_dim), device=ctx.device, dtype=dtype) for _ in range(n))


def check_attention(fn: AttentionFn, ctx: ProbeContext, label: str,
                    dtype: Optional["torch.dtype"] = None) -> Dict[str, Any]:
    """Run fn causal fwd+bwd on fresh inputs and judge it against the reference; the body's result dict."""
    batch, heads, seq, head_dim, causal = shapes(ctx)
    dtype = dtype or probe_dtype(ctx.params, ctx.device)
    prepared = _inputs(ctx, label, dtype, 4)
    if isinstance(prepared, dict):
        return prepared
    q, k, v, dout = prepared
    kv_heads = int(ctx.params.get("kv_heads", heads))
    if kv_heads != heads:  # grouped-query attention: k and v have fewer heads
        k, v = k[:, :kv_heads].contiguous(), v[:, :kv_heads].contiguous()
    ref_dtype = reference_dtype(dtype)

    def low_precision(qq: "torch.Tensor", kk: "torch.Tensor", vv: "torch.Tensor", c: bool) -> "torch.Tensor":
        return reference(qq, kk, vv, c, compute_dtype=dtype)

    # References with TF32 off: an fp32 reference computed in TF32 would be worse than the bf16 kernel.
    with matmul_tf32(False):
        ref = fwd_bwd(lambda a, b, c, m: reference(a, b, c, m, compute_dtype=ref_dtype),
                      q.to(ref_dtype), k.to(ref_dtype), v.to(ref_dtype), dout.to(ref_dtype), causal)
        own = fwd_bwd(low_precision, q, k, v, dout, causal)
    got = call_with_reasons(lambda: fwd_bwd(fn, q, k, v, dout, causal))
    if got[0].shape != q.shape:
        raise RuntimeError(f"{label} returned shape {tuple(got[0].shape)}, expected {tuple(q.shape)}")

    rows = []
    factor = own_error_factor(ctx.params)
    for name, g, r, o in zip(NAMES, got, ref, own):
        err, own_err = rel_err(g, r), rel_err(o, r)
        rows.append((name, err, lowp_tolerance(own_err, dtype, reduce_len=seq, factor=factor), own_err))
    # Report the tensor closest to (or furthest past) its bound: the runner's verdict then matches all four.
    worst = max(rows, key=lambda row: row[1] / row[2] if row[2] > 0 else float("inf"))

    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]

    def step() -> None:
        for t in leaves:
            t.grad = None
        fn(leaves[0], leaves[1], leaves[2], causal).backward(dout)

    warmup, iters = timing_iters(ctx.params, ctx.device)
    time_ms = call_with_reasons(lambda: median_ms(step, ctx.device, warmup, iters))
    parts = ", ".join(f"{n} {fmt(e)}/{fmt(t)}" for n, e, t, _ in rows)
    kv = f",Hkv={kv_heads}" if kv_heads != heads else ""
    detail = (f"{label}: {dtype_name(dtype)} [B={batch},H={heads}{kv},S={seq},D={head_dim}] "
              f"{'causal' if causal else 'full'} fwd+bwd vs {dtype_name(ref_dtype)} reference; "
              f"error/tolerance {parts} (tolerance = max({fmt(factor)}x torch-{dtype_name(dtype)} own error, eps floor)); "
              f"worst {worst[0]}; median {fmt(time_ms)} ms over {iters}")
    return {"error": worst[1], "tolerance": worst[2], "detail": detail, "time_ms": time_ms}


def check_forward(fn: AttentionFn, ctx: ProbeContext, label: str,
                  dtype: Optional["torch.dtype"] = None) -> Dict[str, Any]:
    """Forward only, under torch.inference_mode (the generation path), judged like check_attention's out."""
    import torch

    batch, heads, seq, head_dim, causal = shapes(ctx)
    dtype = dtype or probe_dtype(ctx.params, ctx.device)
    prepared = _inputs(ctx, label, dtype, 3)
    if isinstance(prepared, dict):
        return prepared
    q, k, v = prepared
    ref_dtype = reference_dtype(dtype)
    with torch.inference_mode():
        with matmul_tf32(False):
            ref = reference(q.to(ref_dtype), k.to(ref_dtype), v.to(ref_dtype), causal, compute_dtype=ref_dtype)
            own = reference(q, k, v, causal, compute_dtype=dtype)
        out = call_with_reasons(lambda: fn(q, k, v, causal))
        if out.shape != q.shape:
            raise RuntimeError(f"{label} returned shape {tuple(out.shape)}, expected {tuple(q.shape)}")
        err, own_err = rel_err(out, ref), rel_err(own, ref)
        tol = lowp_tolerance(own_err, dtype, reduce_len=seq, factor=own_error_factor(ctx.params))
        warmup, iters = timing_iters(ctx.params, ctx.device)
        time_ms = median_ms(lambda: fn(q, k, v, causal), ctx.device, warmup, iters)
    detail = (f"{label}: {dtype_name(dtype)} [B={batch},H={heads},S={seq},D={head_dim}] "
              f"{'causal' if causal else 'full'} forward under inference_mode vs {dtype_name(ref_dtype)} reference; "
              f"out {fmt(err)}/{fmt(tol)} (tolerance = max({fmt(own_error_factor(ctx.params))}x torch-{dtype_name(dtype)} own error, eps floor)); "
              f"median {fmt(time_ms)} ms over {iters}")
    return {"error": err, "tolerance": tol, "detail": detail, "time_ms": time_ms}
