"""RMSNorm: y = x / sqrt(mean(x^2) + eps) * (offset + weight), fp32 math, one pass each way.

Forward: each program normalises ROWS rows held whole in registers (the row is read once), writes y in
x's dtype and the row's 1/rms (fp32, 4 bytes a row) for backward. Backward: a persistent grid of a few
programs per multiprocessor, each walking a contiguous run of rows: it reads dy, x and 1/rms once,
writes dx, and keeps its share of the weight gradient (sum over its rows of dy * x_hat) in fp32
registers; at the end each program writes that share to a [programs, hidden] fp32 buffer, and a small
kernel sums the buffer's rows into the weight's dtype (as Liger and Unsloth do; no atomics, so the
result is deterministic). offset=1.0 is Gemma's variant, x_hat * (1 + weight).

Bytes moved per element (the anchors' count): forward reads x and writes y, backward reads dy and x and
writes dx: 5 x rows x hidden x the element size, plus 1/rms and the small weight-gradient buffer.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Widest row held in registers: beyond it a row no longer fits without spilling, so the torch reference
# (fp32 math, same result) runs instead. No model in use comes near it (Llama-3 405B: 16384).
_MAX_HIDDEN = 65536


@triton.jit
def _rms_fwd_kernel(  # type: ignore[no-untyped-def]  # triton reads a kernel's annotations itself
    x_ptr, stride_x, w_ptr, y_ptr, stride_y, rstd_ptr, n_rows, n_cols, eps, offset,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < n_rows
    cmask = cols < n_cols
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32) + offset
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    y = x * rstd[:, None] * w[None, :]
    tl.store(y_ptr + rows64[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _rms_bwd_kernel(  # type: ignore[no-untyped-def]
    dy_ptr, stride_dy, x_ptr, stride_x, w_ptr, rstd_ptr, dx_ptr, stride_dx, dw_part_ptr,
    n_rows, n_cols, offset, rows_per_prog,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr, HAS_DX: tl.constexpr, HAS_DW: tl.constexpr,
):
    # x_hat = x * rstd; g = dy * (offset + w); dx = rstd * (g - x_hat * mean(g * x_hat));
    # this program's share of dw = sum over its rows of dy * x_hat (fp32, in registers until the end).
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32) + offset
    acc = tl.zeros([ROWS, BLOCK_N], tl.float32)
    row_start = pid * rows_per_prog
    row_end = tl.minimum(row_start + rows_per_prog, n_rows)
    for r0 in range(row_start, row_end, ROWS):
        rows = r0 + tl.arange(0, ROWS)
        rmask = rows < row_end
        mask = rmask[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)
        dy = tl.load(dy_ptr + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        xh = x * rstd[:, None]
        if HAS_DW:
            acc += dy * xh
        if HAS_DX:
            g = dy * w[None, :]
            c = tl.sum(g * xh, axis=1) / n_cols
            dx = (g - xh * c[:, None]) * rstd[:, None]
            tl.store(dx_ptr + rows64[:, None] * stride_dx + cols[None, :], dx.to(dx_ptr.dtype.element_ty),
                     mask=mask)
    if HAS_DW:
        tl.store(dw_part_ptr + pid.to(tl.int64) * n_cols + cols, tl.sum(acc, axis=0), mask=cmask)


@triton.jit
def _sum_parts_kernel(  # type: ignore[no-untyped-def]
    part_ptr, out_ptr, n_parts, n_cols, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # out[c] = sum over p of part[p, c], fp32, rounded once into out's dtype.
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < n_cols
    acc = tl.zeros([BLOCK_P, BLOCK_N], tl.float32)
    for p0 in range(0, n_parts, BLOCK_P):
        parts = p0 + tl.arange(0, BLOCK_P)
        mask = (parts < n_parts)[:, None] & cmask[None, :]
        acc += tl.load(part_ptr + parts.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=cmask)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# Host-side integer helpers in plain Python: triton.cdiv / next_power_of_2 are constexpr functions whose
# calls cost microseconds each, and at the shape the whole fwd+bwd is ~0.2 ms of GPU time, so the
# host's per-call work decides whether the GPU waits.
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FwdConfig(NamedTuple):
    """Launch shape of the forward kernel."""

    rows: int  # rows per program (a power of two)
    num_warps: int


class BwdConfig(NamedTuple):
    """Launch shape of the backward kernel."""

    rows: int  # rows per loop step (a power of two)
    num_warps: int
    progs_per_sm: int  # persistent grid: this many programs per multiprocessor (capped by the rows)
    num_stages: int = 3  # software-pipelining depth of the row loop (triton's default)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def _warps(elems: int) -> int:
    # ~16-32 fp32 values of a block per thread: more spills (4 warps on 4 x 4096 ran 20x slower on the H200)
    return 4 if elems <= 2048 else 8 if elems <= 8192 else 16


@functools.lru_cache(maxsize=None)
def _fwd_config_cached(n_cols: int, interpreted: bool) -> FwdConfig:
    if interpreted:
        return FwdConfig(2, 4)
    block = _pow2(n_cols)
    rows = max(1, min(4, 2048 // block))
    return FwdConfig(rows, _warps(block * rows))


@functools.lru_cache(maxsize=None)
def _bwd_config_cached(n_cols: int, interpreted: bool) -> BwdConfig:
    if interpreted:
        return BwdConfig(2, 4, 1)
    # ~4096 elements a loop step and 3 programs per SM (as many as fit at 8 warps on that block): the
    # H200 sweep's best at 4096 ([1, 8, 3]: 0.114 ms, against 0.124 for [2, 8, 2] and 0.143 for [2, 8, 3],
    # where only 2 programs fit and the third runs as a tail)
    block = _pow2(n_cols)
    rows = max(1, min(4, 4096 // block))
    return BwdConfig(rows, _warps(block * rows), 3)


def _fwd_config(n_cols: int) -> FwdConfig:
    """Rows per program and warps (H200, 16384 x 4096 bf16: 1 row of 4096 and 8 warps, 3.8 TB/s)."""
    return _fwd_config_cached(n_cols, _interpreted())


def _bwd_config(n_cols: int) -> BwdConfig:
    """Rows per step, warps, programs per multiprocessor (H200 at 4096: 1 row, 8 warps, 3 per SM)."""
    return _bwd_config_cached(n_cols, _interpreted())


def _rows_view(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """t as [rows, n_cols] with unit column stride: a view when the layout allows, else a copy."""
    t2 = t.reshape(-1, n_cols)
    if t2.stride(-1) != 1 and t2.shape[0] * n_cols > 0:
        t2 = t2.contiguous()
    return t2


def _forward(x2: torch.Tensor, weight: torch.Tensor, eps: float, offset: float,
             cfg: Optional[FwdConfig] = None, shape: Optional[Any] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y in x's dtype, contiguous, of `shape` (default [rows, H]), 1/rms [rows] fp32) of x2 [rows, H]."""
    n_rows, n_cols = x2.shape
    cfg = cfg or _fwd_config(n_cols)
    y = torch.empty(shape if shape is not None else (n_rows, n_cols), dtype=x2.dtype, device=x2.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x2.device)
    grid = (_cdiv(n_rows, cfg.rows),)
    _rms_fwd_kernel[grid](x2, x2.stride(0), weight, y, n_cols, rstd, n_rows, n_cols, eps, offset,
                          BLOCK_N=_pow2(n_cols), ROWS=cfg.rows, num_warps=cfg.num_warps)
    return y, rstd


def _n_programs(x2: torch.Tensor, cfg: BwdConfig) -> int:
    """Size of the backward's persistent grid: per multiprocessor on the GPU, 3 in the interpreter."""
    steps = _cdiv(x2.shape[0], cfg.rows)
    if _interpreted() or x2.device.type != "cuda":
        return min(steps, 3)  # several programs, so the partial-sum path is exercised in CI
    return min(steps, cfg.progs_per_sm * _sm_count(x2.device.index or 0))


def _backward(dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, offset: float,
              need_dx: bool, need_dw: bool, cfg: Optional[BwdConfig] = None, shape: Optional[Any] = None
              ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(dx in x's dtype, contiguous, of `shape` (default [rows, H]), or None; dw [H] in weight's dtype or None)."""
    n_rows, n_cols = x2.shape
    cfg = cfg or _bwd_config(n_cols)
    n_prog = _n_programs(x2, cfg)
    # each program takes a whole number of loop steps, so only the last one sees a short step
    rows_per_prog = _cdiv(_cdiv(n_rows, n_prog), cfg.rows) * cfg.rows
    n_prog = _cdiv(n_rows, rows_per_prog)
    dx = torch.empty(shape if shape is not None else (n_rows, n_cols), dtype=x2.dtype, device=x2.device) \
        if need_dx else None
    parts = torch.empty((n_prog, n_cols), dtype=torch.float32, device=x2.device) if need_dw else None
    block_n = _pow2(n_cols)
    _rms_bwd_kernel[(n_prog,)](
        dy2, dy2.stride(0), x2, x2.stride(0), weight, rstd, dx if dx is not None else x2,
        n_cols, parts if parts is not None else rstd,
        n_rows, n_cols, offset, rows_per_prog,
        BLOCK_N=block_n, ROWS=cfg.rows, HAS_DX=need_dx, HAS_DW=need_dw, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages)
    dw = None
    if parts is not None:
        dw = torch.empty(n_cols, dtype=weight.dtype, device=weight.device)
        # one load round on the GPU (up to 512 partial rows x 16 columns per program): latency, not
        # bandwidth, bounds this 4 MiB read, so many programs and no loop
        block_p = 8 if _interpreted() else min(512, _pow2(n_prog))
        bn = min(16, block_n)
        _sum_parts_kernel[(_cdiv(n_cols, bn),)](parts, dw, n_prog, n_cols, BLOCK_P=block_p, BLOCK_N=bn,
                                                num_warps=4)
    return dx, dw


class _RMSNorm(torch.autograd.Function):
    """Forward saves x (as a [rows, H] view), the weight and 1/rms; backward is one kernel + a small sum."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float,  # type: ignore[override]
                offset: float) -> torch.Tensor:
        x2 = _rows_view(x, x.shape[-1])
        y, rstd = _forward(x2, weight, eps, offset, shape=x.shape)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.offset = offset
        ctx.shape = x.shape
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        x2, weight, rstd = ctx.saved_tensors
        need_dx, need_dw = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        dy2 = _rows_view(dy, x2.shape[1])
        dx, dw = _backward(dy2, x2, weight, rstd, ctx.offset, need_dx, need_dw, shape=ctx.shape)
        return dx, dw, None, None


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    """Raises ValueError for what the kernels do not take: wrong weight shape, unsupported dtypes."""
    if x.dim() < 1 or weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} does not match x [..., {x.shape[-1] if x.dim() else '?'}]")
    for name, t in (("x", x), ("weight", weight)):
        if t.dtype not in _DTYPES:
            raise ValueError(f"unsupported {name} dtype {t.dtype}: fp32, fp16 or bf16")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0) -> torch.Tensor:
    """RMSNorm of x over its last dim times (offset + weight), fp32 math, output in x's dtype.

    x [..., H] in fp32, fp16 or bf16, any leading dims and strides; weight [H] (any of those dtypes; its
    gradient comes back in its dtype, and none is computed when it does not require grad). offset=1.0
    gives Gemma's x_hat * (1 + weight). Differentiable in x and weight (once).
    """
    _check(x, weight)
    n_cols = x.shape[-1]
    if x.numel() == 0 or n_cols > _MAX_HIDDEN:
        return rms_norm_reference(x, weight, eps, offset)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if not needs_grad:  # inference: the forward kernel alone, nothing saved
        y, _ = _forward(_rows_view(x, n_cols), weight, eps, offset, shape=x.shape)
        return y
    out: torch.Tensor = _RMSNorm.apply(x, weight, float(eps), float(offset))
    return out


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0
                       ) -> torch.Tensor:
    """Plain torch RMSNorm in fp32, cast back to x's dtype: differentiable by autograd."""
    _check(x, weight)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * (offset + weight.float())
    return y.to(x.dtype)
