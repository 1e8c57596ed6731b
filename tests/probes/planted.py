"""Probe bodies with planted faults, run on the CPU in real child processes (no torch)."""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

from doctor._util.events import FD_ENV


def ok(ctx):  # type: ignore[no-untyped-def]
    """A healthy probe."""
    return {"error": 1e-7, "tolerance": 1e-6, "detail": "fine", "time_ms": 1.5}


def noisy_ok(ctx):  # type: ignore[no-untyped-def]
    """Prints junk on stdout and stderr, then passes: the channel must be unaffected."""
    print('{"event": "result", "status": "pass"} junk on stdout')
    print("more junk", file=sys.stderr)
    return ok(ctx)


def segfault(ctx):  # type: ignore[no-untyped-def]
    """Dereferences NULL, like a broken extension."""
    print("about to crash: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
    ctypes.string_at(0)


def abort(ctx):  # type: ignore[no-untyped-def]
    """abort(), like a failed CUDA assertion."""
    os.abort()


def hard_exit(ctx):  # type: ignore[no-untyped-def]
    """os._exit mid-probe."""
    os._exit(3)


def hang(ctx):  # type: ignore[no-untyped-def]
    """Never returns, like a deadlocked kernel."""
    time.sleep(600)


def raises(ctx):  # type: ignore[no-untyped-def]
    """An ordinary exception."""
    raise RuntimeError("planted failure: No operator found for `memory_efficient_attention_forward`")


def garbage_channel(ctx):  # type: ignore[no-untyped-def]
    """Writes garbage straight onto the result channel."""
    os.write(int(os.environ[FD_ENV]), b"\x00garbage, not a result\n")
    return ok(ctx)


def forged_result(ctx):  # type: ignore[no-untyped-def]
    """Writes a well-formed result event whose numbers are not numbers straight onto the channel."""
    event = {"event": "result", "id": ctx.params["id"], "status": "pass", "error": [1], "tolerance": {"a": 1},
             "time_ms": "soon"}
    os.write(int(os.environ[FD_ENV]), (json.dumps(event) + "\n").encode())
    return ok(ctx)


def garbage_return(ctx):  # type: ignore[no-untyped-def]
    """Returns something that is not a result."""
    return "all good, trust me"


def garbage_numbers(ctx):  # type: ignore[no-untyped-def]
    """Returns a result whose numbers are not numbers."""
    return {"error": "small", "tolerance": 1e-3}


def wrong(ctx):  # type: ignore[no-untyped-def]
    """Computes the wrong answer."""
    return {"error": 0.5, "tolerance": 1e-3, "detail": "max rel err 0.5"}


def nan(ctx):  # type: ignore[no-untyped-def]
    """NaN output."""
    return {"error": float("nan"), "tolerance": 1e-3}


def skip(ctx):  # type: ignore[no-untyped-def]
    """Decides at run time that it cannot run."""
    return {"status": "skipped", "detail": "cc 7.5 has no bf16"}


def sleepy(ctx):  # type: ignore[no-untyped-def]
    """Takes a second, then passes (for the parallel-groups test)."""
    time.sleep(1.0)
    return {"error": 0.0, "tolerance": 1e-6, "detail": f"pid {os.getpid()}"}


def whoami(ctx):  # type: ignore[no-untyped-def]
    """Passes and says which process ran it."""
    return {"error": 0.0, "tolerance": 1e-6, "detail": f"pid {os.getpid()}"}


def cuda_error(ctx):  # type: ignore[no-untyped-def]
    """Raises the way torch does after an illegal memory access (the context is now unusable)."""
    raise RuntimeError("CUDA error: an illegal memory access was encountered")
