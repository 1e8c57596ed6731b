"""RoPE (q and k, HF rotate-half) against an fp32 reference: outputs and both gradients, every layout.

On a machine without CUDA this runs through Triton's CPU interpreter (fp32 and fp16, tiny shapes); the
`gpu` tests add bf16 and the issue's full shape (q 4x32x4096x128, k 4x8x4096x128) in both layouts.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, List, Optional, Tuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes  # noqa: E402

import doctor.kernels.rotary as rope_mod  # noqa: E402
from doctor.kernels import rope, rope_reference  # noqa: E402


@pytest.fixture(autouse=True)
def _seed(request: Any) -> None:
    """Random inputs, seeded per test so a CI failure reproduces."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _cos_sin(n_batch: int, n_seq: int, dim: int, device: str, dtype: Any = torch.float32,
             per_batch: bool = False) -> Tuple[Any, Any]:
    """HF's cos/sin [batch or 1, seq, dim]: cat(freqs, freqs) of positions (random offsets per batch row)."""
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device).float() / dim))
    pos = torch.arange(n_seq, device=device).float()[None]
    if per_batch:
        pos = pos + torch.randint(0, 5000, (n_batch, 1), device=device).float()
    freqs = pos[..., None] * inv  # [b, seq, dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _qk(n_batch: int, hq: int, hk: int, n_seq: int, dim: int, dtype: Any, device: str,
        layout: str = "contiguous") -> Tuple[Any, Any]:
    """q, k as [batch, heads, seq, dim]: contiguous, or the transposed views of [batch, seq, heads, dim]."""
    if layout == "transposed":
        q = torch.randn(n_batch, n_seq, hq, dim, device=device).to(dtype).transpose(1, 2)
        k = torch.randn(n_batch, n_seq, hk, dim, device=device).to(dtype).transpose(1, 2)
    else:
        q = torch.randn(n_batch, hq, n_seq, dim, device=device).to(dtype)
        k = torch.randn(n_batch, hk, n_seq, dim, device=device).to(dtype)
    return q, k


def _run(fn: Callable[..., Any], q: Any, k: Any, cos: Any, sin: Any, gq: Any, gk: Any) -> List[Any]:
    """[q_out, k_out, dq, dk] of fn on fresh leaves with the same strides as q and k."""
    ql = q.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    kl = k.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    qo, ko = fn(ql, kl, cos, sin)
    torch.autograd.backward([qo, ko], [gq, gk])
    return [qo.detach(), ko.detach(), ql.grad, kl.grad]


def _torch_in_dtype(q: Any, k: Any, cos: Any, sin: Any) -> Tuple[Any, Any]:
    """The same op computed by torch in the inputs' dtype (as HF's apply_rotary_pos_emb does)."""
    c3, s3 = rope_mod._prepare(q, k, cos, sin)
    c, s = c3[:, None].to(q.dtype), s3[:, None].to(q.dtype)
    return q * c + rope_mod._rotate_half(q) * s, k * c + rope_mod._rotate_half(k) * s


def _check(q: Any, k: Any, cos: Any, sin: Any, grads: Optional[Tuple[Any, Any]] = None) -> List[float]:
    """Kernel vs fp32 reference (fp32: tight; fp16/bf16: <= 2x torch-in-dtype's error); returns the ratios."""
    dtype = q.dtype
    gq, gk = grads if grads is not None else (torch.randn_like(q), torch.randn_like(k))
    got = _run(rope, q, k, cos, sin, gq, gk)
    ref = _run(rope_reference, q.float(), k.float(), cos.float(), sin.float(), gq.float(), gk.float())
    names = ("q_out", "k_out", "dq", "dk")
    for name, a, want in zip(names, got, (q, k, q, k)):
        assert a.shape == want.shape and a.dtype == dtype, name
    if dtype == torch.float32:
        for name, a, b in zip(names, got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
        return []
    base = _run(_torch_in_dtype, q, k, cos, sin, gq, gk)
    ratios = []
    for name, a, t, b in zip(names, got, base, ref):
        err_k = (a.float() - b).abs().max().item()
        err_t = (t.float() - b).abs().max().item()
        eps = 0.05 * torch.finfo(dtype).eps * b.abs().max().item()  # 1/20 of an ulp at the largest value
        ratios.append(err_k / max(err_t, 1e-30))
        assert err_k <= 2 * err_t + eps, f"{name}: kernel error {err_k:.3g} > 2 x torch's {err_t:.3g} + {eps:.3g}"
    return ratios


DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype, layout, cos_form", [
    (torch.float32, "contiguous", "seq-dim"),
    (torch.float32, "transposed", "batch-seq-dim"),
    (torch.float16, "contiguous", "one-seq-dim"),
    (torch.float16, "transposed", "seq-dim"),
    (torch.float16, "transposed", "batch-seq-dim"),
], ids=["fp32-contiguous-seq-dim", "fp32-transposed-batch-seq-dim", "fp16-contiguous-one-seq-dim",
        "fp16-transposed-seq-dim", "fp16-transposed-batch-seq-dim"])
def test_matches_reference(device: str, dtype: Any, layout: str, cos_form: str) -> None:
    # 5 q heads and 3 k heads (grouped-query, neither a multiple of the interpreter's 4-head block),
    # seq 7 (not a multiple of its 4-position block), head dim 66 (half 33: not a power of two)
    q, k = _qk(2, 5, 3, 7, 66, dtype, device, layout)
    cos, sin = _cos_sin(2, 7, 66, device, per_batch=cos_form == "batch-seq-dim")
    if cos_form == "seq-dim":
        cos, sin = cos[0], sin[0]
    _check(q, k, cos.to(dtype), sin.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("n_seq, dim", [(1, 6), (1, 128), (3, 2)], ids=["seq1-dim6", "seq1-dim128", "dim2"])
def test_odd_sizes(device: str, dtype: Any, n_seq: int, dim: int) -> None:
    q, k = _qk(1, 3, 1, n_seq, dim, dtype, device, "transposed")
    cos, sin = _cos_sin(1, n_seq, dim, device, per_batch=True)  # seq 1 at a random position: sin != 0
    _check(q, k, cos.to(dtype), sin.to(dtype))


def test_fp32_cos_with_fp16_inputs_and_unsqueezed_cos(device: str) -> None:
    # cos/sin in fp32 beside fp16 q/k, in the [batch, 1, seq, dim] form HF's apply_rotary_pos_emb unsqueezes
    q, k = _qk(2, 2, 2, 5, 8, torch.float16, device)
    cos, sin = _cos_sin(2, 5, 8, device, per_batch=True)
    got = rope(q, k, cos[:, None], sin[:, None])
    ref = rope_reference(q.float(), k.float(), cos, sin)
    for a, b in zip(got, ref):
        assert a.dtype == torch.float16
        torch.testing.assert_close(a.float(), b, rtol=1e-3, atol=1e-3)


def test_same_head_count_and_k_wider_than_q(device: str) -> None:
    for hq, hk in ((4, 4), (1, 3)):
        q, k = _qk(1, hq, hk, 5, 10, torch.float32, device)
        cos, sin = _cos_sin(1, 5, 10, device)
        _check(q, k, cos, sin)


def test_strided_inputs_outputs_and_gradients(device: str) -> None:
    # q and k as views into one fused qkv projection [batch, seq, (hq + 2 hk) * dim]: not dense, every
    # stride unusual; output gradients as transposed (non-contiguous) views
    n_batch, n_seq, hq, hk, dim = 2, 5, 3, 1, 12
    qkv = torch.randn(n_batch, n_seq, (hq + 2 * hk) * dim, device=device)
    q = qkv[..., : hq * dim].view(n_batch, n_seq, hq, dim).transpose(1, 2)
    k = qkv[..., hq * dim: (hq + hk) * dim].view(n_batch, n_seq, hk, dim).transpose(1, 2)
    assert not q.is_contiguous()
    gq = torch.randn(n_batch, n_seq, hq, dim, device=device).transpose(1, 2)
    gk = torch.randn(dim, n_seq, hk, n_batch, device=device).permute(3, 2, 1, 0)
    cos, sin = _cos_sin(n_batch, n_seq, dim, device, per_batch=True)
    _check(q, k, cos, sin.transpose(1, 2).contiguous().transpose(1, 2), grads=(gq, gk))


class _Ops(TorchDispatchMode):
    """Names every aten op dispatched (real ops, not mocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: List[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_transposed_views_are_never_copied(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # HF's layout: q/k are transposed views of [batch, seq, heads, dim] leaves. Nothing may be copied:
    # outputs keep the view's strides, and the leaves' gradients arrive dense without a copy.
    n_batch, n_seq, hq, hk, dim = 2, 6, 4, 2, 16
    ql = torch.randn(n_batch, n_seq, hq, dim, device=device, requires_grad=True)
    kl = torch.randn(n_batch, n_seq, hk, dim, device=device, requires_grad=True)
    cos, sin = _cos_sin(1, n_seq, dim, device)
    gq = torch.randn(n_batch, hq, n_seq, dim, device=device)
    gk = torch.randn(n_batch, hk, n_seq, dim, device=device)
    real_launch = rope_mod._launch

    def launch(*args: Any, **kwargs: Any) -> None:
        # the kernel itself is no aten op on the GPU; under the interpreter it copies its arguments to
        # and from numpy, which must not count here
        with _disable_current_modes():
            real_launch(*args, **kwargs)

    monkeypatch.setattr(rope_mod, "_launch", launch)
    with _Ops() as ops:
        qo, ko = rope(ql.transpose(1, 2), kl.transpose(1, 2), cos, sin)
        torch.autograd.backward([qo, ko], [gq, gk])
    copies = [n for n in ops.names if n in ("copy_", "clone", "contiguous", "_to_copy", "cat", "add", "mul")]
    assert copies == [], copies
    assert qo.stride() == ql.transpose(1, 2).stride() and ko.stride() == kl.transpose(1, 2).stride()
    assert ql.grad is not None and ql.grad.is_contiguous() and kl.grad is not None and kl.grad.is_contiguous()
    ref = _run(rope_reference, ql.transpose(1, 2), kl.transpose(1, 2), cos, sin, gq, gk)
    for a, b in zip((qo, ko, ql.grad.transpose(1, 2), kl.grad.transpose(1, 2)), ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)


def test_only_q_needs_grad_and_unused_k_output(device: str) -> None:
    q, k = _qk(1, 2, 1, 4, 8, torch.float32, device)
    cos, sin = _cos_sin(1, 4, 8, device)
    ql = q.clone().requires_grad_()
    qo, ko = rope(ql, k, cos, sin)
    assert not ko.requires_grad
    g = torch.randn_like(qo)
    qo.backward(g)
    ref_q = q.clone().requires_grad_()
    rope_reference(ref_q, k, cos, sin)[0].backward(g)
    torch.testing.assert_close(ql.grad, ref_q.grad, rtol=1e-5, atol=1e-5)
    # both need grad, only k's output is used: q's gradient is None (zero), k's is right
    ql, kl = q.clone().requires_grad_(), k.clone().requires_grad_()
    _, ko = rope(ql, kl, cos, sin)
    gk = torch.randn_like(ko)
    ko.backward(gk)
    assert ql.grad is None
    ref_k = k.clone().requires_grad_()
    rope_reference(q, ref_k, cos, sin)[1].backward(gk)
    torch.testing.assert_close(kl.grad, ref_k.grad, rtol=1e-5, atol=1e-5)


def test_no_grad_and_cos_requiring_grad(device: str) -> None:
    q, k = _qk(1, 2, 2, 3, 4, torch.float32, device)
    cos, sin = _cos_sin(1, 3, 4, device)
    with torch.no_grad():
        qo, ko = rope(q.requires_grad_(), k, cos, sin)
    assert not qo.requires_grad
    # cos/sin are constants: a cos that requires grad gets none, q still does
    c = cos.clone().requires_grad_()
    qo, _ = rope(q, k, c, sin)
    qo.sum().backward()
    assert c.grad is None and q.grad is not None


def test_empty_inputs(device: str) -> None:
    q, k = _qk(2, 3, 1, 0, 8, torch.float32, device)
    cos, sin = _cos_sin(1, 0, 8, device)
    qo, ko = rope(q, k, cos, sin)
    assert qo.shape == q.shape and ko.shape == k.shape


def test_int64_offsets_path(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # offsets inside a tile past 2^31 switch the kernel to int64 offsets; force that path on small
    # tensors (real ones would need > 8 GiB) and check the result is the same
    monkeypatch.setattr(rope_mod, "_INT32_MAX", 0)
    q, k = _qk(1, 3, 2, 5, 6, torch.float32, device, "transposed")
    cos, sin = _cos_sin(1, 5, 6, device)
    _check(q, k, cos, sin)


def test_config_keeps_tiles_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # the GPU's heuristic (checked here on the CPU): ~1k elements a half-tile, powers of two, positions
    # before heads; the shape gets the tile that measured best on the H200 (2 heads x 8 positions)
    monkeypatch.setattr(rope_mod, "_INTERPRETED", False)
    assert rope_mod._config(32, 4096, 64) == (2, 8, 4)
    assert rope_mod._config(8, 4096, 64) == (2, 8, 4)
    assert rope_mod._config(32, 1, 64) == (16, 1, 4)  # decoding: one position, more heads
    assert rope_mod._config(1, 1, 3) == (1, 1, 1)
    for n_heads, n_seq, half in ((40, 7, 33), (4, 4096, 32), (2, 100, 256), (8, 4096, 1024)):
        block_h, block_s, warps = rope_mod._config(n_heads, n_seq, half)
        for v in (block_h, block_s, warps):
            assert v >= 1 and v & (v - 1) == 0
        assert block_h * block_s * rope_mod._pow2(half) <= max(1024, rope_mod._pow2(half))
    assert [rope_mod._pow2(n) for n in (0, 1, 2, 3, 33, 64)] == [1, 1, 2, 4, 64, 64]
    assert [rope_mod._cdiv(a, b) for a, b in ((0, 4), (1, 4), (4, 4), (5, 4))] == [0, 1, 1, 2]


@pytest.mark.parametrize("q_shape, k_shape, cos_shape, match", [
    ((1, 2, 3, 5), (1, 2, 3, 5), (3, 5), "even"),
    ((1, 2, 3, 0), (1, 2, 3, 0), (3, 0), "even"),
    ((2, 2, 3, 4), (1, 2, 3, 4), (3, 4), "differ"),
    ((1, 2, 3, 4), (1, 2, 4, 4), (3, 4), "differ"),
    ((1, 2, 3, 4), (1, 2, 3, 6), (3, 4), "differ"),
    ((1, 2, 3, 4), (1, 2, 3, 4), (4, 4), "broadcast"),
    ((1, 2, 3, 4), (1, 2, 3, 4), (3, 6), "broadcast"),
    ((2, 2, 3, 4), (2, 2, 3, 4), (3, 3, 4), "broadcast"),
    ((1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4), "broadcast"),
    ((1, 2, 3, 4), (1, 2, 3, 4), (4,), "broadcast"),
    ((2, 3, 4), (2, 3, 4), (3, 4), r"\[batch, heads, seq, dim\]"),
])
def test_bad_shapes(device: str, q_shape: Tuple[int, ...], k_shape: Tuple[int, ...], cos_shape: Tuple[int, ...],
                    match: str) -> None:
    q, k = torch.zeros(q_shape, device=device), torch.zeros(k_shape, device=device)
    cos = torch.zeros(cos_shape, device=device)
    for fn in (rope, rope_reference):
        with pytest.raises(ValueError, match=match):
            fn(q, k, cos, cos)


def test_bad_dtypes_and_mismatched_cos_sin(device: str) -> None:
    q, k = _qk(1, 2, 1, 3, 4, torch.float32, device)
    cos, sin = _cos_sin(1, 3, 4, device)
    with pytest.raises(ValueError, match="differ"):
        rope(q, k, cos, sin[:, :2])
    with pytest.raises(ValueError, match="int64"):
        rope(q.long(), k, cos, sin)
    with pytest.raises(ValueError, match="float64"):
        rope(q, k, cos.double(), sin.double())


# --- on the GPU: bf16, the full shape, both layouts ----------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_gpu_medium(dtype: Any, layout: str) -> None:
    q, k = _qk(3, 12, 4, 333, 66, dtype, "cuda", layout)
    cos, sin = _cos_sin(3, 333, 66, "cuda", per_batch=True)
    _check(q, k, cos.to(dtype), sin.to(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_gpu_full_shape_bf16(layout: str) -> None:
    q, k = _qk(4, 32, 8, 4096, 128, torch.bfloat16, "cuda", layout)
    cos, sin = _cos_sin(1, 4096, 128, "cuda")
    ratios = _check(q, k, cos.to(torch.bfloat16), sin.to(torch.bfloat16))
    print(f"full-shape bf16 ({layout}) error ratios vs torch bf16 (q_out, k_out, dq, dk):",
          [round(r, 3) for r in ratios])

