"""xformers memory_efficient_attention (causal, fwd+bwd) and the attention-bias `.to()` failure of 0.0.27.

`import xformers.ops` succeeds even when its C++/CUDA extension does not load (it only warns, and
xformers.info still lists operators as 'available'); the call then raises NotImplementedError
'No operator found'. Only running it tells, so these bodies run it and let that exception be the verdict.
"""

from __future__ import annotations

from typing import Any, Dict

from doctor.backends.attention import get
from doctor.probes.bodies._attn_check import check_attention, check_forward, shapes
from doctor.probes.bodies._numerics import dtype_name, probe_dtype
from doctor.probes.spec import ProbeContext


def _fw_op_name(ctx: ProbeContext, bias: Any) -> str:
    """Name of the forward operator xformers dispatches to for the probe's shapes (best effort, private API)."""
    try:
        import torch
        from xformers.ops.fmha import _dispatch_fw
        from xformers.ops.fmha.common import Inputs

        batch, heads, seq, head_dim, _ = shapes(ctx)
        dtype = probe_dtype(ctx.params, ctx.device)
        q = torch.empty((batch, seq, heads, head_dim), device=ctx.device, dtype=dtype)
        return str(_dispatch_fw(Inputs(query=q, key=q, value=q, attn_bias=bias), True).NAME)
    except Exception as exc:  # noqa: BLE001 - a name for the detail line; the real call reports real failures
        return f"? ({type(exc).__name__})"


def mea(ctx: ProbeContext) -> Dict[str, Any]:
    """memory_efficient_attention with LowerTriangularMask, [B, S, H, D], fwd+bwd vs reference."""
    if ctx.device != "cuda":
        return {"status": "skipped", "detail": "xformers memory_efficient_attention is probed on CUDA only (device is cpu)"}
    import xformers
    from xformers.ops.fmha.attn_bias import LowerTriangularMask

    version = getattr(xformers, "__version__", "?")
    op = _fw_op_name(ctx, LowerTriangularMask())
    return check_attention(get("xformers"), ctx, f"xformers {version} memory_efficient_attention (fw op {op})")


def bias_to(ctx: ProbeContext) -> Dict[str, Any]:
    """Move a LowerTriangularMask with .to() under inference_mode, then attend with the moved bias."""
    import torch
    import xformers
    from xformers.ops.fmha.attn_bias import LowerTriangularMask

    version = getattr(xformers, "__version__", "?")
    bias = LowerTriangularMask()
    if not isinstance(bias, torch.Tensor):
        return {"status": "skipped",
                "detail": f"xformers {version}: LowerTriangularMask is not a torch.Tensor subclass in this version "
                          "(tensor-subclass biases were xformers 0.0.27..0.0.31): the aten.to.dtype_layout failure cannot occur"}
    dtype = probe_dtype(ctx.params, ctx.device)
    # Both call shapes seen in the wild, under inference_mode as during generation: accelerate's
    # send_to_device does tensor.to(device, non_blocking=...); model code does .to(device, dtype).
    with torch.inference_mode():
        moved = bias.to(ctx.device, non_blocking=True)
        moved = moved.to(ctx.device, dtype)
    if not isinstance(moved, LowerTriangularMask):
        raise TypeError(f"LowerTriangularMask.to(...) returned {type(moved).__name__}, not a LowerTriangularMask")
    moved_desc = f"LowerTriangularMask.to({ctx.device}, {dtype_name(dtype)}) under inference_mode ok"
    if ctx.device != "cuda":
        return {"error": 0.0, "tolerance": 0.0, "time_ms": None,
                "detail": f"xformers {version}: {moved_desc}; attention with it not run (cpu)"}

    import xformers.ops as xops

    def attention(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal: bool) -> "torch.Tensor":
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_bias=moved if causal else None)
        return out.transpose(1, 2)

    # The moved bias is what is under test: always attend with it (causal), whatever params say.
    sub = ctx._replace(params={**ctx.params, "causal": True})
    return check_forward(attention, sub, f"xformers {version} {moved_desc}; memory_efficient_attention with it")
