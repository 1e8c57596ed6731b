"""Triton: JIT-compile and run a small kernel (catches a missing ptxas, an arch the bundled compiler does not
know, an unwritable cache dir); on CPU through Triton's interpreter when TRITON_INTERPRET=1."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from doctor.envvars import TRITON_CACHE_DIR, TRITON_INTERPRET
from doctor.probes.bodies._numerics import device_label, fmt, median_ms, rel_err, synchronize, timing_iters
from doctor.probes.spec import ProbeContext

tl: Any = None  # triton.language, bound by _add_kernel (the kernel resolves it through these globals)

BLOCK = 1024


def _add_kernel() -> Any:  # a triton JITFunction: indexed by the grid, then called
    """A fresh @triton.jit vector-add kernel (defined at call time: importing this module needs no triton)."""
    import triton

    # The kernel body resolves `tl` through the module's globals, the way Triton expects (it reads the
    # function's globals when compiling and when interpreting), so bind it there rather than as a local.
    global tl
    import triton.language as tl

    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):  # type: ignore[no-untyped-def]  # noqa: N803 - Triton style, pointers untyped
        pid = tl.program_id(axis=0)
        offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=mask)
        y = tl.load(y_ptr + offsets, mask=mask)
        tl.store(out_ptr + offsets, x + y, mask=mask)

    return add_kernel


def vector_add(ctx: ProbeContext) -> Dict[str, Any]:
    """out = x + y by a Triton kernel, compared with torch's x + y (bit-exact: both are one IEEE fp32 add)."""
    interpret = os.environ.get(TRITON_INTERPRET) == "1"
    if ctx.device != "cuda" and not interpret:
        return {"status": "skipped", "detail": "Triton kernels need CUDA (set TRITON_INTERPRET=1 to run through the interpreter on CPU)"}
    import torch
    import triton

    kernel = _add_kernel()
    n = int(ctx.params.get("n", 98_765))  # not a multiple of BLOCK: the masked tail is exercised too
    torch.manual_seed(ctx.seed)
    x = torch.rand(n, device=ctx.device, dtype=torch.float32)
    y = torch.rand(n, device=ctx.device, dtype=torch.float32)
    out = torch.empty_like(x)
    grid = (triton.cdiv(n, BLOCK),)

    def launch() -> None:
        kernel[grid](x, y, out, n, BLOCK_SIZE=BLOCK)

    t0 = time.perf_counter()
    launch()  # first launch compiles (or loads from Triton's cache)
    synchronize(ctx.device)
    compile_s = time.perf_counter() - t0
    error = rel_err(out, x + y)
    warmup, iters = timing_iters(ctx.params, ctx.device)
    time_ms = median_ms(launch, ctx.device, warmup, iters)
    cache = os.environ.get(TRITON_CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    mode = "interpreter (TRITON_INTERPRET=1)" if interpret else "compiled"
    detail = (f"triton {triton.__version__} {mode} vector add, n={n} fp32 on {device_label(ctx.device)}: "
              f"first launch (compile + run) {compile_s:.2f} s, error vs torch {fmt(error)} (must be exact); "
              f"cache {cache}; median {fmt(time_ms)} ms over {iters}")
    return {"error": error, "tolerance": 0.0, "detail": detail, "time_ms": time_ms}
