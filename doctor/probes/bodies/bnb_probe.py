"""bitsandbytes: NF4 quantize/dequantize round trip + 4-bit matmul (QLoRA's path), and one 8-bit AdamW step."""

from __future__ import annotations

import time
from typing import Any, Dict, List

from doctor.probes.bodies._numerics import (
    device_label,
    dtype_name,
    dtype_skip_reason,
    eps,
    fmt,
    lowp_tolerance,
    matmul_tf32,
    median_ms,
    own_error_factor,
    probe_dtype,
    rel_err,
    synchronize,
    timing_iters,
)
from doctor.probes.spec import ProbeContext

# The 16 NF4 levels (QLoRA paper, appendix E; the table bitsandbytes ships), normalised to [-1, 1].
# Written out here so the bound does not trust the library under test.
NF4_LEVELS: List[float] = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
NF4_HALF_GAP = max(b - a for a, b in zip(NF4_LEVELS, NF4_LEVELS[1:])) / 2  # ~0.152: worst rounding to nearest level

# 8-bit AdamW vs fp32 AdamW after a few steps, as ||delta_8bit - delta_32|| / ||delta_32|| of the parameter
# updates. Step 1 is exact (the update uses the fresh fp32 moments before they are quantized); from step 2
# on the moments come back from blockwise dynamic 8-bit codes, whose relative precision is ~1e-2 on typical
# values (observed: 0.6% after 2 steps, 0.75% after 3 on bitsandbytes 0.50 CPU). 5% leaves room for other
# kernels' rounding while a broken optimizer (lost state, wrong bias correction, no weight decay, fp32
# fallback for a wrong reason) is >= 10% off.
ADAM8BIT_TOLERANCE = 0.05


def four_bit(ctx: ProbeContext) -> Dict[str, Any]:
    """NF4 round trip within the codebook's rounding bound, and bnb.matmul_4bit fwd+bwd vs x @ W_deq^T.

    Round trip: max over elements of |W - deq(q(W))| / absmax(block) must be <= half the widest gap between
    NF4 levels (0.152), plus the dtype's rounding of the dequantized value (1 eps). Matmul: the matmul rule
    (2x the error of the fp32-accumulated product rounded to the dtype, floor eps) for out and dx.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    p = ctx.params
    dtype = probe_dtype(p, ctx.device)
    skip = dtype_skip_reason(ctx.device, dtype)
    if skip:
        return {"status": "skipped", "detail": skip}
    out_f, in_f, tokens = int(p.get("out_features", 1024)), int(p.get("in_features", 1024)), int(p.get("tokens", 256))
    blocksize = int(p.get("blocksize", 64))
    torch.manual_seed(ctx.seed)
    dev = ctx.device
    w = torch.randn(out_f, in_f, device=dev, dtype=dtype) * 0.02  # weight-like scale
    qw, state = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    deq = F.dequantize_4bit(qw, state, quant_type="nf4")
    if deq.shape != w.shape:
        raise RuntimeError(f"dequantize_4bit returned shape {tuple(deq.shape)}, expected {tuple(w.shape)}")
    wb = w.float().reshape(-1, blocksize)
    absmax = wb.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    dq_err_t = (deq.float().reshape(-1, blocksize) - wb).abs() / absmax
    rt_err = float(dq_err_t.max()) if bool(torch.isfinite(dq_err_t).all()) else float("inf")
    rt_tol = NF4_HALF_GAP * (1 + 1e-3) + eps(dtype)
    # A dequantizer that returned the input untouched would pass the bound: require NF4-like mean error.
    rt_mean = float(dq_err_t.mean())

    x = torch.randn(tokens, in_f, device=dev, dtype=dtype)
    dout = torch.randn(tokens, out_f, device=dev, dtype=dtype)
    with matmul_tf32(False):
        ref_w = deq.double()
        ref_out = x.double() @ ref_w.t()
        ref_dx = dout.double() @ ref_w
        own_out = rel_err((x.float() @ deq.float().t()).to(dtype), ref_out)
        own_dx = rel_err((dout.float() @ deq.float()).to(dtype), ref_dx)
    f = own_error_factor(p)
    xl = x.detach().clone().requires_grad_(True)
    out = bnb.matmul_4bit(xl, qw.t(), quant_state=state)
    out.backward(dout)
    rows = [
        ("round-trip", rt_err, rt_tol),
        ("out", rel_err(out.detach(), ref_out), lowp_tolerance(own_out, dtype, reduce_len=in_f, factor=f)),
        ("dx", rel_err(xl.grad, ref_dx), lowp_tolerance(own_dx, dtype, reduce_len=out_f, factor=f)),  # type: ignore[arg-type]
    ]
    worst = max(rows, key=lambda row: row[1] / row[2])

    def step() -> None:
        xl.grad = None
        bnb.matmul_4bit(xl, qw.t(), quant_state=state).backward(dout)

    warmup, iters = timing_iters(p, dev)
    time_ms = median_ms(step, dev, warmup, iters)
    parts = ", ".join(f"{n} {fmt(e)}/{fmt(t)}" for n, e, t in rows)
    detail = (f"bitsandbytes {bnb.__version__} NF4 blocksize {blocksize}, W [{out_f}x{in_f}] {dtype_name(dtype)} on "
              f"{device_label(dev)}: error/tolerance {parts} (round trip per block, bound = NF4 half gap "
              f"{NF4_HALF_GAP:.3f}; mean {rt_mean:.3f}); matmul_4bit x [{tokens}x{in_f}] fwd+bwd vs fp64 "
              f"x @ W_deq^T; worst {worst[0]}; median {fmt(time_ms)} ms over {iters}")
    if not rt_mean > 1e-3:
        raise RuntimeError(f"NF4 round trip is suspiciously exact (mean error {rt_mean:.2e}): not quantizing? {detail}")
    return {"error": worst[1], "tolerance": worst[2], "detail": detail, "time_ms": time_ms}


def adam8bit(ctx: ProbeContext) -> Dict[str, Any]:
    """A few bnb.optim.AdamW8bit steps vs torch.optim.AdamW from the same parameters and gradients."""
    import bitsandbytes as bnb
    import torch

    p = ctx.params
    rows, cols, steps = int(p.get("rows", 1024)), int(p.get("cols", 1024)), int(p.get("steps", 3))
    lr, wd = float(p.get("lr", 1e-3)), float(p.get("weight_decay", 0.01))
    torch.manual_seed(ctx.seed)
    dev = ctx.device
    p0 = torch.randn(rows, cols, device=dev)
    grads = [torch.randn(rows, cols, device=dev) for _ in range(steps)]
    a = torch.nn.Parameter(p0.clone())
    b = torch.nn.Parameter(p0.clone())
    # min_8bit_size: tensors smaller than it keep 32-bit state; force 8-bit whatever the probe's size.
    opt8 = bnb.optim.AdamW8bit([a], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, min_8bit_size=1)
    opt32 = torch.optim.AdamW([b], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    times = []
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        synchronize(dev)
        t0 = time.perf_counter()
        opt8.step()
        synchronize(dev)
        times.append((time.perf_counter() - t0) * 1000.0)
        opt32.step()
    state = opt8.state[a]
    state_dtypes = sorted({str(v.dtype).replace("torch.", "") for k, v in state.items()
                           if k.startswith("state") and isinstance(v, torch.Tensor)})
    if state_dtypes != ["uint8"]:
        raise RuntimeError(f"AdamW8bit kept {state_dtypes or 'no'} optimizer state, not uint8: the 8-bit path did not run")
    d8, d32 = (a.detach() - p0).double(), (b.detach() - p0).double()
    if not bool(torch.isfinite(d8).all()):
        error = float("inf")
    else:
        error = float((d8 - d32).norm() / d32.norm().clamp_min(1e-300))
    max_err = float((d8 - d32).abs().max() / d32.abs().max().clamp_min(1e-300))
    time_ms = sorted(times[1:] or times)[len(times[1:] or times) // 2]  # median step, first (allocating) one left out
    detail = (f"bitsandbytes {bnb.__version__} AdamW8bit vs torch AdamW, {steps} steps on [{rows}x{cols}] fp32 "
              f"(lr {lr}, wd {wd}) on {device_label(dev)}: ||dp8 - dp32|| / ||dp32|| = {fmt(error)} "
              f"(tolerance {ADAM8BIT_TOLERANCE}; max-element {fmt(max_err)} of max update); state uint8; "
              f"median step {fmt(time_ms)} ms")
    return {"error": error, "tolerance": ADAM8BIT_TOLERANCE, "detail": detail, "time_ms": time_ms}
