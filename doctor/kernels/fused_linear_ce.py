"""Fused linear + cross-entropy: the loss of `hidden @ weight.T` without materialising the full logits.

Tokens are processed in chunks: one cuBLAS GEMM writes a chunk's logits (input dtype), a Triton kernel
turns them, in place, into the gradient of the logits (online logsumexp, fp32 math, optional Gemma-2
softcap), and two more GEMMs add that chunk's share to the hidden and weight gradients. Everything is
computed in the forward pass (as Liger does); backward only scales by the incoming gradient.

Weight-gradient precision: the weight gradient is accumulated chunk by chunk in the weight's dtype (an
fp32 accumulator would cost 2 GiB at a 128k vocab). The large entries of that gradient are the label
terms ((p - 1) * h per token); adding them first and rounding the running sum once per chunk would make
the error grow with the number of chunks. So the chunk GEMMs accumulate only the softmax part (label
entry zeroed), and the label terms are added at the end per vocab row, summed in fp32 and rounded once.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple, Union

import torch
import triton
import triton.language as tl

# Extra memory the chunk's logits buffer may take: the issue allows 0.1 GiB above the steady state.
_CHUNK_BYTES = 94 * 2 ** 20

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _tanh(x):  # type: ignore[no-untyped-def]  # triton reads a kernel's annotations itself
    # tanh from exp of -2|x| (never overflows); triton's math has no tanh on every backend
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def _ce_chunk_kernel(  # type: ignore[no-untyped-def]
    x_ptr, stride_x, labels_ptr, loss_ptr, coef_ptr, n_cols, ignore_index, softcap,
    HAS_SOFTCAP: tl.constexpr, WRITE_GRAD: tl.constexpr, LABEL_IN_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    # One row (token) per program. Pass 1: logsumexp; pass 2 (WRITE_GRAD): overwrite the row's logits with
    # d loss_row / d logits, unscaled (the reduction's scale goes into the GEMMs' alpha, so small
    # probabilities do not underflow in fp16). LABEL_IN_GRAD=False leaves the label entry 0 and stores
    # its value in coef (fp32) for the weight gradient's label pass.
    row = tl.program_id(0)
    row_ptr = x_ptr + row.to(tl.int64) * stride_x
    label = tl.load(labels_ptr + row)
    cols = tl.arange(0, BLOCK)
    if label != ignore_index:
        m = tl.full([BLOCK], -1e30, tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            mask = offs < n_cols
            z = tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_SOFTCAP:
                z = softcap * _tanh(z / softcap)
            z = tl.where(mask, z, float("-inf"))
            m_new = tl.maximum(m, z)
            s = s * tl.exp(m - m_new) + tl.exp(z - m_new)
            m = m_new
        mx = tl.max(m, 0)
        lse = mx + tl.log(tl.sum(s * tl.exp(m - mx), 0))
        zl = tl.load(row_ptr + label).to(tl.float32)
        if HAS_SOFTCAP:
            tl_label = _tanh(zl / softcap)
            zl = softcap * tl_label
        tl.store(loss_ptr + row, lse - zl)
        if WRITE_GRAD:
            for start in range(0, n_cols, BLOCK):
                offs = start + cols
                mask = offs < n_cols
                z = tl.load(row_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                if HAS_SOFTCAP:
                    t = _tanh(z / softcap)
                    z = softcap * t
                g = tl.exp(z - lse)
                if LABEL_IN_GRAD:
                    g = tl.where(offs == label, g - 1.0, g)
                else:
                    g = tl.where(offs == label, 0.0, g)
                if HAS_SOFTCAP:
                    g = g * (1.0 - t * t)
                tl.store(row_ptr + offs, g.to(x_ptr.dtype.element_ty), mask=mask)
            c = tl.exp(zl - lse) - 1.0
            if HAS_SOFTCAP:
                c = c * (1.0 - tl_label * tl_label)
            tl.store(coef_ptr + row, c)
    else:
        tl.store(loss_ptr + row, 0.0)
        if WRITE_GRAD:
            tl.store(coef_ptr + row, 0.0)
            zero = tl.zeros([BLOCK], tl.float32).to(x_ptr.dtype.element_ty)
            for start in range(0, n_cols, BLOCK):
                offs = start + cols
                tl.store(row_ptr + offs, zero, mask=offs < n_cols)


@triton.jit
def _put_label_grad_kernel(  # type: ignore[no-untyped-def]
    x_ptr, stride_x, labels_ptr, coef_ptr, n_rows, ignore_index, BLOCK: tl.constexpr,
):
    # Writes the label entries (coef, rounded once from fp32) into a chunk's gradient of the logits.
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = rows < n_rows
    labels = tl.load(labels_ptr + rows, mask=in_range, other=0)
    ok = in_range & (labels != ignore_index)
    c = tl.load(coef_ptr + rows, mask=ok, other=0.0)
    ptrs = x_ptr + rows.to(tl.int64) * stride_x + tl.where(ok, labels, 0)
    tl.store(ptrs, c.to(x_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _label_rows_kernel(  # type: ignore[no-untyped-def]
    dw_ptr, stride_dw, h_ptr, stride_h_row, stride_h_col, tok_ptr, starts_ptr, vocab_rows_ptr, coef_ptr,
    n_vocab, n_hidden, scale, BLOCK_H: tl.constexpr,
):
    # dW[v] += scale * sum over tokens labelled v of coef[t] * h[t]: summed in fp32, rounded once.
    u = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cmask = cols < n_hidden
    v = tl.load(vocab_rows_ptr + u)
    start = tl.load(starts_ptr + u)
    end = tl.load(starts_ptr + u + 1)
    if (v >= 0) & (v < n_vocab):
        acc = tl.zeros([BLOCK_H], tl.float32)
        for i in range(start, end):
            t = tl.load(tok_ptr + i)
            c = tl.load(coef_ptr + t)
            hv = tl.load(h_ptr + t * stride_h_row + cols * stride_h_col, mask=cmask, other=0.0)
            acc += c * hv.to(tl.float32)
        dw_ptrs = dw_ptr + v.to(tl.int64) * stride_dw + cols
        w = tl.load(dw_ptrs, mask=cmask, other=0.0).to(tl.float32)
        tl.store(dw_ptrs, (w + scale * acc).to(dw_ptr.dtype.element_ty), mask=cmask)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _ce_config(n_cols: int) -> Tuple[int, int]:
    """(BLOCK, num_warps) of the row kernel: wide blocks on the GPU, small fixed ones in the interpreter."""
    if _interpreted():
        return min(1024, triton.next_power_of_2(n_cols)), 4
    block = min(8192, triton.next_power_of_2(n_cols))
    return block, (16 if block >= 8192 else 8 if block >= 2048 else 4)


def _default_chunk(n_rows: int, n_vocab: int, dtype: torch.dtype) -> int:
    """Tokens per chunk: the logits buffer stays within _CHUNK_BYTES; a multiple of 128 (GEMM tiles)."""
    chunk = max(1, _CHUNK_BYTES // (n_vocab * torch.empty((), dtype=dtype).element_size()))
    if chunk >= 128:
        chunk -= chunk % 128
    return min(chunk, n_rows)


def _add_label_terms(dw: torch.Tensor, h: torch.Tensor, labels: torch.Tensor, coef: torch.Tensor,
                     scale: float) -> None:
    """dW[v] += scale * sum_{t: labels[t] == v} coef[t] * h[t], per vocab row in fp32, one rounding."""
    sorted_labels, order = torch.sort(labels, stable=True)  # stable: a fixed fp32 summation order
    vocab_rows, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.zeros(vocab_rows.numel() + 1, dtype=torch.int64, device=labels.device)
    torch.cumsum(counts, 0, out=starts[1:])
    n_hidden = h.shape[1]
    block_h = min(128 if _interpreted() else 1024, triton.next_power_of_2(n_hidden))
    grid = (vocab_rows.numel(), triton.cdiv(n_hidden, block_h))
    _label_rows_kernel[grid](dw, dw.stride(0), h, h.stride(0), h.stride(1), order, starts, vocab_rows, coef,
                             dw.shape[0], n_hidden, scale, BLOCK_H=block_h, num_warps=4)


def _chunked_forward(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, ignore_index: int, scale: float,
                     softcap: Optional[float], chunk: int, need_dh: bool, need_dw: bool,
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(loss, d loss/d h, d loss/d w) with the gradients already scaled; h [N, H], w [V, H], labels [N]."""
    n_rows, n_vocab = h.shape[0], w.shape[0]
    write_grad = need_dh or need_dw
    loss_rows = torch.empty(n_rows, dtype=torch.float32, device=h.device)
    coef = torch.empty(n_rows, dtype=torch.float32, device=h.device)
    dh = torch.empty_like(h, memory_format=torch.contiguous_format) if need_dh else None
    dw = torch.empty(w.shape, dtype=w.dtype, device=w.device) if need_dw else None
    buf = torch.empty((min(chunk, n_rows), n_vocab), dtype=h.dtype, device=h.device)
    block, warps = _ce_config(n_vocab)
    for i, c0 in enumerate(range(0, n_rows, chunk)):
        c1 = min(c0 + chunk, n_rows)
        h_c, lab_c, x = h[c0:c1], labels[c0:c1], buf[: c1 - c0]
        torch.mm(h_c, w.t(), out=x)
        _ce_chunk_kernel[(c1 - c0,)](
            x, x.stride(0), lab_c, loss_rows[c0:c1], coef[c0:c1], n_vocab, ignore_index,
            float(softcap or 0.0), HAS_SOFTCAP=softcap is not None, WRITE_GRAD=write_grad,
            LABEL_IN_GRAD=not need_dw, BLOCK=block, num_warps=warps)
        if dw is not None:
            # beta=0 on the first chunk: dw starts uninitialised (saves a 1 GiB memset at a 128k vocab)
            torch.addmm(dw, x.t(), h_c, beta=0.0 if i == 0 else 1.0, alpha=scale, out=dw)
        if dh is not None:
            if need_dw:
                _put_label_grad_kernel[(triton.cdiv(c1 - c0, 256),)](
                    x, x.stride(0), lab_c, coef[c0:c1], c1 - c0, ignore_index, BLOCK=256)
            dh_c = dh[c0:c1]
            torch.addmm(dh_c, x, w, beta=0.0, alpha=scale, out=dh_c)
    del buf
    if dw is not None:
        _add_label_terms(dw, h, labels, coef, scale)
    return loss_rows.sum() * scale, dh, dw


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Gradients computed in forward, chunk by chunk; backward scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,  # type: ignore[override]
                ignore_index: int, scale: float, softcap: Optional[float], chunk: int,
                compute_dtype: torch.dtype) -> torch.Tensor:
        need_dh, need_dw = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.used = False
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
            if scale == 0.0:  # every label ignored: 0 and zero gradients, no GEMM
                loss = torch.zeros((), dtype=torch.float32, device=h.device)
                dh = torch.zeros_like(h, memory_format=torch.contiguous_format) if need_dh else None
                dw = torch.zeros(w.shape, dtype=w.dtype, device=w.device) if need_dw else None
            else:
                loss, dh, dw = _chunked_forward(h, w, labels, ignore_index, scale, softcap, chunk, need_dh, need_dw)
        ctx.save_for_backward(dh, dw)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        if ctx.used:
            # the saved gradients are scaled in place below, so a second backward would be wrong
            raise RuntimeError("fused_linear_cross_entropy: backward through the same loss twice is not supported")
        ctx.used = True
        dh, dw = ctx.saved_tensors
        if not bool((grad_out == 1).all()):  # one sync; skips two full passes when the loss is not scaled
            g = grad_out.reshape(()).float()
            dh = dh.mul_(g) if dh is not None else None
            dw = dw.mul_(g) if dw is not None else None
        h_dtype, w_dtype = ctx.dtypes
        dh = dh.to(h_dtype) if dh is not None else None
        dw = dw.to(w_dtype) if dw is not None else None
        return dh, dw, None, None, None, None, None, None


def _prepare(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int,
             reduction: str, num_items: Union[int, float, torch.Tensor, None]
             ) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Checks the arguments; returns (hidden [N, H], labels [N] contiguous, the loss's scale)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden [..., {hidden.shape[-1]}] and weight {tuple(weight.shape)} do not match")
    h = hidden.reshape(-1, hidden.shape[-1])
    lab = labels.reshape(-1).contiguous()
    if lab.numel() != h.shape[0]:
        raise ValueError(f"{lab.numel()} labels for {h.shape[0]} tokens")
    if lab.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be int64 or int32, not {lab.dtype}")
    valid = lab != ignore_index
    bad = valid & ((lab < 0) | (lab >= weight.shape[0]))
    n_valid, n_bad = torch.stack([valid.sum(), bad.sum()]).tolist()  # one sync for both
    if n_bad:
        raise IndexError(f"{n_bad} labels outside [0, {weight.shape[0]}) that are not ignore_index {ignore_index}")
    if n_valid == 0:
        return h, lab, 0.0
    if num_items is not None:
        items = float(num_items)
        if items <= 0:
            raise ValueError(f"num_items must be positive when labels are not all ignored, not {items}")
        return h, lab, 1.0 / items
    return h, lab, (1.0 / n_valid if reduction == "mean" else 1.0)


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               ignore_index: int = -100, reduction: str = "mean",
                               num_items: Union[int, float, torch.Tensor, None] = None,
                               logit_softcap: Optional[float] = None, *,
                               chunk_size: Optional[int] = None) -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T` against `labels` without materialising the full logits.

    hidden [..., H], weight [V, H], labels [...] (int64/int32); fp32, fp16 or bf16 (hidden and weight
    alike, or under autocast its dtype). Labels equal to `ignore_index` count for nothing. reduction
    "mean" divides by the number of non-ignored labels, "sum" does not; `num_items` (int or 0-dim
    tensor: the token count of the whole accumulated batch, as transformers passes it) replaces either
    divisor. All labels ignored gives 0 and zero gradients. `logit_softcap` c applies Gemma-2's
    c * tanh(logits / c). A weight with requires_grad=False gets no gradient GEMM at all. `chunk_size`
    (tokens per chunk) defaults to what keeps the chunk's logits within ~94 MiB. Returns a 0-dim fp32
    tensor. Gradients are computed during the forward pass, so a loss built under autograd holds
    them (hidden's and weight's size) until backward.
    """
    if logit_softcap is not None and logit_softcap <= 0:
        raise ValueError(f"logit_softcap must be positive, not {logit_softcap}")
    dev_type = hidden.device.type
    if torch.is_autocast_enabled(dev_type):
        compute_dtype = torch.get_autocast_dtype(dev_type)
    else:
        if hidden.dtype != weight.dtype:
            raise ValueError(f"hidden is {hidden.dtype} but weight is {weight.dtype}")
        compute_dtype = hidden.dtype
    if compute_dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {compute_dtype}: fp32, fp16 or bf16")
    h, lab, scale = _prepare(hidden, weight, labels, ignore_index, reduction, num_items)
    chunk = chunk_size if chunk_size is not None else _default_chunk(h.shape[0], weight.shape[0], compute_dtype)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk}")
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if not needs_grad:  # inference: the loss alone, no gradient pass
        with torch.autocast(device_type=dev_type, enabled=False):
            if scale == 0.0:
                return torch.zeros((), dtype=torch.float32, device=hidden.device)
            loss, _, _ = _chunked_forward(h.to(compute_dtype), weight.to(compute_dtype), lab, ignore_index,
                                          scale, logit_softcap, chunk, False, False)
            return loss
    out: torch.Tensor = _FusedLinearCrossEntropy.apply(h, weight, lab, ignore_index, scale, logit_softcap, chunk,
                                                       compute_dtype)
    return out


def fused_linear_cross_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                         ignore_index: int = -100, reduction: str = "mean",
                                         num_items: Union[int, float, torch.Tensor, None] = None,
                                         logit_softcap: Optional[float] = None) -> torch.Tensor:
    """Plain torch, fp32 math, materialised logits: the same loss, differentiable by autograd."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    logits = hidden.reshape(-1, hidden.shape[-1]).float() @ weight.float().t()
    if logit_softcap is not None:
        logits = logit_softcap * torch.tanh(logits / logit_softcap)
    lab = labels.reshape(-1)
    total = torch.nn.functional.cross_entropy(logits, lab.long(), ignore_index=ignore_index, reduction="sum")
    n_valid = int((lab != ignore_index).sum())
    if n_valid == 0:
        return total * 0.0
    if num_items is not None:
        return total / float(num_items)
    return total / n_valid if reduction == "mean" else total
