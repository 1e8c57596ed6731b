"""The training kernels' ops behind one signature per op, for the dispatcher, the probes and the runtime.

    fn = get("rms_norm", "triton")
    y = fn(x, weight, eps=1e-6, offset=0.0)

Each op has the signature of its public function in doctor.kernels:

    rms_norm(x, weight, eps=1e-6, offset=0.0) -> y
    rope(q, k, cos, sin) -> (q_out, k_out)            q/k [B, H, S, D] (views of [B, S, H, D] allowed)
    swiglu(gate, up) -> silu(gate) * up
    geglu(gate, up, approximate="none") -> gelu(gate) * up
    cross_entropy(hidden, weight, labels, ignore_index=-100, reduction="mean", num_items=None,
                  logit_softcap=None) -> 0-dim fp32 loss of hidden @ weight.T

and four kinds of backend: "triton" (doctor.kernels, this project's Triton kernels), "liger" (Liger-Kernel's
Triton ops, when installed), "torch-compile" (the torch reference through torch.compile) and "torch" (the
reference: plain torch, fp32 math, the result cast back to the input dtype; always available, never the
fast path). The loss also has "cut-cross-entropy" (Apple's Cut Cross-Entropy, when installed).

An adapter computes what doctor.kernels computes or raises; it never silently computes something else
(Liger's GeGLU has only the tanh approximation: asked for the exact one it raises NotImplementedError).
Importing this module imports nothing heavy (the doctor's fast path loads the dispatcher, which reads the
names here); torch, triton and the peers are imported when a backend is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    import torch

REFERENCE = "torch"

# Backends per op in order of preference (the dispatcher picks the fastest that passed its probe; this
# order breaks ties and is the order without timings). The reference is last.
BACKENDS: Mapping[str, Tuple[str, ...]] = {
    "rms_norm": ("triton", "liger", "torch-compile", REFERENCE),
    "rope": ("triton", "liger", "torch-compile", REFERENCE),
    "swiglu": ("triton", "liger", "torch-compile", REFERENCE),
    "geglu": ("triton", "liger", "torch-compile", REFERENCE),
    "cross_entropy": ("triton", "liger", "cut-cross-entropy", "torch-compile", REFERENCE),
}

# Distribution each backend needs beyond torch (the probe catalogue skips a backend whose package is absent).
REQUIRES: Mapping[str, Tuple[str, ...]] = {
    "triton": ("triton",),
    "liger": ("liger-kernel", "triton"),
    "torch-compile": ("triton",),  # Inductor generates Triton code on the GPU
    "cut-cross-entropy": ("cut-cross-entropy", "triton"),
    REFERENCE: (),
}

Num = Union[int, float, "torch.Tensor", None]


class BackendUnavailable(RuntimeError):
    """The backend's package is not importable here (a probe reports it as skipped, not as a failure)."""


def get(op: str, name: str) -> Callable[..., Any]:
    """The function of backend `name` for `op`; KeyError (listing the known names) for anything else."""
    if op not in BACKENDS:
        raise KeyError(f"unknown op {op!r}; known: {', '.join(BACKENDS)}")
    if name not in BACKENDS[op]:
        raise KeyError(f"unknown {op} backend {name!r}; known: {', '.join(BACKENDS[op])}")
    return _IMPLS[(op, name)]


def _import(module: str, what: str) -> Any:
    """importlib.import_module, an ImportError turned into BackendUnavailable naming the package."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"{what} is not importable here: {exc}") from exc


# --- references (fp32 math by default; compute_dtype lets a probe evaluate them in fp64 or in the low dtype) ---


def _dt(compute_dtype: Optional["torch.dtype"]) -> "torch.dtype":
    import torch

    return torch.float32 if compute_dtype is None else compute_dtype


def rms_norm_reference(x: "torch.Tensor", weight: "torch.Tensor", eps: float = 1e-6, offset: float = 0.0,
                       compute_dtype: Optional["torch.dtype"] = None) -> "torch.Tensor":
    """x / rms(x) * (offset + weight) over the last dim, computed in `compute_dtype` (fp32), cast to x's dtype."""
    import torch

    dt = _dt(compute_dtype)
    xc = x.to(dt)
    y = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * (weight.to(dt) + offset)
    return y.to(x.dtype)


def _rotate_half(t: "torch.Tensor") -> "torch.Tensor":
    import torch

    half = t.shape[-1] // 2
    return torch.cat((-t[..., half:], t[..., :half]), dim=-1)


def rope_reference(q: "torch.Tensor", k: "torch.Tensor", cos: "torch.Tensor", sin: "torch.Tensor",
                   compute_dtype: Optional["torch.dtype"] = None) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """Hugging Face rotate-half RoPE: t * cos + rotate_half(t) * sin; cos/sin [B or 1, S, D] broadcast over heads."""
    dt = _dt(compute_dtype)
    c, s = cos.to(dt).unsqueeze(1), sin.to(dt).unsqueeze(1)
    qc, kc = q.to(dt), k.to(dt)
    return (qc * c + _rotate_half(qc) * s).to(q.dtype), (kc * c + _rotate_half(kc) * s).to(k.dtype)


def swiglu_reference(gate: "torch.Tensor", up: "torch.Tensor",
                     compute_dtype: Optional["torch.dtype"] = None) -> "torch.Tensor":
    """silu(gate) * up in `compute_dtype` (fp32), cast to gate's dtype."""
    import torch.nn.functional as F

    dt = _dt(compute_dtype)
    return (F.silu(gate.to(dt)) * up.to(dt)).to(gate.dtype)


def geglu_reference(gate: "torch.Tensor", up: "torch.Tensor", approximate: str = "none",
                    compute_dtype: Optional["torch.dtype"] = None) -> "torch.Tensor":
    """gelu(gate, approximate) * up in `compute_dtype` (fp32), cast to gate's dtype."""
    import torch.nn.functional as F

    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', not {approximate!r}")
    dt = _dt(compute_dtype)
    return (F.gelu(gate.to(dt), approximate=approximate) * up.to(dt)).to(gate.dtype)


def cross_entropy_reference(hidden: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor",
                            ignore_index: int = -100, reduction: str = "mean", num_items: Num = None,
                            logit_softcap: Optional[float] = None,
                            compute_dtype: Optional["torch.dtype"] = None) -> "torch.Tensor":
    """Cross-entropy of hidden @ weight.T (materialised logits) in `compute_dtype` (fp32); a 0-dim loss in
    that dtype (fp32 by default, as doctor.kernels returns); all labels ignored gives 0 with zero gradients."""
    import torch
    import torch.nn.functional as F

    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    dt = _dt(compute_dtype)
    logits = hidden.reshape(-1, hidden.shape[-1]).to(dt) @ weight.to(dt).t()
    if logit_softcap is not None:
        logits = logit_softcap * torch.tanh(logits / logit_softcap)
    lab = labels.reshape(-1).long()
    total = F.cross_entropy(logits, lab, ignore_index=ignore_index, reduction="sum")
    n_valid = int((lab != ignore_index).sum())
    if n_valid == 0:
        return total * 0.0
    if num_items is not None:
        return total / float(num_items)
    return total / n_valid if reduction == "mean" else total


REFERENCES: Mapping[str, Callable[..., Any]] = {
    "rms_norm": rms_norm_reference, "rope": rope_reference, "swiglu": swiglu_reference,
    "geglu": geglu_reference, "cross_entropy": cross_entropy_reference,
}


# --- doctor's Triton kernels ---


def _kernels(name: str) -> Callable[..., Any]:
    """doctor.kernels.<name>, taken from its op module (a missing module is a packaging bug: it raises)."""
    import importlib

    _import("triton", "triton")
    import doctor.kernels as kernels

    fn: Callable[..., Any] = getattr(importlib.import_module(f"doctor.kernels.{kernels._OPS[name]}"), name)
    return fn


def triton_rms_norm(x: "torch.Tensor", weight: "torch.Tensor", eps: float = 1e-6, offset: float = 0.0) -> "torch.Tensor":
    """doctor.kernels.rms_norm (module norm)."""
    out: "torch.Tensor" = _kernels("rms_norm")(x, weight, eps=eps, offset=offset)
    return out


def triton_rope(q: "torch.Tensor", k: "torch.Tensor", cos: "torch.Tensor",
                sin: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor"]:
    """doctor.kernels.rope (module rotary)."""
    out: Tuple["torch.Tensor", "torch.Tensor"] = _kernels("rope")(q, k, cos, sin)
    return out


def triton_swiglu(gate: "torch.Tensor", up: "torch.Tensor") -> "torch.Tensor":
    """doctor.kernels.swiglu."""
    out: "torch.Tensor" = _kernels("swiglu")(gate, up)
    return out


def triton_geglu(gate: "torch.Tensor", up: "torch.Tensor", approximate: str = "none") -> "torch.Tensor":
    """doctor.kernels.geglu."""
    out: "torch.Tensor" = _kernels("geglu")(gate, up, approximate=approximate)
    return out


def triton_cross_entropy(hidden: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor",
                         ignore_index: int = -100, reduction: str = "mean", num_items: Num = None,
                         logit_softcap: Optional[float] = None) -> "torch.Tensor":
    """doctor.kernels.fused_linear_cross_entropy."""
    out: "torch.Tensor" = _kernels("fused_linear_cross_entropy")(
        hidden, weight, labels, ignore_index=ignore_index, reduction=reduction, num_items=num_items,
        logit_softcap=logit_softcap)
    return out


# --- Liger-Kernel (its ops modules, not liger_kernel.transformers: that one imports transformers) ---


def liger_rms_norm(x: "torch.Tensor", weight: "torch.Tensor", eps: float = 1e-6, offset: float = 0.0) -> "torch.Tensor":
    """LigerRMSNormFunction in its 'gemma' casting mode (fp32 throughout, one rounding: the reference's
    semantics), not in place (the upstream gradient may be needed elsewhere, as for Gemma-2's residuals)."""
    mod = _import("liger_kernel.ops.rms_norm", "liger-kernel")
    out: "torch.Tensor" = mod.LigerRMSNormFunction.apply(x, weight, eps, offset, "gemma", False)
    return out


def liger_rope(q: "torch.Tensor", k: "torch.Tensor", cos: "torch.Tensor",
               sin: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor"]:
    """LigerRopeFunction (the op behind liger_rotary_pos_emb)."""
    mod = _import("liger_kernel.ops.rope", "liger-kernel")
    q_out, k_out = mod.LigerRopeFunction.apply(q, k, cos, sin)
    return q_out, k_out


def liger_swiglu(gate: "torch.Tensor", up: "torch.Tensor") -> "torch.Tensor":
    """LigerSiLUMulFunction."""
    mod = _import("liger_kernel.ops.swiglu", "liger-kernel")
    out: "torch.Tensor" = mod.LigerSiLUMulFunction.apply(gate, up)
    return out


def liger_geglu(gate: "torch.Tensor", up: "torch.Tensor", approximate: str = "none") -> "torch.Tensor":
    """LigerGELUMulFunction: the tanh approximation only (Gemma's gelu_pytorch_tanh)."""
    if approximate != "tanh":
        raise NotImplementedError(f"Liger's GeGLU computes only approximate='tanh', not {approximate!r}")
    mod = _import("liger_kernel.ops.geglu", "liger-kernel")
    out: "torch.Tensor" = mod.LigerGELUMulFunction.apply(gate, up)
    return out


def liger_cross_entropy(hidden: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor",
                        ignore_index: int = -100, reduction: str = "mean", num_items: Num = None,
                        logit_softcap: Optional[float] = None) -> "torch.Tensor":
    """LigerFusedLinearCrossEntropyFunction; num_items as a sum divided by it (transformers' convention)."""
    mod = _import("liger_kernel.ops.fused_linear_cross_entropy", "liger-kernel")
    h = hidden.reshape(-1, hidden.shape[-1])
    lab = labels.reshape(-1)
    red = "sum" if num_items is not None else reduction
    # positional: autograd.Function.apply takes no keywords (input, weight, target, bias, ce_weight,
    # ignore_index, lse_square_scale, label_smoothing, reduction, softcap)
    loss: "torch.Tensor" = mod.LigerFusedLinearCrossEntropyFunction.apply(
        h, weight, lab, None, None, ignore_index, 0.0, 0.0, red, logit_softcap)[0]
    if num_items is not None:
        loss = loss / num_items
    return loss.float()


# --- Cut Cross-Entropy ---


def cce_cross_entropy(hidden: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor",
                      ignore_index: int = -100, reduction: str = "mean", num_items: Num = None,
                      logit_softcap: Optional[float] = None) -> "torch.Tensor":
    """cut_cross_entropy.linear_cross_entropy (its default 'cce' implementation, unshifted labels)."""
    mod = _import("cut_cross_entropy", "cut-cross-entropy")
    red = "sum" if num_items is not None else reduction
    loss: "torch.Tensor" = mod.linear_cross_entropy(hidden, weight, labels, ignore_index=ignore_index,
                                                    softcap=logit_softcap, reduction=red)
    if num_items is not None:
        loss = loss / num_items
    return loss.float()


# --- torch.compile of the reference ---

_COMPILED: Dict[str, Callable[..., Any]] = {}


def _compiled(op: str) -> Callable[..., Any]:
    """torch.compile of the op's reference, built once per process."""
    fn = _COMPILED.get(op)
    if fn is None:
        import torch

        fn = _COMPILED[op] = torch.compile(REFERENCES[op])
    return fn


def compile_rms_norm(x: "torch.Tensor", weight: "torch.Tensor", eps: float = 1e-6, offset: float = 0.0) -> "torch.Tensor":
    """torch.compile of rms_norm_reference."""
    out: "torch.Tensor" = _compiled("rms_norm")(x, weight, eps, offset)
    return out


def compile_rope(q: "torch.Tensor", k: "torch.Tensor", cos: "torch.Tensor",
                 sin: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor"]:
    """torch.compile of rope_reference."""
    q_out, k_out = _compiled("rope")(q, k, cos, sin)
    return q_out, k_out


def compile_swiglu(gate: "torch.Tensor", up: "torch.Tensor") -> "torch.Tensor":
    """torch.compile of swiglu_reference."""
    out: "torch.Tensor" = _compiled("swiglu")(gate, up)
    return out


def compile_geglu(gate: "torch.Tensor", up: "torch.Tensor", approximate: str = "none") -> "torch.Tensor":
    """torch.compile of geglu_reference."""
    out: "torch.Tensor" = _compiled("geglu")(gate, up, approximate)
    return out


def compile_cross_entropy(hidden: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor",
                          ignore_index: int = -100, reduction: str = "mean", num_items: Num = None,
                          logit_softcap: Optional[float] = None) -> "torch.Tensor":
    """torch.compile of cross_entropy_reference (it materialises the logits, as the reference does)."""
    out: "torch.Tensor" = _compiled("cross_entropy")(hidden, weight, labels, ignore_index, reduction, num_items,
                                                     logit_softcap)
    return out


_IMPLS: Dict[Tuple[str, str], Callable[..., Any]] = {
    ("rms_norm", "triton"): triton_rms_norm,
    ("rms_norm", "liger"): liger_rms_norm,
    ("rms_norm", "torch-compile"): compile_rms_norm,
    ("rms_norm", REFERENCE): rms_norm_reference,
    ("rope", "triton"): triton_rope,
    ("rope", "liger"): liger_rope,
    ("rope", "torch-compile"): compile_rope,
    ("rope", REFERENCE): rope_reference,
    ("swiglu", "triton"): triton_swiglu,
    ("swiglu", "liger"): liger_swiglu,
    ("swiglu", "torch-compile"): compile_swiglu,
    ("swiglu", REFERENCE): swiglu_reference,
    ("geglu", "triton"): triton_geglu,
    ("geglu", "liger"): liger_geglu,
    ("geglu", "torch-compile"): compile_geglu,
    ("geglu", REFERENCE): geglu_reference,
    ("cross_entropy", "triton"): triton_cross_entropy,
    ("cross_entropy", "liger"): liger_cross_entropy,
    ("cross_entropy", "cut-cross-entropy"): cce_cross_entropy,
    ("cross_entropy", "torch-compile"): compile_cross_entropy,
    ("cross_entropy", REFERENCE): cross_entropy_reference,
}
# one list of names: every (op, backend) declared above has an implementation and nothing else does
assert set(_IMPLS) == {(op, b) for op, names in BACKENDS.items() for b in names}
assert all(REFERENCE == names[-1] for names in BACKENDS.values()) and set(REQUIRES) >= {
    b for names in BACKENDS.values() for b in names}

__all__ = ["BACKENDS", "REFERENCE", "REFERENCES", "REQUIRES", "BackendUnavailable", "get"]
