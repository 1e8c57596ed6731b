"""torch SDPA with one backend forced (flash / efficient / cudnn / math) or its own choice (default), causal fwd+bwd
vs reference; and any attention backend at a model's training shapes (GQA, bf16)."""

from __future__ import annotations

from typing import Any, Dict

from doctor.backends.attention import BackendUnavailable, get, sdpa_backend
from doctor.probes.bodies._attn_check import check_attention
from doctor.probes.spec import ProbeContext


def sdpa(ctx: ProbeContext) -> Dict[str, Any]:
    """Force SDPA onto params['backend'] and check it (skipped when this torch lacks that backend)."""
    import torch

    backend = str(ctx.params.get("backend", "math"))
    if backend == "default":  # nothing forced: whatever torch picks for these shapes
        return check_attention(get("sdpa"), ctx, f"torch {torch.__version__} SDPA, its own backend choice")
    name = f"sdpa-{backend}"
    try:
        sdpa_backend(name)  # only builds the context: tells "this torch has no such backend" apart from failure
    except BackendUnavailable as exc:
        return {"status": "skipped", "detail": str(exc)}
    return check_attention(get(name), ctx, f"torch {torch.__version__} SDPA backend {backend}")


def at_shape(ctx: ProbeContext) -> Dict[str, Any]:
    """Attention backend params['backend'] (any of doctor.backends.attention) at the params' shapes, kv heads included."""
    import importlib

    import torch

    name = str(ctx.params.get("backend", "sdpa"))
    if name.startswith("sdpa-"):
        try:
            sdpa_backend(name)
        except BackendUnavailable as exc:
            return {"status": "skipped", "detail": str(exc)}
    module = {"flash-attn": "flash_attn", "xformers": "xformers.ops"}.get(name)
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return {"status": "skipped", "detail": f"{name} is not importable here: {exc}"}
    return check_attention(get(name), ctx, f"{name} (torch {torch.__version__})")
