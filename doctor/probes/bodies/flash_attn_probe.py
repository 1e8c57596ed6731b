"""flash-attn's flash_attn_func, causal fwd+bwd, layout [B, S, H, D], vs reference."""

from __future__ import annotations

from typing import Any, Dict

from doctor.probes.spec import ProbeContext


def func(ctx: ProbeContext) -> Dict[str, Any]:
    """flash_attn.flash_attn_func(q, k, v, causal=True) checked like every attention backend."""
    if ctx.device != "cuda":
        return {"status": "skipped", "detail": "flash-attn runs on CUDA only (device is cpu)"}
    import flash_attn  # an ImportError (e.g. 'undefined symbol' of a mismatched build) is the verdict

    from doctor.backends.attention import get
    from doctor.probes.bodies._attn_check import check_attention

    version = getattr(flash_attn, "__version__", "?")
    return check_attention(get("flash-attn"), ctx, f"flash-attn {version} flash_attn_func")
