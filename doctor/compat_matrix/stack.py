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
