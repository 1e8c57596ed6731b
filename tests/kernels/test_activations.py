"""SwiGLU and GeGLU (erf and tanh) against an fp32 reference: output and both gradients.

On a machine without CUDA this runs through Triton's CPU interpreter (fp32 and fp16, tiny shapes); the
`gpu` tests add bf16 and the issue's shape (16384 x 14336).
"""

from __future__ import annotations

import importlib
import zlib
from typing import Any, Callable, Dict, Tuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from doctor.kernels import geglu, geglu_reference, swiglu, swiglu_reference  # noqa: E402

act_mod = importlib.import_module("doctor.kernels.activations")
F = torch.nn.functional

# name -> (kernel, fp32 reference, the same op as torch computes it in the inputs' dtype)
OPS: Dict[str, Tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
    "swiglu": (swiglu, swiglu_reference, lambda g, u: F.silu(g) * u),
    "geglu": (geglu, geglu_reference, lambda g, u: F.gelu(g) * u),
    "geglu-tanh": (lambda g, u: geglu(g, u, approximate="tanh"),
                   lambda g, u: geglu_reference(g, u, approximate="tanh"),
                   lambda g, u: F.gelu(g, approximate="tanh") * u),
}


@pytest.fixture(autouse=True)
def _seed(request: Any) -> None:
    """Random inputs, seeded per test so a CI failure reproduces."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _grads(fn: Any, g: Any, u: Any, dy: Any, need_g: bool = True, need_u: bool = True) -> Tuple[Any, Any, Any]:
    """(output, gate grad, up grad) of fn on fresh leaf copies, backward with dy."""
    g = g.detach().clone().requires_grad_(need_g)
    u = u.detach().clone().requires_grad_(need_u)
    y = fn(g, u)
    y.backward(dy)
    return y.detach(), g.grad, u.grad


def _check(op: str, g: Any, u: Any, dtype: Any) -> Dict[str, float]:
    """Kernel vs fp32 reference (and vs torch in dtype for fp16/bf16); returns the error ratios."""
    kernel, reference, in_dtype = OPS[op]
    dy = torch.randn(g.shape, device=g.device).to(dtype)
    ref = _grads(reference, g.float(), u.float(), dy.float())
    got = _grads(kernel, g, u, dy)
    assert all(t.dtype == dtype and t.shape == g.shape for t in got)
    ratios: Dict[str, float] = {}
    if dtype == torch.float32:
        for name, a, b in zip(("y", "dgate", "dup"), got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(b.abs().max().item(), 1e-3), msg=name)
        return ratios
    base = _grads(in_dtype, g, u, dy)
    for name, a, t, b in zip(("y", "dgate", "dup"), got, base, ref):
        err_k = (a.float() - b).abs().max().item()
        err_t = (t.float() - b).abs().max().item()
        eps_abs = 0.05 * torch.finfo(dtype).eps * b.abs().max().item()  # 1/20 of an ulp at the largest value
        ratios[name] = err_k / max(err_t, 1e-30)
        assert err_k <= 2 * err_t + eps_abs, f"{op} {name}: kernel error {err_k:.3g} > 2 x torch's {err_t:.3g}"
    return ratios


def _inputs(shape: Tuple[int, ...], dtype: Any, device: str) -> Tuple[Any, Any]:
    """gate spread over the activation's curved part and both tails (std 3), up standard normal."""
    return (3 * torch.randn(shape, device=device)).to(dtype), torch.randn(shape, device=device).to(dtype)


DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("op", list(OPS))
def test_matches_reference(device: str, op: str, dtype: Any) -> None:
    # 5 x 123 = 615 elements: one contiguous row of 3 blocks in the interpreter, the last one short
    g, u = _inputs((5, 123), dtype, device)
    _check(op, g, u, dtype)


@pytest.mark.parametrize("shape", [(1,), (1, 1, 123), (2, 3, 4, 7)], ids=["one-element", "seq-1", "leading-dims"])
@pytest.mark.parametrize("op", list(OPS))
def test_shapes(device: str, op: str, shape: Tuple[int, ...]) -> None:
    g, u = _inputs(shape, torch.float32, device)
    _check(op, g, u, torch.float32)


@pytest.mark.parametrize("layout", ["fused-halves", "transposed", "mixed"])
@pytest.mark.parametrize("op", list(OPS))
def test_non_contiguous_inputs(device: str, op: str, layout: str) -> None:
    if layout == "fused-halves":  # gate and up as the halves of one [.., 2 x 300] projection: read in place
        g, u = (3 * torch.randn(2, 3, 600, device=device)).chunk(2, dim=-1)
    elif layout == "transposed":  # unit stride on the wrong dim: copied first
        g, u = (3 * torch.randn(300, 4, device=device)).t(), torch.randn(300, 4, device=device).t()
    else:  # one contiguous, one a row-strided view
        g, u = 3 * torch.randn(4, 300, device=device), torch.randn(4, 500, device=device)[:, 100:400]
    assert not u.is_contiguous()
    kernel, reference, _ = OPS[op]
    dy = torch.randn(300, 4, device=device).t()  # a non-contiguous gradient too
    if layout == "fused-halves":
        dy = torch.randn(2, 3, 300, device=device)
    got = _grads(kernel, g, u, dy)
    ref = _grads(reference, g, u, dy)
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_halves_are_read_in_place(device: str, monkeypatch: Any) -> None:
    # the row-strided halves of a fused projection reach the kernel as views, not copies
    seen = []
    as_rows = act_mod._as_rows

    def spy(*ts: Any) -> Any:
        rows, n, out = as_rows(*ts)
        seen.append([t.data_ptr() for t in out] == [t.data_ptr() for t in ts])
        return rows, n, out

    monkeypatch.setattr(act_mod, "_as_rows", spy)
    g, u = torch.randn(4, 600, device=device).chunk(2, dim=-1)
    swiglu(g, u)
    assert seen == [True]


@pytest.mark.parametrize("op", list(OPS))
def test_extreme_gates_stay_finite(device: str, op: str) -> None:
    g = torch.tensor([-1e4, -200.0, -30.0, -1e-6, 0.0, 1e-6, 30.0, 200.0, 1e4], device=device)
    u = torch.ones_like(g)
    dy = torch.ones_like(g)
    kernel, reference, _ = OPS[op]
    got = _grads(kernel, g, u, dy)
    ref = _grads(reference, g, u, dy)
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
def test_geglu_abramowitz_stegun_erf(device: str, dtype: Any, monkeypatch: Any) -> None:
    # the cheaper erf form (an alternative kernel code, benchmarked against the math library's erf)
    # passes the same checks, tails and extremes included
    monkeypatch.setitem(act_mod._APPROXIMATE, "none", act_mod._GELU_ERF_AS)
    g, u = _inputs((5, 123), dtype, device)
    _check("geglu", g, u, dtype)
    g = torch.tensor([-1e4, -200.0, -30.0, -6.0, -1e-6, 0.0, 1e-6, 6.0, 30.0, 1e4], device=device)
    got = _grads(geglu, g, torch.ones_like(g), torch.ones_like(g))
    ref = _grads(geglu_reference, g, torch.ones_like(g), torch.ones_like(g))
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("need_g, need_u", [(True, False), (False, True)], ids=["frozen-up", "frozen-gate"])
def test_only_needed_gradients(device: str, need_g: bool, need_u: bool) -> None:
    g, u = _inputs((3, 50), torch.float32, device)
    dy = torch.randn(3, 50, device=device)
    got = _grads(swiglu, g, u, dy, need_g=need_g, need_u=need_u)
    ref = _grads(swiglu_reference, g, u, dy)
    torch.testing.assert_close(got[0], ref[0])
    for a, b, needed in ((got[1], ref[1], need_g), (got[2], ref[2], need_u)):
        if needed:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert a is None


def test_no_grad_runs_forward_only(device: str) -> None:
    g, u = _inputs((2, 40), torch.float32, device)
    g.requires_grad_()
    with torch.no_grad():
        y = geglu(g, u, approximate="tanh")
    assert y.grad_fn is None
    torch.testing.assert_close(y, geglu_reference(g.detach(), u, approximate="tanh"))


def test_empty_input(device: str) -> None:
    g = torch.randn(0, 8, device=device, requires_grad=True)
    u = torch.randn(0, 8, device=device, requires_grad=True)
    y = swiglu(g, u)
    assert y.shape == (0, 8)
    y.sum().backward()
    assert g.grad.shape == (0, 8) and u.grad.shape == (0, 8)


def test_bad_arguments(device: str) -> None:
    g = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="same shape"):
        swiglu(g, torch.randn(2, 7, device=device))
    with pytest.raises(ValueError, match="same shape"):
        geglu(g, torch.randn(8, device=device))  # no broadcasting
    with pytest.raises(ValueError, match="but up is"):
        swiglu(g, g.half())
    with pytest.raises(ValueError, match="unsupported dtype"):
        swiglu(g.double(), g.double())
    with pytest.raises(ValueError, match="unsupported dtype"):
        swiglu(g.int(), g.int())
    for bad in ("erf", "TANH", None, 1):
        with pytest.raises(ValueError, match="approximate"):
            geglu(g, g, approximate=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="approximate"):
            geglu_reference(g, g, approximate=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        swiglu_reference(g, g[:1])


# --- on the GPU: bf16, the shape ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("shape", [(2048, 14336), (3, 77, 1001)], ids=["14336", "odd"])
def test_gpu_dtypes(op: str, dtype: Any, shape: Tuple[int, ...]) -> None:
    g, u = _inputs(shape, dtype, "cuda")
    _check(op, g, u, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("op", list(OPS))
def test_gpu_full_shape_bf16(op: str) -> None:
    g, u = _inputs((16384, 14336), torch.bfloat16, "cuda")
    ratios = _check(op, g, u, torch.bfloat16)
    print(f"{op} 16384x14336 bf16 error ratios vs torch bf16:", {k: round(v, 3) for k, v in ratios.items()})


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gpu_geglu_abramowitz_stegun_erf(dtype: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(act_mod._APPROXIMATE, "none", act_mod._GELU_ERF_AS)
    g, u = _inputs((2048, 14336), dtype, "cuda")
    _check("geglu", g, u, dtype)


@pytest.mark.gpu
def test_gpu_fused_halves_bf16() -> None:
    g, u = (3 * torch.randn(4096, 2 * 14336, device="cuda")).to(torch.bfloat16).chunk(2, dim=-1)
    dy = torch.randn(g.shape, device="cuda").to(torch.bfloat16)
    got = _grads(swiglu, g, u, dy)
    ref = _grads(swiglu_reference, g.float(), u.float(), dy.float())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2)
