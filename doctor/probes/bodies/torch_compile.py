"""torch.compile (Inductor by default) of a small transformer-MLP-like function, fwd+bwd vs eager."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List

from doctor.probes.bodies._numerics import (
    device_label,
    fmt,
    lowp_tolerance,
    matmul_tf32,
    median_ms,
    own_error_factor,
    rel_err,
    timing_iters,
)
from doctor.probes.spec import ProbeContext

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _block(x: "torch.Tensor", ln_w: "torch.Tensor", ln_b: "torch.Tensor", w1: "torch.Tensor", b1: "torch.Tensor",
           w2: "torch.Tensor") -> "torch.Tensor":
    """LayerNorm -> Linear -> SiLU -> Linear, plus the residual: what Inductor fuses in every LLM block."""
    import torch.nn.functional as F

    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b)
    h = F.silu(h @ w1 + b1)
    return h @ w2 + x


def _fwd_bwd(fn: Any, inputs: List["torch.Tensor"], dout: "torch.Tensor") -> List["torch.Tensor"]:
    """[out, grad of every input] of fn on leaf copies of inputs."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    out.backward(dout.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]  # type: ignore[misc]


def small_function(ctx: ProbeContext) -> Dict[str, Any]:
    """Compile _block with params['backend'] (default inductor), run fwd+bwd in fp32, judge vs eager fp64.

    Tolerance per tensor: max(2x eager-fp32's own error vs fp64, 4 sqrt(reduction) eps32) - Inductor may
    reorder fp32 reductions (layer-norm statistics, fused matmul epilogues), so both are a few ulps apart
    from fp64 in different ways; an outright miscompile is orders of magnitude above.
    """
    import torch

    p = ctx.params
    backend = str(p.get("backend", "inductor"))
    tokens, dim, hidden = int(p.get("tokens", 512)), int(p.get("dim", 256)), int(p.get("hidden", 512))
    torch.manual_seed(ctx.seed)
    dev = ctx.device
    inputs = [
        torch.randn(tokens, dim, device=dev),
        1.0 + 0.1 * torch.randn(dim, device=dev),
        0.1 * torch.randn(dim, device=dev),
        torch.randn(dim, hidden, device=dev) / dim ** 0.5,
        0.1 * torch.randn(hidden, device=dev),
        torch.randn(hidden, dim, device=dev) / hidden ** 0.5,
    ]
    dout = torch.randn(tokens, dim, device=dev)
    names = ["out", "dx", "dln_w", "dln_b", "dw1", "db1", "dw2"]

    # TF32 off throughout: eager and compiled must both be true fp32 for 'own error' to mean anything.
    with matmul_tf32(False):
        ref = _fwd_bwd(_block, [t.double() for t in inputs], dout.double())
        own = _fwd_bwd(_block, inputs, dout)
        torch._dynamo.reset()  # a fresh compile, so compile time is measured (the on-disk caches may still hit)
        compiled = torch.compile(_block, backend=backend, fullgraph=True, dynamic=False)
        t0 = time.perf_counter()
        got = _fwd_bwd(compiled, inputs, dout)  # compiles forward and backward graphs
        if dev == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]

        def step() -> None:
            for t in leaves:
                t.grad = None
            compiled(*leaves).backward(dout)

        warmup, iters = timing_iters(p, dev)
        time_ms = median_ms(step, dev, warmup, iters)

    rows = []
    for name, g, r, o in zip(names, got, ref, own):
        own_err = rel_err(o, r)
        rows.append((name, rel_err(g, r), lowp_tolerance(own_err, torch.float32, reduce_len=max(tokens, hidden),
                                                          factor=own_error_factor(p))))
    worst = max(rows, key=lambda row: row[1] / row[2])
    parts = ", ".join(f"{n} {fmt(e)}/{fmt(t)}" for n, e, t in rows)
    detail = (f"torch {torch.__version__} torch.compile(backend={backend}) of layernorm+linear+silu+linear+residual "
              f"[{tokens}x{dim}, hidden {hidden}] fp32 on {device_label(dev)}: compile+first fwd+bwd {compile_s:.1f} s; "
              f"error/tolerance vs fp64 eager {parts}; worst {worst[0]}; median {fmt(time_ms)} ms over {iters}")
    return {"error": worst[1], "tolerance": worst[2], "detail": detail, "time_ms": time_ms}
