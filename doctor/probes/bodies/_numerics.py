"""Numerics shared by probe bodies: dtypes, error vs reference, tolerances, TF32 mode, timing.

Error convention (every body): max |out - ref| / max |ref|, i.e. the largest deviation measured in units
of the tensor's own scale. Element-wise relative error is ill-conditioned near zeros of the reference
(an attention output or a gradient has many), so it would flag correct kernels; normalising by the max
keeps one meaning across ops and dtypes. A non-finite output gives an infinite error (a wrong result).

Tolerance convention for low precision (DESIGN, "Kernels"): a kernel's error may be at most 2x the
error torch itself makes in that dtype on the same inputs against the same reference, with a floor of
one machine epsilon of the dtype (in the same normalised units; x 4 sqrt(reduction length) for fp32) so a
lucky, tiny own-error does not produce an absurdly tight bound. The factor can be raised per probe with
params['factor'] (catalogue), should a correct kernel prove to need it on real hardware.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover - typing only; bodies import torch at run time
    import torch

OWN_ERROR_FACTOR = 2.0  # DESIGN: within 2x of torch's own low-precision error
FP32_FLOOR_FACTOR = 4.0  # fp32 floor: 4 * sqrt(reduction length) * eps32 (see lowp_tolerance)

_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64", "double": "float64",
}


def torch_dtype(name: Any) -> "torch.dtype":
    """'bf16' / 'bfloat16' / torch.bfloat16 -> torch.bfloat16; ValueError for anything else."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    key = _DTYPE_NAMES.get(str(name).lower().replace("torch.", ""))
    if key is None:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(set(_DTYPE_NAMES.values()))}")
    return getattr(torch, key)


def dtype_name(dtype: "torch.dtype") -> str:
    """torch.bfloat16 -> 'bfloat16'."""
    return str(dtype).replace("torch.", "")


def eps(dtype: "torch.dtype") -> float:
    """Machine epsilon (2x unit roundoff) of a floating dtype."""
    import torch

    return float(torch.finfo(dtype).eps)


def capability(device: str) -> Optional[tuple]:
    """(major, minor) of the current CUDA device, or None on CPU."""
    if device != "cuda":
        return None
    import torch

    return tuple(torch.cuda.get_device_capability())


def default_lowp_dtype(device: str) -> "torch.dtype":
    """The dtype training would use here: bf16 where the GPU has it (cc >= 8.0), else fp16; bf16 on CPU."""
    import torch

    cc = capability(device)
    # Not torch.cuda.is_bf16_supported(): newer torch answers True on cc < 8.0 through emulation.
    if cc is not None and cc < (8, 0):
        return torch.float16
    return torch.bfloat16


def dtype_skip_reason(device: str, dtype: "torch.dtype") -> Optional[str]:
    """Why this dtype cannot be probed on this device (bf16 below cc 8.0), or None."""
    import torch

    cc = capability(device)
    if dtype == torch.bfloat16 and cc is not None and cc < (8, 0):
        return f"cc {cc[0]}.{cc[1]} has no native bf16 (needs cc >= 8.0)"
    return None


def probe_dtype(ctx_params: Mapping[str, Any], device: str) -> "torch.dtype":
    """params['dtype'] when given, else the training dtype for this device."""
    name = ctx_params.get("dtype")
    return torch_dtype(name) if name else default_lowp_dtype(device)


def rel_err(out: "torch.Tensor", ref: "torch.Tensor") -> float:
    """max |out - ref| / max |ref| in float64; inf when out has NaN/Inf or the shapes differ."""
    import torch

    if tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"output shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    o, r = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    if not bool(torch.isfinite(o).all()):
        return float("inf")
    scale = float(r.abs().max()) if r.numel() else 0.0
    diff = float((o - r).abs().max()) if o.numel() else 0.0
    return diff / scale if scale > 0 else diff


def lowp_tolerance(own_error: float, dtype: "torch.dtype", reduce_len: int = 1,
                   factor: float = OWN_ERROR_FACTOR) -> float:
    """factor x torch's own error in `dtype`, floored at one epsilon of `dtype` (x sqrt(reduce_len) for fp32).

    In bf16/fp16 the rounding of stored values dominates and is shared by kernel and own computation, so
    2x own is a fair bound. In fp32 both errors are a few ulps, set by the accumulation order over the
    reduced dimension (sqrt(n) growth of random rounding errors) and by cancellation (the softmax backward's
    dP - rowsum(dO*O)), which a fused kernel does not share with the textbook computation; the floor
    4 * sqrt(reduce_len) * eps keeps that from failing correct kernels (seen: CPU flash dq at 1.3x the
    1x-sqrt floor) while a kernel computing in bf16/TF32 (errors ~1e-3) is still far outside it.
    """
    import torch

    floor = eps(dtype)
    if dtype in (torch.float32, torch.float64):
        floor *= FP32_FLOOR_FACTOR * max(1.0, float(reduce_len)) ** 0.5
    return max(factor * own_error, floor)


def own_error_factor(params: Mapping[str, Any]) -> float:
    """params['factor'] when the catalogue sets one, else DESIGN's 2."""
    return float(params.get("factor", OWN_ERROR_FACTOR))


def synchronize(device: str) -> None:
    """Wait for queued GPU work (no-op on CPU), so wall time measures the kernels."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timing_iters(params: Mapping[str, Any], device: str) -> tuple:
    """(warmup, iters) from params, defaulting to (3, 20) on CUDA and (1, 3) on CPU."""
    warm_default, iters_default = (3, 20) if device == "cuda" else (1, 3)
    return int(params.get("warmup", warm_default)), max(1, int(params.get("iters", iters_default)))


def median_ms(step: Callable[[], Any], device: str, warmup: int, iters: int, rounds: int = 5) -> float:
    """Per-run time in ms: median over `rounds` of `iters` back-to-back runs with one sync per round.

    Syncing after every sub-millisecond run would time launch latency and Python, not the kernels;
    back-to-back runs keep the GPU busy, so rounds of them measure the op (and the median drops outliers).
    """
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(max(1, rounds)):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1000.0 / iters)
    return float(statistics.median(times))


@contextlib.contextmanager
def matmul_tf32(enabled: bool) -> Iterator[None]:
    """Set TF32 for CUDA fp32 matmuls for the duration, then restore the previous setting.

    torch >= 2.9 has `torch.backends.cuda.matmul.fp32_precision` and raises when the legacy `allow_tf32`
    flag is read after the new one was set, so use the new API when it exists and the legacy one otherwise.
    """
    import torch

    m = torch.backends.cuda.matmul
    try:
        previous = m.fp32_precision
        new_api = True
    except AttributeError:
        previous, new_api = m.allow_tf32, False
    try:
        if new_api:
            m.fp32_precision = "tf32" if enabled else "ieee"
        else:
            m.allow_tf32 = enabled
        yield
    finally:
        if new_api:
            m.fp32_precision = previous
        else:
            m.allow_tf32 = previous


def device_label(device: str) -> str:
    """'NVIDIA H100 80GB HBM3 (cc 9.0)' or 'cpu'."""
    if device != "cuda":
        return "cpu"
    import torch

    cc = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (cc {cc[0]}.{cc[1]})"


def fmt(x: Optional[float]) -> str:
    """Compact number for detail lines."""
    return "n/a" if x is None else f"{x:.3g}"
