"""Patch Hugging Face causal LMs of the Llama family onto the dispatcher's backends.

    patch_model(model, skip=())   this instance (a peft model patches the model under it); returns model
    patch_classes(skip=())        the transformers classes, for models built later; unpatch_classes() undoes
    classes_patched()             whether the class-level patches are in force

Families: Llama, Mistral and Qwen2 (attention within their sliding window; a window shorter than the sequence
runs transformers' SDPA with its mask), Qwen3 (q/k norms are RMSNorms: patched too), Gemma 1 (RMSNorm
offset 1, GeGLU). Gemma 2/3 are refused: they need softcapping and their own attention. Ops, each skippable
by name: rms_norm, rope, swiglu / geglu (the MLP's activation), cross_entropy (LM head + loss), attention.
An op whose module shape is not the one expected (an MLP whose activation is neither SiLU nor GeLU, a LoRA'd
LM head) keeps transformers' own code for that part.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from doctor.errors import DoctorError
from doctor.runtime import attention as attn
from doctor.runtime import modules
from doctor.runtime.choice import AttentionShape, pick

if TYPE_CHECKING:  # pragma: no cover
    import torch

OPS = ("rms_norm", "rope", "swiglu", "geglu", "cross_entropy", "attention")  # the names skip= takes
DEFAULT_SEQ = 2048  # the attention probe's sequence length when the caller does not say (capped by the config)


class Family(NamedTuple):
    """One architecture: where its classes live and what differs."""

    prefix: str  # class name prefix: Llama -> LlamaRMSNorm, LlamaMLP, LlamaAttention, LlamaForCausalLM
    module: str  # transformers modeling module
    norm_offset: float  # RMSNorm scales by (offset + weight): Gemma 1 stores weight - 1


FAMILIES: Dict[str, Family] = {
    "LlamaForCausalLM": Family("Llama", "transformers.models.llama.modeling_llama", 0.0),
    "MistralForCausalLM": Family("Mistral", "transformers.models.mistral.modeling_mistral", 0.0),
    "Qwen2ForCausalLM": Family("Qwen2", "transformers.models.qwen2.modeling_qwen2", 0.0),
    "Qwen3ForCausalLM": Family("Qwen3", "transformers.models.qwen3.modeling_qwen3", 0.0),
    "GemmaForCausalLM": Family("Gemma", "transformers.models.gemma.modeling_gemma", 1.0),
}
# Causal LMs refused by name, with the reason (others are refused as "not of the Llama family").
REFUSED = {
    "Gemma2ForCausalLM": "Gemma 2 keeps its own attention (logit softcapping, sliding windows)",
    "Gemma3ForCausalLM": "Gemma 3 keeps its own attention (sliding windows, q/k norms with its own scaling)",
    "Gemma3ForConditionalGeneration": "Gemma 3 keeps its own attention (sliding windows, q/k norms with its own scaling)",
}

# activation name in the config -> (op, GeLU approximation)
ACTIVATIONS: Dict[str, Tuple[str, str]] = {
    "silu": ("swiglu", ""), "swish": ("swiglu", ""),
    "gelu": ("geglu", "none"), "gelu_pytorch_tanh": ("geglu", "tanh"), "gelu_new": ("geglu", "tanh"),
}

_CLASS_STATE: Dict[str, Any] = {"active": False, "originals": [], "skip": ()}


def check_skip(skip: Optional[Iterable[str]]) -> Tuple[str, ...]:
    """skip names validated against OPS (DoctorError naming the unknown one and the known ones)."""
    if skip is None:
        return ()
    if isinstance(skip, str):  # skip="attention" would iterate letters
        skip = (skip,)
    names = tuple(skip)
    for name in names:
        if name not in OPS:
            raise DoctorError(f"doctor.runtime.patch: unknown op {name!r} in skip (ops: {', '.join(OPS)})")
    return names


def activation_of(config: Any) -> Optional[Tuple[str, str]]:
    """(op, approximate) for the config's MLP activation, or None when it is neither SiLU nor GeLU."""
    name = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    return ACTIVATIONS.get(str(name)) if name is not None else None


def family_of(model: Any) -> Tuple[Any, Family]:
    """(the transformers model to patch, its family); DoctorError naming the architecture otherwise."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the model under it
    base = getattr(base, "_orig_mod", base)  # torch.compile's wrapper: the module it compiles (patch before compiling)
    if not isinstance(base, torch.nn.Module):
        raise DoctorError(f"doctor.runtime.patch takes a transformers causal LM, not {type(model).__name__}")
    name = type(base).__name__
    if name in FAMILIES:
        return base, FAMILIES[name]
    if name in REFUSED:
        raise DoctorError(f"doctor.runtime.patch: unsupported architecture {name}: {REFUSED[name]}")
    if not name.endswith("ForCausalLM"):
        raise DoctorError(f"doctor.runtime.patch: {name} is not a causal LM (it takes an XForCausalLM of the Llama "
                          f"family: {', '.join(FAMILIES)})")
    raise DoctorError(f"doctor.runtime.patch: unsupported architecture {name} (supported: {', '.join(FAMILIES)})")


def attention_shape(config: Any, seq_len: Optional[int]) -> AttentionShape:
    """The attention probe's shape for this config (sequence: seq_len, else min(max positions, DEFAULT_SEQ))."""
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    seq = int(seq_len or min(int(getattr(config, "max_position_embeddings", DEFAULT_SEQ) or DEFAULT_SEQ), DEFAULT_SEQ))
    return AttentionShape(heads, kv, head_dim, seq)


def _install_rope_switch(fam: Family) -> None:
    """Replace the family module's apply_rotary_pos_emb by the switch (once; it defers to the original)."""
    mod = importlib.import_module(fam.module)
    current = getattr(mod, "apply_rotary_pos_emb")
    if not hasattr(current, "_doctor_original"):
        setattr(mod, "apply_rotary_pos_emb", modules.make_rope_switch(current))


def _point_attention(base: Any) -> bool:
    """Point the model's config at the "doctor" attention function (from sdpa or eager); False when the user
    chose another implementation (flash_attention_2, flex_attention, ...), which is kept."""
    attn.register()
    current = getattr(base.config, "_attn_implementation", None)
    if current == attn.NAME:
        return True
    if current not in (None, "sdpa", "eager"):
        return False
    base.set_attn_implementation(attn.NAME)
    base._doctor_attn_before = current or "sdpa"  # what a later patch(skip=("attention",)) restores (not on the
    # config: save_pretrained would write it into config.json)
    return True


def _clear(base: Any) -> None:
    """Remove an earlier patch_model's instance patches (so a second call with another skip= means what it says)."""
    before = base.__dict__.get("_doctor_attn_before")
    for module in base.modules():
        marks = [k for k in module.__dict__ if k.startswith("_doctor_")]
        if marks:
            for k in marks + (["forward"] if "forward" in module.__dict__ else []):
                del module.__dict__[k]
    if before is not None and base.config._attn_implementation == attn.NAME:
        base.set_attn_implementation(before)


def patch_model(model: Any, skip: Optional[Iterable[str]] = (), seq_len: Optional[int] = None) -> Any:
    """Patch one model instance (see the module docstring); returns `model` itself."""
    skip = check_skip(skip)
    if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1):
        # 0 or -5 would silently probe attention at the default shape (or a negative one on a GPU)
        raise DoctorError(f"doctor.runtime.patch: seq_len must be a positive integer (the training sequence length), "
                          f"got {seq_len!r}")
    base, fam = family_of(model)
    act = activation_of(base.config)
    ops = [op for op in ("rms_norm", "rope", act[0] if act else "", "cross_entropy", "attention") if op and op not in skip]
    picks = pick(ops, attention_shape(base.config, seq_len) if "attention" in ops else None)
    fn = picks.functions
    done: Dict[str, str] = {}
    _clear(base)
    if "rope" in fn:
        _install_rope_switch(fam)
    for module in base.modules():
        cls = type(module).__name__
        if cls == f"{fam.prefix}RMSNorm" and "rms_norm" in fn:
            module._doctor_rms_norm = fn["rms_norm"]
            module._doctor_fallback = getattr(type(module), "_doctor_original_forward", type(module).forward)
            module._doctor_offset = fam.norm_offset
            module.forward = types.MethodType(modules.rms_norm_forward, module)
            done["rms_norm"] = picks.choices["rms_norm"].backend
        elif cls == f"{fam.prefix}MLP" and act and act[0] in fn:
            module.__dict__[f"_doctor_{act[0]}"] = fn[act[0]]
            module._doctor_approximate = act[1]
            fwd = modules.swiglu_mlp_forward if act[0] == "swiglu" else modules.geglu_mlp_forward
            module.forward = types.MethodType(fwd, module)
            done[act[0]] = picks.choices[act[0]].backend
        elif cls == f"{fam.prefix}Attention":
            if "rope" in fn:
                module._doctor_rope = fn["rope"]
                original = getattr(type(module).forward, "_doctor_original", type(module).forward)
                module.forward = types.MethodType(modules.make_attention_forward(original), module)
                done["rope"] = picks.choices["rope"].backend
            if "attention" in fn:
                module._doctor_attention = fn["attention"]
    if "attention" in fn and _point_attention(base):
        done["attention"] = picks.choices["attention"].backend
    if "cross_entropy" in fn:
        base._doctor_cross_entropy = fn["cross_entropy"]
        base.forward = types.MethodType(modules.causal_lm_forward, base)
        done["cross_entropy"] = picks.choices["cross_entropy"].backend
    base._doctor_backends = done
    return model


def backends_of(model: Any) -> Dict[str, str]:
    """The backend per patched op of a model patched by patch_model ({} when it was not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "_orig_mod", base)
    return dict(getattr(base, "_doctor_backends", {}) or {})


# --- class level -------------------------------------------------------------------------------------------


def _set(owner: Any, name: str, value: Any, originals: List[Tuple[Any, str, Any]]) -> None:
    """setattr, remembering the previous value for unpatch_classes."""
    originals.append((owner, name, owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(owner, name)))
    setattr(owner, name, value)


_MISSING = object()


def _class_mlp_forward(self: Any, x: "torch.Tensor") -> "torch.Tensor":
    """The class-level MLP forward: the fused activation the config names, else the class's original forward."""
    act = activation_of(self.config)
    if act is None or act[0] not in modules.CLASS_OPS:
        out: "torch.Tensor" = type(self)._doctor_original_forward(self, x)
        return out
    if act[0] == "swiglu":
        return modules.swiglu_mlp_forward(self, x)
    self._doctor_approximate = act[1]
    return modules.geglu_mlp_forward(self, x)


def _wrap_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """XForCausalLM.__init__ that points the new model's config at the "doctor" attention."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if "attention" in modules.CLASS_OPS:
            _point_attention(self)

    return __init__


def patch_classes(skip: Optional[Iterable[str]] = ()) -> None:
    """Patch the Llama-family classes (models built afterwards run the chosen backends); idempotent."""
    skip = check_skip(skip)
    if _CLASS_STATE["active"]:
        unpatch_classes()
    ops = [op for op in ("rms_norm", "rope", "swiglu", "geglu", "cross_entropy", "attention") if op not in skip]
    picks = pick(ops, None)
    originals: List[Tuple[Any, str, Any]] = []
    for name, fn in picks.functions.items():
        if name == "attention":
            attn.CLASS_ATTENTION["fn"] = fn
            attn.register()
        modules.CLASS_OPS[name] = fn
    for lm_name, fam in FAMILIES.items():
        mod = importlib.import_module(fam.module)
        norm, mlp, att, lm = (getattr(mod, f"{fam.prefix}{c}") for c in ("RMSNorm", "MLP", "Attention", "ForCausalLM"))
        if "rms_norm" in ops:
            _set(norm, "_doctor_original_forward", norm.forward, originals)
            _set(norm, "forward", modules.rms_norm_forward, originals)
            _set(norm, "_doctor_offset", fam.norm_offset, originals)
        if "swiglu" in ops or "geglu" in ops:
            _set(mlp, "_doctor_original_forward", mlp.forward, originals)
            _set(mlp, "forward", _class_mlp_forward, originals)
        if "rope" in ops:
            _set(mod, "apply_rotary_pos_emb", modules.make_rope_switch(mod.apply_rotary_pos_emb), originals)
            _set(att, "forward", modules.make_attention_forward(att.forward), originals)
        if "cross_entropy" in ops:
            _set(lm, "forward", modules.causal_lm_forward, originals)
        if "attention" in ops:
            _set(lm, "__init__", _wrap_init(lm.__init__), originals)
    _CLASS_STATE.update(active=True, originals=originals, skip=skip)


def unpatch_classes() -> None:
    """Undo patch_classes (models built meanwhile keep their config's attention name, which still works)."""
    for owner, name, old in reversed(_CLASS_STATE["originals"]):
        if old is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, old)
    modules.CLASS_OPS.clear()
    attn.CLASS_ATTENTION.clear()
    _CLASS_STATE.update(active=False, originals=[], skip=())


def classes_patched() -> bool:
    """Whether patch_classes is in force."""
    return bool(_CLASS_STATE["active"])
