"""Gated activations of the MLP: SwiGLU silu(gate) * up and GeGLU gelu(gate) * up (erf or tanh form).

One elementwise kernel each way, fp32 math, one rounding into the inputs' dtype. Forward reads gate and
up and writes the product; backward reads dy, gate and up and writes both gradients (the activation is
recomputed, never stored): 8 x elements x the element size in all, the anchors' count. The tensors are
seen as [rows, cols] with unit column stride and their own row strides, so the halves of a fused
gate/up projection ([..., 2 x inter] split in two) are read in place; contiguous tensors are one long
row. Programs take BLOCK columns of one row.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# activation codes (a constexpr of the kernels). GeGLU's erf: _GELU_ERF uses the math library's erf
# (measured on the H200 at 16384 x 14336 bf16: 91% of copy, against 101% for SwiGLU and tanh-GeGLU, so
# its instruction count shows); _GELU_ERF_AS is a cheaper Abramowitz-Stegun form that passed the same
# correctness tests on the H200 but whose speed has not been measured yet: the default stays the
# measured one until benchmarks/kernels_norm_act_quick.py shows the other faster.
_SILU, _GELU_ERF, _GELU_TANH, _GELU_ERF_AS = 0, 1, 2, 3
_APPROXIMATE = {"none": _GELU_ERF, "tanh": _GELU_TANH}


@triton.jit
def _sigmoid(z):  # type: ignore[no-untyped-def]
    # from exp(-|z|), which never overflows
    e = tl.exp(-tl.abs(z))
    r = 1.0 / (1.0 + e)
    return tl.where(z >= 0, r, e * r)


@triton.jit
def _act(g, ACT: tl.constexpr):  # type: ignore[no-untyped-def]  # triton reads a kernel's annotations itself
    # (activation, its derivative) of fp32 g; constants: 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi)
    if ACT == 0:  # silu: g * s, s = sigmoid(g); d = s * (1 + g * (1 - s))
        s = _sigmoid(g)
        return g * s, s * (1.0 + g * (1.0 - s))
    elif ACT == 1:  # gelu: g * Phi(g); d = Phi(g) + g * phi(g)
        cdf = 0.5 * (1.0 + tl.math.erf(g * 0.7071067811865476))
        pdf = tl.exp(-0.5 * g * g) * 0.3989422804014327
        return g * cdf, cdf + g * pdf
    elif ACT == 3:  # the same, Phi from erfc(|g|/sqrt 2) ~ poly(t) * exp(-g^2/2), t = 1/(1 + p |g|/sqrt 2)
        # (Abramowitz-Stegun 7.1.26, |error| <= 1.5e-7): the same exp gives phi, and the tail g < 0
        # keeps its small values (no 1 - 1 cancellation)
        e = tl.exp(-0.5 * g * g)
        t = 1.0 / (1.0 + 0.3275911 * 0.7071067811865476 * tl.abs(g))
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        half_erfc = 0.5 * poly * e
        cdf = tl.where(g >= 0, 1.0 - half_erfc, half_erfc)
        return g * cdf, cdf + g * e * 0.3989422804014327
    else:  # tanh gelu: 0.5 g (1 + tanh(z)) = g * sigmoid(2z), z = sqrt(2/pi) (g + 0.044715 g^3)
        s = _sigmoid(2.0 * 0.7978845608028654 * (g + 0.044715 * g * g * g))
        dz = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * g * g)
        return g * s, s + 2.0 * g * s * (1.0 - s) * dz


@triton.jit
def _glu_fwd_kernel(  # type: ignore[no-untyped-def]
    g_ptr, stride_g, u_ptr, stride_u, y_ptr, stride_y, n_cols, n_col_blocks,
    ACT: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = (pid // n_col_blocks).to(tl.int64)
    cols = (pid % n_col_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(g_ptr + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
    a, _ = _act(g, ACT)
    tl.store(y_ptr + row * stride_y + cols, (a * u).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _glu_bwd_kernel(  # type: ignore[no-untyped-def]
    dy_ptr, stride_dy, g_ptr, stride_g, u_ptr, stride_u, dg_ptr, du_ptr, n_cols, n_col_blocks,
    ACT: tl.constexpr, BLOCK: tl.constexpr, HAS_DG: tl.constexpr, HAS_DU: tl.constexpr,
):
    # dg = dy * up * act'(gate), du = dy * act(gate); dg and du are contiguous [rows, n_cols]
    pid = tl.program_id(0)
    row = (pid // n_col_blocks).to(tl.int64)
    cols = (pid % n_col_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    dy = tl.load(dy_ptr + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    a, da = _act(g, ACT)
    out = row * n_cols + cols
    if HAS_DG:
        u = tl.load(u_ptr + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(dg_ptr + out, (dy * u * da).to(dg_ptr.dtype.element_ty), mask=mask)
    if HAS_DU:
        tl.store(du_ptr + out, (dy * a).to(du_ptr.dtype.element_ty), mask=mask)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class Config(NamedTuple):
    """Launch shape of both kernels."""

    block: int  # columns per program (a power of two)
    num_warps: int


def _pow2(n: int) -> int:
    # plain Python (triton.next_power_of_2 is a constexpr function, microseconds a call)
    return 1 << max(0, n - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _config_cached(n_cols: int, interpreted: bool) -> Config:
    if interpreted:
        return Config(min(256, _pow2(n_cols)), 4)
    return Config(min(4096, _pow2(n_cols)), 8)


def _config(n_cols: int) -> Config:
    """Wide blocks on the GPU (16-byte accesses, 16 elements a thread: 4096 x 8 warps ran at the copy's
    speed on the H200, forward and backward); small fixed ones in the interpreter."""
    return _config_cached(n_cols, _interpreted())


def _as_rows(*ts: torch.Tensor) -> Tuple[int, int, Tuple[torch.Tensor, ...]]:
    """(rows, cols, tensors as [rows, cols] with unit column stride): one row when all are contiguous."""
    n = ts[0].shape[-1] if ts[0].dim() else 1
    if all(t.is_contiguous() for t in ts):
        numel = ts[0].numel()
        return 1, numel, tuple(t.view(1, numel) for t in ts)
    out = []
    for t in ts:
        t2 = t.reshape(-1, n)  # a view when the leading dims collapse, else a copy
        if t2.stride(-1) != 1 and t2.numel() > 0:
            t2 = t2.contiguous()
        out.append(t2)
    return out[0].shape[0], n, tuple(out)


def _forward(gate: torch.Tensor, up: torch.Tensor, act: int, cfg: Optional[Config] = None) -> torch.Tensor:
    """act(gate) * up in gate's dtype and shape (contiguous)."""
    y = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    rows, n, (g2, u2, y2) = _as_rows(gate, up, y)
    cfg = cfg or _config(n)
    n_blocks = -(-n // cfg.block)
    _glu_fwd_kernel[(rows * n_blocks,)](g2, g2.stride(0), u2, u2.stride(0), y2, y2.stride(0), n, n_blocks,
                                         ACT=act, BLOCK=cfg.block, num_warps=cfg.num_warps)
    return y


def _backward(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, act: int, need_dg: bool, need_du: bool,
              cfg: Optional[Config] = None) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(d gate, d up), contiguous in the inputs' dtype; None for a gradient not needed."""
    rows, n, (dy2, g2, u2) = _as_rows(dy, gate, up)
    cfg = cfg or _config(n)
    dg = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device) if need_dg else None
    du = torch.empty(up.shape, dtype=up.dtype, device=up.device) if need_du else None
    n_blocks = -(-n // cfg.block)
    _glu_bwd_kernel[(rows * n_blocks,)](
        dy2, dy2.stride(0), g2, g2.stride(0), u2, u2.stride(0), dg if dg is not None else g2,
        du if du is not None else u2, n, n_blocks,
        ACT=act, BLOCK=cfg.block, HAS_DG=need_dg, HAS_DU=need_du, num_warps=cfg.num_warps)
    return dg, du


class _GatedActivation(torch.autograd.Function):
    """Saves gate and up (no activation is stored); backward is one kernel."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, act: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate, up)
        ctx.act = act
        return _forward(gate, up, act)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        gate, up = ctx.saved_tensors
        dg, du = _backward(dy, gate, up, ctx.act, bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        return dg, du, None


def _check(gate: torch.Tensor, up: torch.Tensor) -> None:
    """Raises ValueError unless gate and up have one shape and one supported dtype."""
    if gate.shape != up.shape:
        raise ValueError(f"gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if gate.dtype != up.dtype:
        raise ValueError(f"gate is {gate.dtype} but up is {up.dtype}")
    if gate.dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {gate.dtype}: fp32, fp16 or bf16")


def _gated(gate: torch.Tensor, up: torch.Tensor, act: int) -> torch.Tensor:
    """act(gate) * up through the kernels, under autograd when a gradient is wanted."""
    _check(gate, up)
    if gate.numel() == 0:  # nothing to launch: the reference gives the empty result and its graph
        return _torch_gated(gate, up, act)
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        out: torch.Tensor = _GatedActivation.apply(gate, up, act)
        return out
    return _forward(gate, up, act)


def _torch_gated(gate: torch.Tensor, up: torch.Tensor, act: int) -> torch.Tensor:
    """act(gate) * up by plain torch in fp32, cast back to gate's dtype."""
    g = gate.float()
    if act == _SILU:
        a = torch.nn.functional.silu(g)
    else:
        a = torch.nn.functional.gelu(g, approximate="tanh" if act == _GELU_TANH else "none")
    return (a * up.float()).to(gate.dtype)


def _approximate_code(approximate: str) -> int:
    """The kernel's code for a GELU form; ValueError for anything but "none" and "tanh"."""
    try:
        return _APPROXIMATE[approximate]
    except (KeyError, TypeError):
        raise ValueError(f"approximate must be 'none' or 'tanh', not {approximate!r}") from None


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up in fp32 math, output in the inputs' dtype; differentiable in gate and up (once).

    gate and up: one shape, one dtype (fp32, fp16 or bf16), any strides (row-strided views such as the
    halves of a fused projection are read in place). ValueError otherwise.
    """
    return _gated(gate, up, _SILU)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(gate) * up (approximate "none": erf form, "tanh": tanh form, as torch's gelu); see swiglu."""
    code = _approximate_code(approximate)
    return _gated(gate, up, code)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Plain torch silu(gate) * up in fp32, cast back to gate's dtype: differentiable by autograd."""
    _check(gate, up)
    return _torch_gated(gate, up, _SILU)


def geglu_reference(gate: torch.Tensor, up: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Plain torch gelu(gate) * up in fp32, cast back to gate's dtype: differentiable by autograd."""
    code = _approximate_code(approximate)
    _check(gate, up)
    return _torch_gated(gate, up, code)
