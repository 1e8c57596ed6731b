"""RMSNorm (Llama and Gemma offset) against an fp32 reference: output and both gradients.

On a machine without CUDA this runs through Triton's CPU interpreter (fp32 and fp16, tiny shapes); the
`gpu` tests add bf16 and the issue's shape (16384 x 4096).
"""

from __future__ import annotations

import importlib
import zlib
from typing import Any, Dict, Tuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from doctor.kernels.norm import rms_norm, rms_norm_reference  # noqa: E402

rms_mod = importlib.import_module("doctor.kernels.norm")


@pytest.fixture(autouse=True)
def _seed(request: Any) -> None:
    """Random inputs, seeded per test so a CI failure reproduces."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _grads(fn: Any, x: Any, w: Any, dy: Any, need_x: bool = True, need_w: bool = True, **kw: Any
           ) -> Tuple[Any, Any, Any]:
    """(output, x grad, weight grad) of fn on fresh leaf copies, backward with dy."""
    x = x.detach().clone().requires_grad_(need_x)
    w = w.detach().clone().requires_grad_(need_w)
    y = fn(x, w, **kw)
    y.backward(dy)
    return y.detach(), x.grad, w.grad


def _torch_in_dtype(x: Any, w: Any, eps: float = 1e-6, offset: float = 0.0) -> Any:
    """RMSNorm as Hugging Face computes it in the inputs' dtype (what a user would run instead)."""
    xf = x.float()
    h = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if offset == 0.0:
        return w * h.to(x.dtype)  # Llama: the weight multiplies in the input dtype
    return (h * (offset + w.float())).to(x.dtype)  # Gemma: fp32 throughout, one cast at the end


def _check(x: Any, w: Any, dtype: Any, offset: float = 0.0, eps: float = 1e-6) -> Dict[str, float]:
    """Kernel vs fp32 reference (and vs torch in dtype for fp16/bf16); returns the error ratios."""
    dy = torch.randn(x.shape, device=x.device).to(dtype)
    ref = _grads(rms_norm_reference, x.float(), w.float(), dy.float(), eps=eps, offset=offset)
    got = _grads(rms_norm, x, w, dy, eps=eps, offset=offset)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == w.dtype
    assert got[0].shape == x.shape and got[1].shape == x.shape and got[2].shape == w.shape
    ratios: Dict[str, float] = {}
    if dtype == torch.float32:
        for name, a, b in zip(("y", "dx", "dw"), got, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(b.abs().max().item(), 1e-3), msg=name)
        return ratios
    base = _grads(_torch_in_dtype, x, w, dy, eps=eps, offset=offset)
    for name, a, t, b in zip(("y", "dx", "dw"), got, base, ref):
        err_k = (a.float() - b).abs().max().item()
        err_t = (t.float() - b).abs().max().item()
        eps_abs = 0.05 * torch.finfo(dtype).eps * b.abs().max().item()  # 1/20 of an ulp at the largest value
        ratios[name] = err_k / max(err_t, 1e-30)
        assert err_k <= 2 * err_t + eps_abs, f"{name}: kernel error {err_k:.3g} > 2 x torch's {err_t:.3g}"
    return ratios


def _inputs(shape: Tuple[int, ...], dtype: Any, device: str) -> Tuple[Any, Any]:
    """x of the shape, and a weight near 1 (as trained norms are), both in dtype."""
    x = torch.randn(shape, device=device).to(dtype)
    w = (1.0 + 0.3 * torch.randn(shape[-1], device=device)).to(dtype)
    return x, w


DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
def test_matches_reference(device: str, dtype: Any, offset: float) -> None:
    # hidden 123: not a power of two, so the row block is masked
    x, w = _inputs((9, 123), dtype, device)
    _check(x, w, dtype, offset=offset)


@pytest.mark.parametrize("shape", [(1, 1, 123), (2, 3, 5, 16), (37, 8), (1, 5)],
                         ids=["seq-1", "leading-dims", "rows-split-unevenly", "one-row"])
def test_shapes(device: str, shape: Tuple[int, ...]) -> None:
    # 37 rows: 3 backward programs of 14, 14 and 9 rows in the interpreter (a short last step)
    x, w = _inputs(shape, torch.float32, device)
    _check(x, w, torch.float32, eps=1e-5)


@pytest.mark.parametrize("layout", ["transposed-leading", "row-strided", "column-major"])
def test_non_contiguous_inputs(device: str, layout: str) -> None:
    if layout == "transposed-leading":  # [batch, seq, H] view of a [seq, batch, H] tensor
        x = torch.randn(6, 3, 40, device=device).transpose(0, 1)
    elif layout == "row-strided":  # the first H columns of a wider tensor: read in place
        x = torch.randn(10, 70, device=device)[:, :40]
    else:  # unit stride on the rows, not the columns: copied first
        x = torch.randn(40, 10, device=device).t()
    assert not x.is_contiguous()
    w = torch.randn(40, device=device)
    dy = torch.randn(40, *x.shape[:-1], device=device).movedim(0, -1)  # a non-contiguous gradient too
    got = _grads(rms_norm, x, w, dy)
    ref = _grads(rms_norm_reference, x, w, dy)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("need_x, need_w", [(True, False), (False, True)], ids=["frozen-weight", "frozen-x"])
def test_only_needed_gradients(device: str, need_x: bool, need_w: bool, monkeypatch: Any) -> None:
    x, w = _inputs((5, 33), torch.float32, device)
    dy = torch.randn(5, 33, device=device)
    launched: Dict[str, Any] = {}
    backward = rms_mod._backward

    def spy(*args: Any, **kw: Any) -> Any:
        out = backward(*args, **kw)
        launched["dx"], launched["dw"] = (t is not None for t in out)
        return out

    monkeypatch.setattr(rms_mod, "_backward", spy)
    got = _grads(rms_norm, x, w, dy, need_x=need_x, need_w=need_w, offset=1.0)
    ref = _grads(rms_norm_reference, x, w, dy, offset=1.0)
    assert launched == {"dx": need_x, "dw": need_w}  # the kernel skipped the gradient nobody wants
    torch.testing.assert_close(got[0], ref[0])
    for g, r, needed in ((got[1], ref[1], need_x), (got[2], ref[2], need_w)):
        if needed:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
        else:
            assert g is None


def test_weight_dtype_differs_from_x(device: str) -> None:
    # an fp32 weight under an fp16 activation: y (and dx) in x's dtype, dw in the weight's
    x = torch.randn(4, 48, device=device).half()
    w = torch.randn(48, device=device)
    dy = torch.randn(4, 48, device=device).half()
    y, dx, dw = _grads(rms_norm, x, w, dy)
    assert y.dtype == torch.float16 and dx.dtype == torch.float16 and dw.dtype == torch.float32
    ref = _grads(rms_norm_reference, x.float(), w, dy.float())
    torch.testing.assert_close(y.float(), ref[0], rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(dw, ref[2], rtol=1e-3, atol=1e-3)


def test_no_grad_runs_forward_only(device: str) -> None:
    x, w = _inputs((3, 17), torch.float32, device)
    x.requires_grad_()
    with torch.no_grad():
        y = rms_norm(x, w, eps=1e-5, offset=1.0)
    assert y.grad_fn is None
    torch.testing.assert_close(y, rms_norm_reference(x.detach(), w, eps=1e-5, offset=1.0))


def test_empty_input(device: str) -> None:
    x = torch.randn(0, 16, device=device, requires_grad=True)
    w = torch.randn(16, device=device, requires_grad=True)
    y = rms_norm(x, w)
    assert y.shape == (0, 16)
    y.sum().backward()
    assert x.grad.shape == (0, 16) and torch.count_nonzero(w.grad) == 0


def test_row_too_wide_for_registers_uses_the_reference(device: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(rms_mod, "_MAX_HIDDEN", 32)
    x, w = _inputs((3, 40), torch.float32, device)
    dy = torch.randn(3, 40, device=device)
    got = _grads(rms_norm, x, w, dy)
    ref = _grads(rms_norm_reference, x, w, dy)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


def test_bad_arguments(device: str) -> None:
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="does not match"):
        rms_norm(x, torch.ones(7, device=device))
    with pytest.raises(ValueError, match="does not match"):
        rms_norm(x, torch.ones(1, 8, device=device))
    with pytest.raises(ValueError, match="does not match"):
        rms_norm(torch.tensor(1.0, device=device), torch.ones(1, device=device))
    with pytest.raises(ValueError, match="x dtype"):
        rms_norm(x.double(), torch.ones(8, device=device))
    with pytest.raises(ValueError, match="weight dtype"):
        rms_norm(x, torch.ones(8, device=device, dtype=torch.int32))
    with pytest.raises(ValueError, match="does not match"):
        rms_norm_reference(x, torch.ones(3, device=device))


# --- on the GPU: bf16, larger rows, the shape -----------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
@pytest.mark.parametrize("shape", [(4099, 4096), (3, 1000, 123), (2, 7, 8192), (1, 1, 5120)],
                         ids=["4096", "123", "8192", "one-row"])
def test_gpu_dtypes(dtype: Any, offset: float, shape: Tuple[int, ...]) -> None:
    x, w = _inputs(shape, dtype, "cuda")
    _check(x, w, dtype, offset=offset)


@pytest.mark.gpu
def test_gpu_full_shape_bf16() -> None:
    x, w = _inputs((16384, 4096), torch.bfloat16, "cuda")
    ratios = _check(x, w, torch.bfloat16)
    print("rms_norm 16384x4096 bf16 error ratios vs torch bf16:", {k: round(v, 3) for k, v in ratios.items()})


@pytest.mark.gpu
def test_gpu_non_contiguous_bf16() -> None:
    base = torch.randn(512, 4, 3000, device="cuda").to(torch.bfloat16)
    x = base.transpose(0, 1)[..., :2048]
    w = torch.randn(2048, device="cuda").to(torch.bfloat16)
    dy = torch.randn(x.shape, device="cuda").to(torch.bfloat16)
    got = _grads(rms_norm, x, w, dy)
    ref = _grads(rms_norm_reference, x.float(), w.float(), dy.float())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2 * max(1.0, b.abs().max().item()))
