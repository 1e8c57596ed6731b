"""torch SDPA with one backend forced (flash / efficient / cudnn / math), causal fwd+bwd vs reference."""

from __future__ import annotations

from typing import Any, Dict

from doctor.backends.attention import BackendUnavailable, get, sdpa_backend
from doctor.probes.bodies._attn_check import check_attention
from doctor.probes.spec import ProbeContext


def sdpa(ctx: ProbeContext) -> Dict[str, Any]:
    """Force SDPA onto params['backend'] and check it (skipped when this torch lacks that backend)."""
    import torch

    backend = str(ctx.params.get("backend", "math"))
    name = f"sdpa-{backend}"
    try:
        sdpa_backend(name)  # only builds the context: tells "this torch has no such backend" apart from failure
    except BackendUnavailable as exc:
        return {"status": "skipped", "detail": str(exc)}
    return check_attention(get(name), ctx, f"torch {torch.__version__} SDPA backend {backend}")
