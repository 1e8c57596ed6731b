"""CUDA context + device properties, and matmul per dtype vs an fp64 reference."""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Any, Dict

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
    rel_err,
    timing_iters,
    torch_dtype,
)
from doctor.probes.spec import ProbeContext

if TYPE_CHECKING:  # pragma: no cover
    import torch


def context(ctx: ProbeContext) -> Dict[str, Any]:
    """Initialise CUDA, read the device's properties, allocate, run an exact integer reduction, synchronise."""
    if ctx.device != "cuda":
        return {"status": "skipped", "detail": "no CUDA device requested (device is cpu)"}
    import torch

    t0 = time.perf_counter()
    # torch.cuda.is_available() only answers False; init() raises with the reason (driver too old, no device...).
    torch.cuda.init()
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    n = 1 << 20
    x = torch.arange(n, device="cuda", dtype=torch.int64)
    got = int((x * 2).sum().item())  # integer arithmetic: the exact answer is known, any deviation is a fault
    torch.cuda.synchronize()
    elapsed_ms = (time.perf_counter() - t0) * 1000.0
    expected = n * (n - 1)
    free, total = torch.cuda.mem_get_info(index)
    arch = f"sm_{props.major}{props.minor}"
    archs = torch.cuda.get_arch_list()
    built = "yes" if arch in archs else f"no (build has {' '.join(archs) or 'none'}; runs via PTX if any)"
    detail = (f"{props.name}, cc {props.major}.{props.minor}, {total / 2**30:.1f} GiB total / {free / 2**30:.1f} GiB free, "
              f"{torch.cuda.device_count()} visible; torch {torch.__version__} CUDA {torch.version.cuda}; "
              f"{arch} in torch build: {built}; int64 sum of 2*arange(2^20) = {got} (expected {expected})")
    return {"error": abs(got - expected) / expected, "tolerance": 0.0, "detail": detail, "time_ms": elapsed_ms}


def _tf32_truncate(x: "torch.Tensor") -> "torch.Tensor":
    """fp32 -> TF32 by dropping the low 13 mantissa bits (round toward zero: the worse of the hardware's
    possible roundings, so the emulated 'own' error bounds the real TF32 GEMM's from above)."""
    import torch

    return (x.contiguous().view(torch.int32) & -8192).view(torch.float32)  # -8192 == 0xFFFFE000


def matmul(ctx: ProbeContext) -> Dict[str, Any]:
    """C = A @ B in params dtype (TF32 per params['tf32'] for fp32), judged against the fp64 product.

    Tolerance, by dtype (errors are max|C - C64| / max|C64|):
      fp16 / bf16: 2x the error of torch's own result in that dtype, i.e. the fp32 (TF32 off) product of the
        same rounded inputs rounded to the dtype (the correctly-accumulated answer), floored at eps(dtype).
      fp32 + TF32: 2x the error of an emulated TF32 product (inputs truncated to TF32, fp32 accumulation),
        floored at eps(TF32) = 2^-10.
      fp32: the probabilistic rounding-error bound of a K-term dot product (Higham & Mary 2019),
        sqrt(K) * u32 * max(|A| @ |B|) / max|C64|, or 2x the output rounding error if larger. A TF32
        or reduced-precision kernel silently used for fp32 is ~100x over it; a correct GEMM ~10x under.
    """
    import torch

    p = ctx.params
    dtype = torch_dtype(p.get("dtype", "float32"))
    skip = dtype_skip_reason(ctx.device, dtype)
    if skip:
        return {"status": "skipped", "detail": skip}
    tf32 = bool(p.get("tf32", False)) and dtype == torch.float32
    m, k, n = int(p.get("m", 1024)), int(p.get("k", 1024)), int(p.get("n", 1024))
    torch.manual_seed(ctx.seed)
    a = torch.randn(m, k, device=ctx.device, dtype=dtype)
    b = torch.randn(k, n, device=ctx.device, dtype=dtype)
    ref = a.double() @ b.double()  # exact-enough reference of the same (already rounded) inputs

    f = own_error_factor(p)
    with matmul_tf32(False):
        if dtype in (torch.float16, torch.bfloat16):
            own = rel_err((a.float() @ b.float()).to(dtype), ref)
            tol, rule = lowp_tolerance(own, dtype, factor=f), f"max({fmt(f)}x own {fmt(own)}, eps {fmt(eps(dtype))})"
        elif tf32:
            own = rel_err(_tf32_truncate(a) @ _tf32_truncate(b), ref)
            tol, rule = max(f * own, 2.0 ** -10), f"max({fmt(f)}x emulated-TF32 own {fmt(own)}, 2^-10)"
        else:
            own = rel_err(ref.to(dtype), ref)
            scale = float(ref.abs().max()) or 1.0
            bound = math.sqrt(k) * eps(dtype) / 2 * float((a.double().abs() @ b.double().abs()).max()) / scale
            tol, rule = max(f * own, bound), f"max({fmt(f)}x rounding {fmt(own)}, sqrt(K)*u*max|A||B|/max|C| {fmt(bound)})"

    with matmul_tf32(tf32) if dtype == torch.float32 else contextlib.nullcontext():
        out = a @ b
        error = rel_err(out, ref)
        warmup, iters = timing_iters(p, ctx.device)
        time_ms = median_ms(lambda: a @ b, ctx.device, warmup, iters)
    label = dtype_name(dtype) + (" (TF32 on)" if tf32 else " (TF32 off)" if dtype == torch.float32 else "")
    detail = (f"[{m}x{k}] @ [{k}x{n}] {label} on {device_label(ctx.device)} vs float64: error {fmt(error)}, "
              f"tolerance {fmt(tol)} = {rule}; median {fmt(time_ms)} ms over {iters}")
    return {"error": error, "tolerance": tol, "detail": detail, "time_ms": time_ms}
