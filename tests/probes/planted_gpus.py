"""Probe bodies that behave by the GPU their child was shown (CUDA_VISIBLE_DEVICES), run on the CPU without torch."""

from __future__ import annotations

import os
import time

CVD = "CUDA_VISIBLE_DEVICES"


def shown(ctx):  # type: ignore[no-untyped-def]
    """Passes, and tells which GPU the child was shown (and in which order CUDA would count)."""
    return {"error": 0.0, "tolerance": 1e-6, "time_ms": 1.0,
            "detail": f"{CVD}={os.environ.get(CVD)} CUDA_DEVICE_ORDER={os.environ.get('CUDA_DEVICE_ORDER')}"}


def wrong_on(ctx):  # type: ignore[no-untyped-def]
    """Computes the wrong numbers when shown the GPU ctx.params['bad'] (as a GPU with failing memory would)."""
    if os.environ.get(CVD) == ctx.params["bad"]:
        return {"error": 0.5, "tolerance": 1e-3, "detail": "planted: max error 0.5 on this GPU"}
    return {"error": 1e-7, "tolerance": 1e-3, "time_ms": 2.0, "detail": "fine"}


def crash_on(ctx):  # type: ignore[no-untyped-def]
    """Dies (SIGABRT, as a failed CUDA assertion does) when shown the GPU ctx.params['bad']."""
    if os.environ.get(CVD) == ctx.params["bad"]:
        os.abort()
    return {"error": 0.0, "tolerance": 0.0, "time_ms": 3.0, "detail": "fine"}


def slow_on(ctx):  # type: ignore[no-untyped-def]
    """Takes ctx.params['slow_s'] when shown the GPU ctx.params['on'], else ctx.params['fast_s']; the time is the body's."""
    time.sleep(ctx.params["slow_s"] if os.environ.get(CVD) == ctx.params["on"] else ctx.params["fast_s"])
    return {"error": 0.0, "tolerance": 1e-6, "detail": "slept"}


def always_fails(ctx):  # type: ignore[no-untyped-def]
    """Raises on every GPU: the environment's fault, not a GPU's."""
    raise RuntimeError("planted: No operator found for this build")
