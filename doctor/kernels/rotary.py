"""Rotary position embedding (Hugging Face rotate-half convention) for q and k in one launch.

out = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]), applied to q
[batch, heads_q, seq, dim] and k [batch, heads_k, seq, dim] (grouped-query: the head counts may differ),
cos/sin [batch or 1, seq, dim] (or [seq, dim]). The rotation is linear in x, so the backward pass is the
same kernel with the transposed rotation: dx = g * cos + rotate_half^T(g * sin), where
rotate_half^T(y) = cat(y[..., d/2:], -y[..., :d/2]).

Bandwidth: one pass forward (read q, k; write q_out, k_out), one pass backward (read the two output
gradients; write the two input gradients), fp32 math in registers, nothing else in HBM. Every tensor is
read and written through its own strides, so the transposed views of [batch, seq, heads, dim]
projections that Hugging Face attention passes are never copied; outputs and input gradients take the
layout of the inputs (a dense transposed view stays one), so autograd hands the projection's gradient
on without a copy either. A program owns a tile of (heads, seq positions, half the dim) of one batch
row; its cos/sin rows are loaded once and reused across the tile's heads (they stay in L2 anyway).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import torch
import triton
import triton.language as tl

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT32_MAX = 2 ** 31 - 1


@triton.jit
def _rope_tile(  # type: ignore[no-untyped-def]  # triton reads a kernel's annotations itself
    x_ptr, o_ptr, sx_b, sx_h, sx_s, sx_d, so_b, so_h, so_s, so_d,
    b, h0, s0, n_heads, n_seq, half, c1, c2, n1, n2,
    BACKWARD: tl.constexpr, LARGE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_S: tl.constexpr,
    HALF: tl.constexpr, MASK_D: tl.constexpr,
):
    # One [BLOCK_H, BLOCK_S, HALF] tile of both halves of x; c1/c2/n1/n2 are the cos/sin halves
    # [BLOCK_S, HALF] in fp32. The tile's origin is an int64 scalar; offsets inside it are int32 unless
    # LARGE (strides so large that a tile spans more than 2^31 elements).
    hs = tl.arange(0, BLOCK_H)
    ss = tl.arange(0, BLOCK_S)
    ds = tl.arange(0, HALF)
    if LARGE:
        hs = hs.to(tl.int64)
        ss = ss.to(tl.int64)
        ds = ds.to(tl.int64)
    mask = ((h0 + hs) < n_heads)[:, None, None] & ((s0 + ss) < n_seq)[None, :, None]
    if MASK_D:  # only when half is not a power of two: a mask along d could cost the 16-byte accesses
        mask = mask & (ds < half)[None, None, :]
    b64 = b.to(tl.int64)
    h64 = h0.to(tl.int64)
    s64 = s0.to(tl.int64)
    x_base = x_ptr + b64 * sx_b + h64 * sx_h + s64 * sx_s
    o_base = o_ptr + b64 * so_b + h64 * so_h + s64 * so_s
    x_off = hs[:, None, None] * sx_h + ss[None, :, None] * sx_s + ds[None, None, :] * sx_d
    o_off = hs[:, None, None] * so_h + ss[None, :, None] * so_s + ds[None, None, :] * so_d
    # each element is read once: stream it past the cache
    x1 = tl.load(x_base + x_off, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    x2 = tl.load(x_base + x_off + half * sx_d, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    c1 = c1[None, :, :]
    c2 = c2[None, :, :]
    n1 = n1[None, :, :]
    n2 = n2[None, :, :]
    if BACKWARD:
        y1 = x1 * c1 + x2 * n2
        y2 = x2 * c2 - x1 * n1
    else:
        y1 = x1 * c1 - x2 * n1
        y2 = x2 * c2 + x1 * n2
    out_ty = o_ptr.dtype.element_ty
    tl.store(o_base + o_off, y1.to(out_ty), mask=mask)
    tl.store(o_base + o_off + half * so_d, y2.to(out_ty), mask=mask)


@triton.jit
def _rope_kernel(  # type: ignore[no-untyped-def]
    q_ptr, qo_ptr, k_ptr, ko_ptr, cos_ptr, sin_ptr,
    sq_b, sq_h, sq_s, sq_d, sqo_b, sqo_h, sqo_s, sqo_d,
    sk_b, sk_h, sk_s, sk_d, sko_b, sko_h, sko_s, sko_d,
    sc_b, sc_s, sc_d, sn_b, sn_s, sn_d,
    n_hq, n_hk, n_seq, half, n_qblocks,
    BACKWARD: tl.constexpr, LARGE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_S: tl.constexpr,
    HALF: tl.constexpr, MASK_D: tl.constexpr,
):
    # axis 0: (batch, seq block); axis 1: head block, q's blocks first, then k's
    n_sblocks = tl.cdiv(n_seq, BLOCK_S)
    pid0 = tl.program_id(0)
    pid1 = tl.program_id(1)
    b = pid0 // n_sblocks
    s0 = (pid0 % n_sblocks) * BLOCK_S
    ss = tl.arange(0, BLOCK_S)
    ds = tl.arange(0, HALF)
    cmask = ((s0 + ss) < n_seq)[:, None] & (ds < half)[None, :]
    s64 = s0.to(tl.int64)
    b64 = b.to(tl.int64)
    # cos/sin: [BLOCK_S, HALF] halves, read once per program and kept in registers (small, reused by
    # every program of the same seq block: keep them in cache)
    c_ptrs = cos_ptr + b64 * sc_b + s64 * sc_s + ss[:, None] * sc_s + ds[None, :] * sc_d
    n_ptrs = sin_ptr + b64 * sn_b + s64 * sn_s + ss[:, None] * sn_s + ds[None, :] * sn_d
    c1 = tl.load(c_ptrs, mask=cmask, other=0.0, eviction_policy="evict_last").to(tl.float32)
    c2 = tl.load(c_ptrs + half * sc_d, mask=cmask, other=0.0, eviction_policy="evict_last").to(tl.float32)
    n1 = tl.load(n_ptrs, mask=cmask, other=0.0, eviction_policy="evict_last").to(tl.float32)
    n2 = tl.load(n_ptrs + half * sn_d, mask=cmask, other=0.0, eviction_policy="evict_last").to(tl.float32)
    if pid1 < n_qblocks:
        _rope_tile(q_ptr, qo_ptr, sq_b, sq_h, sq_s, sq_d, sqo_b, sqo_h, sqo_s, sqo_d,
                   b, pid1 * BLOCK_H, s0, n_hq, n_seq, half, c1, c2, n1, n2,
                   BACKWARD, LARGE, BLOCK_H, BLOCK_S, HALF, MASK_D)
    else:
        _rope_tile(k_ptr, ko_ptr, sk_b, sk_h, sk_s, sk_d, sko_b, sko_h, sko_s, sko_d,
                   b, (pid1 - n_qblocks) * BLOCK_H, s0, n_hk, n_seq, half, c1, c2, n1, n2,
                   BACKWARD, LARGE, BLOCK_H, BLOCK_S, HALF, MASK_D)


# read once: triton.jit reads TRITON_INTERPRET when a kernel is defined, so it cannot change later
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# elements of one half-tile ([BLOCK_H, BLOCK_S, HALF]) on the GPU: on the H200 at q 4x32x4096x128, tiles
# of 512-1024 elements (one 16-byte access per thread and half at 4 warps) reach 77-86% of copy for
# the two passes, 2048 about 80%, 4096 and more 46-57% (benchmarks/results/kernels-rope-h200-*)
_TILE = 1024


def _interpreted() -> bool:
    return _INTERPRETED


def _cdiv(a: int, b: int) -> int:
    # plain ints: triton.cdiv is a jit function, ~10 us a call from Python
    return -(-a // b)


def _pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _config(n_heads: int, n_seq: int, half: int) -> Tuple[int, int, int]:
    """(BLOCK_H, BLOCK_S, num_warps): ~1k elements a half-tile on the GPU, small fixed tiles in the interpreter."""
    if _INTERPRETED:  # the interpreter's cost is per program (~40 ms each), hardly per element
        return 4, 4, 1
    half_p2 = _pow2(half)
    # positions first (their cos/sin rows are shared by the tile's heads), two heads when there is room
    block_s = max(1, min(_pow2(n_seq), _TILE // (2 * half_p2)))
    block_h = max(1, min(_pow2(n_heads), _TILE // (block_s * half_p2)))
    tile = block_h * block_s * half_p2
    return block_h, block_s, 4 if tile >= 1024 else 2 if tile >= 512 else 1


def _spans_int32(t: torch.Tensor, block_h: int, block_s: int) -> bool:
    """Whether every offset inside one tile of t (relative to the tile's origin) fits in int32."""
    _, sh, ss, sd = t.stride()
    return (block_h - 1) * sh + (block_s - 1) * ss + (t.shape[3] - 1) * sd <= _INT32_MAX


def _launch(q: Optional[torch.Tensor], q_out: Optional[torch.Tensor], k: Optional[torch.Tensor],
            k_out: Optional[torch.Tensor], cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> None:
    """Rotates q into q_out and k into k_out (either pair may be None) in one launch; cos/sin [Bc, S, D]."""
    n_hq = q.shape[1] if q is not None and q_out is not None else 0
    n_hk = k.shape[1] if k is not None and k_out is not None else 0
    # a missing pair borrows the other's tensors and gets no head block
    qx, qo = (q, q_out) if n_hq else (k, k_out)
    kx, ko = (k, k_out) if n_hk else (qx, qo)
    if qx is None or qo is None or kx is None or ko is None:
        return
    n_batch, _, n_seq, dim = qx.shape
    if n_batch * n_seq * dim * (n_hq + n_hk) == 0:
        return
    half = dim // 2
    half_p2 = _pow2(half)
    block_h, block_s, warps = _config(max(n_hq, n_hk), n_seq, half)
    large = not (_spans_int32(qx, block_h, block_s) and _spans_int32(qo, block_h, block_s)
                 and _spans_int32(kx, block_h, block_s) and _spans_int32(ko, block_h, block_s))
    n_qblocks = _cdiv(n_hq, block_h)
    grid = (n_batch * _cdiv(n_seq, block_s), n_qblocks + _cdiv(n_hk, block_h))
    _rope_kernel[grid](
        qx, qo, kx, ko, cos, sin,
        *qx.stride(), *qo.stride(), *kx.stride(), *ko.stride(),
        # cos/sin broadcast over the batch through a zero stride
        cos.stride(0) if cos.shape[0] > 1 else 0, cos.stride(1), cos.stride(2),
        sin.stride(0) if sin.shape[0] > 1 else 0, sin.stride(1), sin.stride(2),
        n_hq, n_hk, n_seq, half, n_qblocks,
        BACKWARD=backward, LARGE=large, BLOCK_H=block_h, BLOCK_S=block_s, HALF=half_p2,
        MASK_D=half_p2 != half, num_warps=warps)


def _like(shape_stride: Tuple[torch.Size, Tuple[int, ...]], dtype: torch.dtype, device: torch.device
          ) -> torch.Tensor:
    """An uninitialised tensor with the recorded shape and strides."""
    shape, stride = shape_stride
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


class _Rope(torch.autograd.Function):
    """q and k rotated in one launch forward and one backward; cos/sin get no gradient."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,  # type: ignore[override]
                sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # empty_like keeps a dense input's strides (a transposed view stays one), else contiguous
        q_out = torch.empty_like(q)
        k_out = torch.empty_like(k)
        _launch(q, q_out, k, k_out, cos, sin, backward=False)
        ctx.save_for_backward(cos, sin)
        ctx.layouts = ((q_out.shape, q_out.stride(), q.dtype), (k_out.shape, k_out.stride(), k.dtype))
        ctx.set_materialize_grads(False)  # an unused output costs no zero tensor and no pass
        # as in plain torch: an output whose input needs no gradient does not require one either
        ctx.mark_non_differentiable(*[o for o, need in zip((q_out, k_out), ctx.needs_input_grad) if not need])
        return q_out, k_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_q: Optional[torch.Tensor],  # type: ignore[override]
                 grad_k: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
        cos, sin = ctx.saved_tensors
        (q_shape, q_stride, q_dtype), (k_shape, k_stride, k_dtype) = ctx.layouts
        # the input gradients take the inputs' layout, so a transposed view's gradient reaches the
        # projection as a dense tensor (no copy in autograd's accumulation)
        dq = (_like((q_shape, q_stride), q_dtype, cos.device)
              if grad_q is not None and ctx.needs_input_grad[0] else None)
        dk = (_like((k_shape, k_stride), k_dtype, cos.device)
              if grad_k is not None and ctx.needs_input_grad[1] else None)
        _launch(grad_q if dq is not None else None, dq, grad_k if dk is not None else None, dk, cos, sin,
                backward=True)
        return dq, dk, None, None


def _prepare(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Checks the arguments; returns cos and sin as [batch or 1, seq, dim] views (no copy)."""
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be [batch, heads, seq, dim], not {tuple(q.shape)} and {tuple(k.shape)}")
    n_batch, _, n_seq, dim = q.shape
    if k.shape[0] != n_batch or k.shape[2] != n_seq or k.shape[3] != dim:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch, seq or dim")
    if dim % 2 or dim == 0:
        raise ValueError(f"the head dim must be even and positive, not {dim}")
    if cos.shape != sin.shape:
        raise ValueError(f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ")
    if cos.dim() == 4 and cos.shape[1] == 1:  # [batch or 1, 1, seq, dim]: already unsqueezed for the heads
        cos, sin = cos[:, 0], sin[:, 0]
    elif cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    if cos.dim() != 3 or cos.shape[0] not in (1, n_batch) or cos.shape[1] != n_seq or cos.shape[2] != dim:
        raise ValueError(f"cos/sin {tuple(cos.shape)} do not broadcast to [{n_batch} or 1, {n_seq}, {dim}]")
    for name, t in (("q", q), ("k", k), ("cos", cos), ("sin", sin)):
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} is {t.dtype}: fp32, fp16 or bf16")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}")
    return cos, sin


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of q and k (HF rotate-half): (q * cos + rotate_half(q) * sin, same for k).

    q [batch, heads_q, seq, dim], k [batch, heads_k, seq, dim] (the head counts may differ; any strides,
    e.g. the transposed views of [batch, seq, heads, dim] projections, read and written in place of a
    copy), dim even; cos/sin [batch or 1, seq, dim], [seq, dim] or [batch or 1, 1, seq, dim], any float
    dtype. fp32, fp16 or bf16; math in fp32, outputs in the inputs' dtypes and layouts. Differentiable
    in q and k; cos and sin get no gradient.
    """
    cos3, sin3 = _prepare(q, k, cos, sin)
    q_out, k_out = _Rope.apply(q, k, cos3.detach(), sin3.detach())
    return q_out, k_out


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plain torch, fp32 math, cast back to the inputs' dtypes: the same op, differentiable by autograd."""
    cos3, sin3 = _prepare(q, k, cos, sin)
    c, s = cos3.float()[:, None], sin3.float()[:, None]  # [batch or 1, 1, seq, dim]
    q32, k32 = q.float(), k.float()
    q_out = q32 * c + _rotate_half(q32) * s
    k_out = k32 * c + _rotate_half(k32) * s
    return q_out.to(q.dtype), k_out.to(k.dtype)
