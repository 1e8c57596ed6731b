"""The replacement forwards: RMSNorm, the gated MLP, RoPE inside attention, and the LM head + loss.

Each is a plain function of (module, ...) bound to a module instance (doctor.runtime.patch) or set on its
class; the op it runs is looked up on the module (`_doctor_<op>`), else the class-level default, so one
function serves both. They compute what the Hugging Face forwards compute (fp32-exact; see README for
bf16), through the dispatcher's backend for the op.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Class-level functions per op (patch_llama_family); an instance's own `_doctor_<op>` wins over these.
CLASS_OPS: Dict[str, Callable[..., Any]] = {}


def op_of(module: Any, op: str) -> Callable[..., Any]:
    """The function `module` runs for `op`: its own (instance patch), else the class-level one."""
    fn = module.__dict__.get(f"_doctor_{op}") or CLASS_OPS.get(op)
    if fn is None:  # a class forward replaced, then the patches removed under it: a bug, say so
        raise RuntimeError(f"doctor.runtime: no {op} backend for {type(module).__name__}")
    return fn


# --- RMSNorm ---------------------------------------------------------------------------------------------


def original_forward(module: Any) -> Callable[..., Any]:
    """The transformers forward a patched module replaced (unbound: call it with the module)."""
    fn = module.__dict__.get("_doctor_fallback") or getattr(type(module), "_doctor_original_forward", None)
    if fn is None:
        raise RuntimeError(f"doctor.runtime: the original forward of {type(module).__name__} was not kept")
    return fn


def rms_norm_forward(self: Any, hidden_states: "torch.Tensor") -> "torch.Tensor":
    """RMSNorm over the last dim with the module's weight, eps and offset (1.0 for Gemma's 1 + weight).

    A weight in another dtype than the input (norms kept in fp32 under a bf16 model, as peft's k-bit preparation
    does) runs transformers' own forward: its output dtype follows type promotion there, not the input's.
    """
    if self.weight.dtype != hidden_states.dtype:
        out0: "torch.Tensor" = original_forward(self)(self, hidden_states)
        return out0
    eps = getattr(self, "variance_epsilon", None)
    if eps is None:
        eps = self.eps
    out: "torch.Tensor" = op_of(self, "rms_norm")(hidden_states, self.weight, eps=eps,
                                                  offset=getattr(self, "_doctor_offset", 0.0))
    return out


# --- MLP ----------------------------------------------------------------------------------------------


def swiglu_mlp_forward(self: Any, x: "torch.Tensor") -> "torch.Tensor":
    """down(silu(gate(x)) * up(x)) with the fused SwiGLU."""
    return self.down_proj(op_of(self, "swiglu")(self.gate_proj(x), self.up_proj(x)))


def geglu_mlp_forward(self: Any, x: "torch.Tensor") -> "torch.Tensor":
    """down(gelu(gate(x)) * up(x)) with the fused GeGLU (tanh approximation for gelu_pytorch_tanh)."""
    return self.down_proj(op_of(self, "geglu")(self.gate_proj(x), self.up_proj(x),
                                               approximate=getattr(self, "_doctor_approximate", "none")))


# --- RoPE -------------------------------------------------------------------------------------------------
# The attention forwards call their modeling module's global apply_rotary_pos_emb; patch replaces that global
# with rope_switch, which runs the op of the attention module in flight (set by attention_forward) and the
# original function for every module not patched. The HF attention forward itself stays as it is.

CURRENT_ROPE: "contextvars.ContextVar[Optional[Callable[..., Any]]]" = contextvars.ContextVar(
    "doctor_rope", default=None)


def make_rope_switch(original: Callable[..., Any]) -> Callable[..., Any]:
    """apply_rotary_pos_emb that runs the current patched module's rope op, else `original`."""

    def apply_rotary_pos_emb(q: "torch.Tensor", k: "torch.Tensor", cos: "torch.Tensor", sin: "torch.Tensor",
                             *args: Any, **kwargs: Any) -> Any:
        fn = CURRENT_ROPE.get()
        unsqueeze_dim = kwargs.get("unsqueeze_dim", args[-1] if args else 1)
        # not ours, a layout the op does not take, or mixed dtypes (autocast: bf16 q/k, fp32 cos/sin), where
        # transformers' type promotion decides the output dtype
        if (fn is None or unsqueeze_dim != 1 or cos.dim() != 3 or not q.dtype == k.dtype == cos.dtype == sin.dtype):
            return original(q, k, cos, sin, *args, **kwargs)
        return fn(q, k, cos, sin)

    apply_rotary_pos_emb.__doc__ = original.__doc__
    apply_rotary_pos_emb._doctor_original = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def make_attention_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """The HF attention forward `original`, run with this module's rope op in force."""

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = CURRENT_ROPE.set(self.__dict__.get("_doctor_rope") or CLASS_OPS.get("rope"))
        try:
            return original(self, *args, **kwargs)
        finally:
            CURRENT_ROPE.reset(token)

    forward._doctor_original = original  # type: ignore[attr-defined]
    return forward


# --- LM head + loss ---------------------------------------------------------------------------------------


_CACHE_PARAM: Dict[type, str] = {}


def _cache_param(cls: type) -> str:
    """What `cls` (a decoder model's forward, or an output dataclass) calls the KV cache: transformers 5.2x says
    `cache`, earlier releases `past_key_values` (a wrong name would be swallowed by **kwargs: no cache)."""
    name = _CACHE_PARAM.get(cls)
    if name is None:
        import inspect

        fields = getattr(cls, "__dataclass_fields__", None)
        names = set(fields) if fields is not None else set(inspect.signature(cls.forward).parameters)  # type: ignore[attr-defined]
        name = _CACHE_PARAM[cls] = "cache" if "cache" in names else "past_key_values"
    return name


def causal_lm_forward(self: Any, input_ids: Optional["torch.Tensor"] = None,
                      attention_mask: Optional["torch.Tensor"] = None, position_ids: Optional["torch.Tensor"] = None,
                      cache: Any = None, inputs_embeds: Optional["torch.Tensor"] = None,
                      labels: Optional["torch.Tensor"] = None, use_cache: Optional[bool] = None,
                      logits_to_keep: Any = 0, skip_logits: Optional[bool] = None, return_dict: Optional[bool] = None,
                      **kwargs: Any) -> Any:
    """XForCausalLM.forward with the loss from fused linear cross-entropy (never the full logits).

    Logits are computed unless labels are given in training mode (skip_logits=False asks for them anyway, True
    skips them always). The loss follows transformers' ForCausalLMLoss: labels shifted left by one (or
    `shift_labels` as given), ignore_index -100, the sum divided by num_items_in_batch when the Trainer passes it
    (gradient accumulation), else the mean over counted tokens.
    """
    import torch
    import torch.nn.functional as F
    from transformers.modeling_outputs import CausalLMOutputWithPast

    if cache is None and "past_key_values" in kwargs:  # the older name (transformers renames it too)
        cache = kwargs.pop("past_key_values")
    shift_labels = kwargs.pop("shift_labels", None)
    outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, use_cache=use_cache,
                         **{_cache_param(type(self.model)): cache}, **kwargs)
    hidden = outputs.last_hidden_state
    # transformers' slice_logits_to_keep (5.2x) inlined: an int keeps the last N positions (0: all), a tensor indexes
    hidden = hidden[:, slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep, :]
    head = self.lm_head
    # only a plain nn.Linear: a LoRA'd head (peft's class is also called Linear), a quantised one (a subclass), a
    # biased one or one in another dtype than the hidden states get transformers' logits + loss
    fused = type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype == hidden.dtype
    want_labels = labels is not None or shift_labels is not None
    if skip_logits is None:
        skip_logits = self.training and want_labels and fused
    logits = None if skip_logits else head(hidden)
    loss = None
    if want_labels:
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()  # position i predicts token i+1
        shift_labels = shift_labels.to(hidden.device)
        num_items: Any = kwargs.get("num_items_in_batch")
        if hasattr(num_items, "to"):  # a tensor (the Trainer's count may sit on another device)
            num_items = num_items.to(hidden.device)
        if fused:
            loss = op_of(self, "cross_entropy")(hidden, head.weight, shift_labels, ignore_index=-100,
                                                num_items=num_items)
        else:
            full = logits if logits is not None else head(hidden)
            loss = self.loss_function(logits=full, labels=None, shift_labels=shift_labels,
                                      vocab_size=self.config.vocab_size, **kwargs)
    name = _cache_param(CausalLMOutputWithPast)
    out = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                 attentions=outputs.attentions, **{name: getattr(outputs, name, None)})
    if return_dict is False:
        return out.to_tuple()
    return out

