"""Probe bodies: each `body(ctx) -> dict` runs in a probe child process, never in the doctor.

Modules here import torch and optional packages (triton, xformers, flash_attn, bitsandbytes) inside the
bodies only, so importing a body module is cheap and a missing package fails the one probe that needs it.
Shared numerics live in `_numerics` (errors, tolerances, timing) and `_attn_check` (attention fwd+bwd check).
"""
