"""The training stack: the distributions a fine-tuning run imports together (one list, read everywhere).

The requirements rule checks each one's own Requires-Dist, the report's facts list their versions,
and the probe fingerprint hashes them (plus a few extras of its own).
"""

from __future__ import annotations

from typing import Tuple

# Canonical (PEP 503) names, in report order: torch and its compiler, kernel libraries, HF libraries, unsloth.
TRAINING_STACK: Tuple[str, ...] = (
    "torch", "triton", "xformers", "flash-attn", "bitsandbytes", "transformers", "trl", "peft", "accelerate",
    "unsloth", "unsloth-zoo", "liger-kernel",
)

# Compiled against (or shipped with) one torch build: replacing any of them can break the others, so a plan
# keeps them (resolve.keep), pins keep them (resolve.pins), and "any version meeting the spec" is the wrong fix
# for them (rules.requirements). torchao's C++ ops are built per torch release too.
TORCH_COUPLED: Tuple[str, ...] = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton", "xformers",
                                  "flash-attn", "bitsandbytes", "torchao")
# Distributions PyTorch publishes per CUDA family: only ever installed from that family's index.
TORCH_FAMILY: Tuple[str, ...] = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton", "xformers")
