"""Attention behind one signature: the SDPA backends, flash-attn and xformers (adapters, not kernels)."""
