"""The probe catalogue: every probe is one declaration (adding one is adding a line here).

Bodies live in doctor.probes.bodies.* and run in a child process. Shapes are small enough to finish
in seconds on any GPU and large enough to take the real kernels' code paths.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from doctor.backends.ops import BACKENDS as KERNEL_BACKENDS
from doctor.backends.ops import REQUIRES as KERNEL_REQUIRES

from doctor.probes.spec import ProbeSpec

# Bump when probes change meaning: part of the fingerprint, so old verdicts become misses.
CATALOGUE_VERSION = 3  # 2: the training kernels' ops (kernels.*) and their dispatch probes; 3: SDPA's default (sdpa.default)

B = "doctor.probes.bodies"
ATTN = {"batch": 2, "heads": 8, "seq": 512, "head_dim": 64, "causal": True}
# The training kernels' ops at shapes that take their real code paths and time in milliseconds on any GPU
# (the benchmark's ANCHORS shapes are 4-16x larger); every backend of an op runs the same shapes, so the
# dispatcher compares like with like. GeGLU in the tanh form every GeGLU model (Gemma) uses.
KOPS: Dict[str, Dict[str, Any]] = {
    "rms_norm": {"rows": 4096, "hidden": 4096},
    "rope": {"batch": 1, "heads_q": 32, "heads_k": 8, "seq": 2048, "head_dim": 128, "layout": "bshd"},
    "swiglu": {"rows": 4096, "inter": 8192},
    "geglu": {"rows": 4096, "inter": 8192, "approximate": "tanh"},
    "cross_entropy": {"tokens": 2048, "hidden": 2048, "vocab": 32768, "ignored": 0.1},
}
KOPS_TITLES = {"rms_norm": "RMSNorm", "rope": "RoPE (q and k, views of [B,S,H,D])", "swiglu": "SwiGLU silu(gate)*up",
               "geglu": "GeGLU gelu_tanh(gate)*up", "cross_entropy": "fused linear cross-entropy"}
# backend -> (probe id suffix, who, group, timeout s); the first launch of a Triton backend compiles (and autotunes)
KBACKENDS = {"triton": ("triton", "doctor's Triton kernel", "kernels-triton", 180.0),
             "liger": ("liger", "Liger-Kernel", "kernels-liger", 180.0),
             "cut-cross-entropy": ("cce", "Cut Cross-Entropy", "kernels-cce", 180.0),
             "torch-compile": ("compile", "torch.compile of the reference", "kernels-compile", 240.0)}


def probe(id: str, title: str, target: str, **kw) -> ProbeSpec:  # type: ignore[no-untyped-def]
    """Declare a probe (keyword arguments as in ProbeSpec)."""
    module = target.partition(":")[0]
    return ProbeSpec(id=id, title=title, target=target if "." in module else f"{B}.{target}", **kw)


CATALOGUE: Tuple[ProbeSpec, ...] = (
    probe("cuda.context", "CUDA context, device properties, allocation", "cuda:context", group="cuda", timeout=60),
    probe("matmul.fp32", "fp32 matmul (TF32 off) vs fp64", "cuda:matmul", group="cuda", params={"dtype": "float32", "tf32": False}),
    probe("matmul.tf32", "fp32 matmul with TF32 vs fp64", "cuda:matmul", group="cuda", params={"dtype": "float32", "tf32": True}),
    probe("matmul.fp16", "fp16 matmul vs fp64", "cuda:matmul", group="cuda", params={"dtype": "float16"}),
    probe("matmul.bf16", "bf16 matmul vs fp64", "cuda:matmul", group="cuda", min_cc=(8, 0), params={"dtype": "bfloat16"}),
    probe("triton.compile", "Triton: compile and run a small kernel", "triton_compile:vector_add", requires=("triton",),
          group="compile", timeout=120),
    probe("torch.compile", "torch.compile (Inductor) of a small function, fwd+bwd", "torch_compile:small_function",
          requires=("triton",), group="compile", timeout=180),
    probe("sdpa.flash", "torch SDPA, flash backend, causal fwd+bwd", "attention:sdpa", op="attention", backend="sdpa-flash",
          group="attention", min_cc=(8, 0), params={**ATTN, "backend": "flash"}),
    probe("sdpa.efficient", "torch SDPA, memory-efficient backend, causal fwd+bwd", "attention:sdpa", op="attention",
          backend="sdpa-efficient", group="attention", params={**ATTN, "backend": "efficient"}),
    probe("sdpa.cudnn", "torch SDPA, cuDNN backend, causal fwd+bwd", "attention:sdpa", op="attention", backend="sdpa-cudnn",
          group="attention", min_cc=(8, 0), params={**ATTN, "backend": "cudnn"}),
    probe("sdpa.default", "torch SDPA, its own backend choice, causal fwd+bwd", "attention:sdpa", op="attention",
          backend="sdpa", group="attention", params={**ATTN, "backend": "default"}),
    probe("sdpa.math", "torch SDPA, math backend, causal fwd+bwd", "attention:sdpa", op="attention", backend="sdpa-math",
          group="attention", params={**ATTN, "backend": "math"}),
    probe("xformers.mea", "xformers memory_efficient_attention, LowerTriangularMask, fwd+bwd", "xformers_probe:mea",
          op="attention", backend="xformers", requires=("xformers",), group="xformers", params=ATTN),
    probe("xformers.bias-to", "xformers attention bias .to(device, dtype) under inference_mode", "xformers_probe:bias_to",
          requires=("xformers",), group="xformers"),
    probe("flash_attn.func", "flash-attn flash_attn_func causal fwd+bwd", "flash_attn_probe:func", op="attention",
          backend="flash-attn", requires=("flash-attn",), min_cc=(8, 0), group="flash_attn", params=ATTN),
    probe("bnb.4bit", "bitsandbytes NF4 quantize/dequantize round trip and 4-bit matmul", "bnb_probe:four_bit",
          requires=("bitsandbytes",), group="bnb"),
    probe("bnb.adam8bit", "bitsandbytes 8-bit AdamW step vs torch AdamW", "bnb_probe:adam8bit", requires=("bitsandbytes",),
          group="bnb"),
    probe("dispatch.attention", "the dispatcher's attention pick, run and verified", "dispatch_probe:attention",
          group="dispatch", params=ATTN),
    *(probe(f"kernels.{op}.{KBACKENDS[b][0]}", f"{KOPS_TITLES[op]}: {KBACKENDS[b][1]}, fwd+bwd vs fp32 reference",
            f"kernel_ops:{op}", op=op, backend=b, requires=KERNEL_REQUIRES[b], group=KBACKENDS[b][2],
            timeout=KBACKENDS[b][3], params={**KOPS[op], "backend": b})
      for b in KBACKENDS for op in KERNEL_BACKENDS if b in KERNEL_BACKENDS[op]),
    *(probe(f"dispatch.{op}", f"the dispatcher's {op} pick, run and verified", "kernel_ops:dispatch", group="dispatch",
            timeout=240.0, params={**KOPS[op], "op": op}) for op in KERNEL_BACKENDS),
)


# Attention at a model's training shapes (doctor.runtime asks for these): every backend but the slow ones, bf16.
ATTN_TRAIN_BACKENDS: Dict[str, Dict[str, Any]] = {
    "flash-attn": {"requires": ("flash-attn",), "min_cc": (8, 0)},
    "sdpa": {},
    "sdpa-flash": {"min_cc": (8, 0)},
    "sdpa-cudnn": {"min_cc": (8, 0)},
    "sdpa-efficient": {},
    "xformers": {"requires": ("xformers",)},
}
ATTN_TRAIN_TOKENS = 16384  # batch x seq of the probe (the LoRA anchor trains 8 x 2048)
ATTN_TRAIN_SCORES = 2 ** 29  # at most this many attention scores (batch x heads x seq^2): the fp32 reference
# materialises them a few times over (2 GiB each), so long sequences probe a smaller batch


def attention_at(heads: int, kv_heads: int, head_dim: int, seq: int) -> Tuple[ProbeSpec, ...]:
    """Attention probes at one model's training shapes (causal, bf16, fwd+bwd), one per backend; their ids
    ("attention.h32kv8d128s2048.sdpa") name the shape, so verdicts for several models coexist in the cache."""
    tag = f"h{heads}kv{kv_heads}d{head_dim}s{seq}"
    batch = max(1, min(ATTN_TRAIN_TOKENS // seq, ATTN_TRAIN_SCORES // (heads * seq * seq)))
    params = {"batch": batch, "heads": heads, "kv_heads": kv_heads, "seq": seq,
              "head_dim": head_dim, "causal": True, "dtype": "bfloat16"}
    return tuple(probe(f"attention.{tag}.{b}", f"attention {b} at {tag} (training shapes), causal bf16 fwd+bwd",
                       "attention:at_shape", op="attention", backend=b, group="attention-train", timeout=120.0,
                       params={**params, "backend": b}, **extra)
                 for b, extra in ATTN_TRAIN_BACKENDS.items())


def select(only: List[str]) -> Tuple[ProbeSpec, ...]:
    """Probes whose id equals or starts with one of `only` ('sdpa' selects every sdpa.*); all when empty."""
    if not only:
        return CATALOGUE
    return tuple(p for p in CATALOGUE if any(p.id == o or p.id.startswith(o.rstrip(".") + ".") for o in only))
