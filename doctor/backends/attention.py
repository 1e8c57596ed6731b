"""Attention backends behind one signature, for the dispatcher, the probes and the runtime.

    fn = get("sdpa-flash")
    out = fn(q, k, v, True)      # q, k, v: [batch, heads, seq, head_dim] (torch SDPA layout); causal flag
    out = fn(q, k, v, True, scale=0.1)   # softmax scale (default 1/sqrt(head_dim)); k/v may have fewer heads (GQA)

Every backend takes and returns the SDPA layout; flash-attn and xformers want [batch, seq, heads, dim],
so their wrappers transpose on the way in and out (a view: no copy for the inputs). Importing this
module imports nothing heavy (the doctor's fast path loads it); torch and friends are imported when a
backend is called.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Order of preference when several pass their probes (the dispatcher picks the fastest that passed;
# this order breaks ties and is the fallback order). "torch" is the plain reference: always last.
# "sdpa" is SDPA with no backend forced (torch's own choice): the dispatcher never picks a backend slower than it.
BACKENDS: Tuple[str, ...] = ("flash-attn", "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "xformers", "sdpa-math",
                             "torch")

AttentionFn = Callable[..., Any]  # (q, k, v, causal, *, scale=None) -> out

# backend name -> SDPBackend member name (torch.nn.attention)
SDPA_MEMBERS: Dict[str, str] = {
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}


class BackendUnavailable(RuntimeError):
    """The installed torch has no such backend at all (e.g. no cuDNN attention before torch 2.3).

    Distinct from a backend that exists and fails: a probe reports the first as skipped, the second as error.
    """


def get(name: str) -> AttentionFn:
    """The attention function of backend `name`; KeyError (listing the known names) for anything else."""
    try:
        return _IMPLS[name]
    except KeyError:
        raise KeyError(f"unknown attention backend {name!r}; known: {', '.join(BACKENDS)}") from None


def sdpa_backend(name: str) -> ContextManager[Any]:
    """A context that forces torch SDPA onto one backend ('sdpa-flash', ..., or 'flash' / 'math' ...).

    torch >= 2.3: torch.nn.attention.sdpa_kernel(SDPBackend.X); older torch: torch.backends.cuda.sdp_kernel
    with one enable_* flag. Raises BackendUnavailable when this torch has no such backend.
    """
    import torch

    key = name if name.startswith("sdpa-") else f"sdpa-{name}"
    if key not in SDPA_MEMBERS:
        raise KeyError(f"unknown SDPA backend {name!r}; known: {', '.join(SDPA_MEMBERS)}")
    member_name = SDPA_MEMBERS[key]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3 (torch.nn.attention arrived with sdpa_kernel)
        SDPBackend = sdpa_kernel = None  # type: ignore[assignment]  # noqa: N806
    if sdpa_kernel is not None:
        member = getattr(SDPBackend, member_name, None)
        if member is None:
            raise BackendUnavailable(f"torch {torch.__version__} has no SDPBackend.{member_name}")
        return sdpa_kernel([member])
    legacy = getattr(getattr(torch.backends, "cuda", None), "sdp_kernel", None)
    if legacy is None:
        raise BackendUnavailable(f"torch {torch.__version__} has no scaled_dot_product_attention backend selection")
    if key == "sdpa-cudnn":
        raise BackendUnavailable(f"torch {torch.__version__} has no cuDNN attention backend")
    return legacy(enable_flash=key == "sdpa-flash", enable_math=key == "sdpa-math",
                  enable_mem_efficient=key == "sdpa-efficient")


def repeat_kv(t: "torch.Tensor", heads: int) -> "torch.Tensor":
    """k or v [B, Hkv, S, D] repeated to [B, heads, S, D] (each kv head serves heads/Hkv query heads, as in HF)."""
    b, hkv, s, d = t.shape
    if hkv == heads:
        return t
    if heads % hkv:
        raise ValueError(f"{heads} query heads cannot share {hkv} key/value heads")
    return t[:, :, None].expand(b, hkv, heads // hkv, s, d).reshape(b, heads, s, d)


# SDPA's enable_gqa (torch >= 2.5) runs in the flash and math kernels; the others get repeated k/v.
_NATIVE_GQA = ("sdpa", "sdpa-flash", "sdpa-math")


def _sdpa(name: str) -> AttentionFn:
    """SDPA forced onto one backend (the backward runs the kernel the forward recorded); "sdpa": torch's own pick."""

    def attention(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal: bool,
                  scale: Optional[float] = None) -> "torch.Tensor":
        import contextlib

        import torch.nn.functional as F

        kw: Dict[str, Any] = {}
        if k.shape[1] != q.shape[1]:
            if name in _NATIVE_GQA and _has_enable_gqa():
                kw["enable_gqa"] = True
            else:
                k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
        with contextlib.nullcontext() if name == "sdpa" else sdpa_backend(name):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, **kw)

    attention.__name__ = attention.__qualname__ = name.replace("-", "_")
    return attention


@functools.lru_cache(maxsize=None)
def _has_enable_gqa() -> bool:
    """Whether this torch's scaled_dot_product_attention takes enable_gqa (2.5+)."""
    import torch

    try:
        major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 5)


def flash_attn(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal: bool,
               scale: Optional[float] = None) -> "torch.Tensor":
    """flash_attn.flash_attn_func (Tri Dao's package; GQA native), layout [B, S, H, D] inside."""
    from flash_attn import flash_attn_func

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal, softmax_scale=scale)
    return out.transpose(1, 2)


def xformers(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal: bool,
             scale: Optional[float] = None) -> "torch.Tensor":
    """xformers.ops.memory_efficient_attention with LowerTriangularMask for causal, layout [B, S, H, D] inside."""
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import LowerTriangularMask

    bias = LowerTriangularMask() if causal else None
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias,
                                          scale=scale)
    return out.transpose(1, 2)


def reference(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal: bool,
              compute_dtype: Optional["torch.dtype"] = None, scale: Optional[float] = None) -> "torch.Tensor":
    """softmax(Q K^T * scale + causal mask) V computed in `compute_dtype` (default fp32), cast back to q's dtype.

    Causal means query i sees keys j <= i (top-left aligned, as SDPA's is_causal for equal lengths); scale
    defaults to 1/sqrt(head_dim); k/v with fewer heads than q are shared by groups of query heads (GQA).
    """
    import torch

    dt = torch.float32 if compute_dtype is None else compute_dtype
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    qc, kc, vc = q.to(dt), k.to(dt), v.to(dt)
    scores = torch.matmul(qc, kc.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        s_q, s_k = scores.shape[-2], scores.shape[-1]
        mask = torch.ones(s_q, s_k, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, vc).to(q.dtype)


def torch_reference(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal: bool,
                    scale: Optional[float] = None) -> "torch.Tensor":
    """The plain torch backend: fp32 softmax attention, result in the inputs' dtype."""
    return reference(q, k, v, causal, scale=scale)


_IMPLS: Dict[str, AttentionFn] = {
    "flash-attn": flash_attn,
    "sdpa": _sdpa("sdpa"),
    "sdpa-flash": _sdpa("sdpa-flash"),
    "sdpa-cudnn": _sdpa("sdpa-cudnn"),
    "sdpa-efficient": _sdpa("sdpa-efficient"),
    "xformers": xformers,
    "sdpa-math": _sdpa("sdpa-math"),
    "torch": torch_reference,
}
assert tuple(_IMPLS) == BACKENDS  # one list of names; keep both in step

__all__ = ["BACKENDS", "AttentionFn", "BackendUnavailable", "get", "reference", "repeat_kv", "sdpa_backend"]
