"""The attention function doctor.runtime registers with transformers' AttentionInterface (as "doctor").

    out, None = doctor_attention(module, q, k, v, attention_mask, scaling=..., sliding_window=..., ...)

q [B, H, S, D], k/v [B, Hkv, S, D] (GQA). The dispatcher's backend runs the case every backend computes the
same: causal self-attention over the whole sequence with no mask (transformers hands over None when the
mask is pure causal: the "doctor" mask function is SDPA's). Anything else - a padding mask, a sliding window
shorter than the sequence (Mistral, Qwen2), decoding with a cache, dropout, softcapping - goes to
transformers' own SDPA function with the mask, so nothing different is ever computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

NAME = "doctor"  # the attn_implementation name the patched models' configs point at
CLASS_ATTENTION: Dict[str, Callable[..., Any]] = {}  # "fn": the class-level backend (patch_llama_family)


def fast_path_ok(module: Any, query: "torch.Tensor", key: "torch.Tensor", attention_mask: Any, dropout: float,
                 sliding_window: Optional[int], kwargs: Dict[str, Any]) -> bool:
    """Whether plain causal attention over the whole sequence is exactly what is asked for."""
    q_len, k_len = query.shape[2], key.shape[2]
    return (attention_mask is None and q_len == k_len and q_len > 1 and not (dropout and module.training)
            and (sliding_window is None or sliding_window >= k_len) and kwargs.get("softcap") is None
            and kwargs.get("position_bias") is None and getattr(module, "is_causal", True)
            and not kwargs.get("output_attentions", False))


def doctor_attention(module: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                     attention_mask: Optional["torch.Tensor"], dropout: float = 0.0, scaling: Optional[float] = None,
                     sliding_window: Optional[int] = None, is_causal: Optional[bool] = None,
                     **kwargs: Any) -> Tuple["torch.Tensor", None]:
    """transformers' attention-function signature; output [B, S, H, D] as its SDPA function returns it."""
    fn = module.__dict__.get("_doctor_attention") or CLASS_ATTENTION.get("fn")
    if is_causal is not None:
        kwargs["is_causal"] = is_causal
    if fn is not None and is_causal is not False and fast_path_ok(module, query, key, attention_mask, dropout,
                                                                  sliding_window, kwargs):
        out = fn(query, key, value, True, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  sliding_window=sliding_window, **kwargs)


def register() -> None:
    """Register "doctor" with transformers' attention and mask interfaces (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(NAME, sdpa_mask)
    AttentionInterface.register(NAME, doctor_attention)
