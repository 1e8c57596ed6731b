"""Probe bodies and the attention backends, run for real on the CPU with the installed CPU torch.

Small shapes through params (the catalogue's shapes are for GPUs). GPU-only bodies must skip or raise
cleanly here. Optional packages (triton, bitsandbytes, xformers) are exercised when importable.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from typing import Any, Dict

import pytest

torch = pytest.importorskip("torch")

from doctor.backends import attention as attn  # noqa: E402
from doctor.probes.bodies import _numerics, attention, cuda, dispatch_probe, flash_attn_probe  # noqa: E402
from doctor.probes.bodies import torch_compile, triton_compile, xformers_probe  # noqa: E402
from doctor.probes.bodies._attn_check import check_attention, check_forward  # noqa: E402
from doctor.probes.catalogue import CATALOGUE  # noqa: E402
from doctor.probes.spec import ProbeContext  # noqa: E402
from tests.conftest import REPO  # noqa: E402

SMALL_ATTN: Dict[str, Any] = {"batch": 1, "heads": 2, "seq": 64, "head_dim": 32, "causal": True, "warmup": 0, "iters": 1}
SMALL_MM: Dict[str, Any] = {"m": 128, "k": 256, "n": 96, "warmup": 0, "iters": 1}
CPU_BACKENDS = ("sdpa-math", "sdpa-flash", "torch")  # torch >= 2.3 has a CPU flash kernel behind SDPBackend.FLASH_ATTENTION


def cpu(params: Dict[str, Any], seed: int = 0) -> ProbeContext:
    """A CPU probe context."""
    return ProbeContext(device="cpu", params=params, seed=seed)


def assert_passes(result: Dict[str, Any], max_tolerance: float) -> None:
    """A passing result: finite error within a finite, positive, not-absurd tolerance; timed; described."""
    assert result.get("status") != "skipped", result
    err, tol = result["error"], result["tolerance"]
    assert math.isfinite(err) and err >= 0, result
    assert 0 < tol <= max_tolerance, result
    assert err <= tol, result
    assert result["time_ms"] > 0 and result["detail"], result


# --- catalogue targets --------------------------------------------------------------------------------


def body_module(target: str) -> str:
    """The module a catalogue target names; a bare 'cuda:context' means doctor.probes.bodies.cuda."""
    module = target.partition(":")[0]
    return module if "." in module else f"doctor.probes.bodies.{module}"


def test_every_catalogue_body_exists() -> None:
    """Each `target` in the catalogue names a body function that exists here."""
    for spec in CATALOGUE:
        name = spec.target.partition(":")[2]
        assert callable(getattr(importlib.import_module(body_module(spec.target)), name)), spec.target


def test_importing_bodies_and_backends_imports_no_torch() -> None:
    """The doctor's fast path may import these: none of them may pull in torch (or friends) at import time."""
    modules = sorted({body_module(s.target) for s in CATALOGUE} | {"doctor.backends.attention"})
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "heavy = [m for m in ('torch', 'triton', 'xformers', 'flash_attn', 'bitsandbytes', 'numpy') if m in sys.modules]\n"
            + "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- matmul --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tf32,max_tol", [
    ("float32", False, 1e-5),   # sqrt(K) u32 |A||B| / |C| bound: ~3e-6 at K=256
    ("float32", True, 5e-3),    # emulated-TF32 own error x2 (no effect on CPU, the bound is what is checked)
    ("float16", False, 2e-3),
    ("bfloat16", False, 2e-2),
])
def test_matmul_on_cpu(dtype: str, tf32: bool, max_tol: float) -> None:
    """The matmul body passes for every dtype and its tolerance is of the dtype's order."""
    for seed in range(2):
        r = cuda.matmul(cpu({**SMALL_MM, "dtype": dtype, "tf32": tf32}, seed))
        assert_passes(r, max_tol)
        assert dtype in r["detail"] and "float64" in r["detail"]


def test_matmul_tolerance_catches_a_tf32_product_claiming_fp32() -> None:
    """An fp32 result with TF32-sized input rounding is far outside the fp32 bound (the bound discriminates)."""
    r = cuda.matmul(cpu({**SMALL_MM, "dtype": "float32"}))
    a = torch.randn(128, 256)
    b = torch.randn(256, 96)
    ref = a.double() @ b.double()
    tf32_like = cuda._tf32_truncate(a) @ cuda._tf32_truncate(b)
    assert _numerics.rel_err(tf32_like, ref) > 10 * r["tolerance"]


def test_matmul_restores_tf32_setting() -> None:
    """The TF32 flag is set for the probe and restored afterwards."""
    m = torch.backends.cuda.matmul
    before = getattr(m, "fp32_precision", None)
    cuda.matmul(cpu({**SMALL_MM, "dtype": "float32", "tf32": True}))
    assert getattr(m, "fp32_precision", None) == before


def test_context_is_skipped_on_cpu() -> None:
    """The CUDA context probe has nothing to do on a CPU device."""
    r = cuda.context(cpu({}))
    assert r["status"] == "skipped" and "cpu" in r["detail"]


# --- attention -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,max_tol", [("float32", 5e-6), ("bfloat16", 3e-2)])
def test_sdpa_math_on_cpu(dtype: str, max_tol: float) -> None:
    """SDPA forced onto the math backend passes out/dq/dk/dv against the reference."""
    for seed in range(2):
        r = attention.sdpa(cpu({**SMALL_ATTN, "backend": "math", "dtype": dtype}, seed))
        assert_passes(r, max_tol)
        for part in ("out ", "dq ", "dk ", "dv ", "SDPA backend math", dtype):
            assert part in r["detail"], r["detail"]


@pytest.mark.parametrize("backend", ["efficient", "cudnn"])
def test_sdpa_cuda_only_backends_raise_on_cpu(backend: str) -> None:
    """Forcing a CUDA-only SDPA backend on CPU raises torch's own RuntimeError (an error verdict, not a pass)."""
    with pytest.raises(RuntimeError, match="(?i)no (viable|available)"):
        attention.sdpa(cpu({**SMALL_ATTN, "backend": backend, "dtype": "float32"}))


def test_sdpa_backend_missing_from_torch_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch without SDPBackend.CUDNN_ATTENTION (torch < 2.3/2.4): the cudnn probe is skipped, with the reason."""
    import torch.nn.attention as tna

    class OldSDPBackend:
        MATH = tna.SDPBackend.MATH
        FLASH_ATTENTION = tna.SDPBackend.FLASH_ATTENTION
        EFFICIENT_ATTENTION = tna.SDPBackend.EFFICIENT_ATTENTION

    monkeypatch.setattr(tna, "SDPBackend", OldSDPBackend)
    r = attention.sdpa(cpu({**SMALL_ATTN, "backend": "cudnn"}))
    assert r["status"] == "skipped" and "CUDNN_ATTENTION" in r["detail"]


@pytest.mark.parametrize("choice", ["sdpa-math", "torch"])
def test_dispatch_probe_on_cpu(choice: str) -> None:
    """The dispatcher probe verifies the chosen backend the same way the sdpa probes do."""
    r = dispatch_probe.attention(cpu({**SMALL_ATTN, "choice": choice, "dtype": "bfloat16"}))
    assert_passes(r, 3e-2)
    assert f"-> {choice}" in r["detail"]


def test_dispatch_probe_needs_a_valid_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """No choice is a runner bug (ValueError); an unknown one is a KeyError naming the known backends."""
    monkeypatch.delenv(dispatch_probe.ENV_OVERRIDE, raising=False)
    with pytest.raises(ValueError):
        dispatch_probe.attention(cpu(SMALL_ATTN))
    with pytest.raises(KeyError, match="sdpa-math"):
        dispatch_probe.attention(cpu({**SMALL_ATTN, "choice": "nope"}))


def test_attention_check_catches_wrong_kernels() -> None:
    """A kernel that ignores the mask, or is 1% off, is beyond tolerance: the check discriminates."""
    def not_causal(q, k, v, causal):  # type: ignore[no-untyped-def]
        return attn.reference(q, k, v, False)

    def one_percent_off(q, k, v, causal):  # type: ignore[no-untyped-def]
        return attn.reference(q, k, v, causal) * 1.01

    for fn in (not_causal, one_percent_off):
        r = check_attention(fn, cpu({**SMALL_ATTN, "dtype": "float32"}), fn.__name__)
        assert r["error"] > r["tolerance"], r
    r = check_forward(one_percent_off, cpu({**SMALL_ATTN, "dtype": "bfloat16"}), "fwd")
    assert r["error"] > r["tolerance"], r


def test_nan_output_is_an_infinite_error() -> None:
    """NaN in a kernel's output cannot pass (NaN <= tol would be False, but say so plainly)."""
    def nan_kernel(q, k, v, causal):  # type: ignore[no-untyped-def]
        return attn.reference(q, k, v, causal) * float("nan")

    r = check_attention(nan_kernel, cpu({**SMALL_ATTN, "dtype": "float32"}), "nan")
    assert r["error"] == float("inf")


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
def test_backend_matches_reference_on_cpu(name: str, causal: bool) -> None:
    """attention.get(name) on [B, H, S, D] fp32 equals the fp64 reference, forward and backward."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 48, 16, requires_grad=True) for _ in range(3))
    out = attn.get(name)(q, k, v, causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref_in = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    ref = attn.reference(*ref_in, causal, compute_dtype=torch.float64)
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout.double())
    assert _numerics.rel_err(out, ref) < 1e-5
    for got, want in zip((q.grad, k.grad, v.grad), (t.grad for t in ref_in)):
        assert _numerics.rel_err(got, want) < 1e-5


def test_reference_causal_means_query_sees_only_earlier_keys() -> None:
    """Causal reference: position 0 attends only to key 0, so its output is v[0]."""
    q, k, v = (torch.randn(1, 1, 5, 4) for _ in range(3))
    out = attn.reference(q, k, v, True)
    assert torch.allclose(out[0, 0, 0], v[0, 0, 0], atol=1e-6)


def test_attention_backends_are_named_and_ordered() -> None:
    """Order of preference as designed; unknown names are a KeyError listing the known ones."""
    assert attn.BACKENDS == ("flash-attn", "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "xformers", "sdpa-math",
                             "torch")
    with pytest.raises(KeyError, match="flash-attn, sdpa, sdpa-flash"):
        attn.get("flash")


# --- GPU-only bodies on a CPU ---------------------------------------------------------------------------


def test_gpu_only_bodies_skip_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """flash-attn, xformers attention and (without the interpreter) Triton report skipped on a CPU device."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for body in (flash_attn_probe.func, xformers_probe.mea, triton_compile.vector_add):
        r = body(cpu(SMALL_ATTN))
        assert r["status"] == "skipped" and r["detail"], (body, r)


def test_triton_vector_add_through_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TRITON_INTERPRET=1 the Triton body runs on CPU tensors and matches torch exactly."""
    pytest.importorskip("triton")
    pytest.importorskip("numpy")  # the interpreter runs kernels through numpy
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    r = triton_compile.vector_add(cpu({"n": 3000, "warmup": 0, "iters": 1}))
    assert r.get("status") != "skipped", r
    assert r["error"] == 0.0 and r["tolerance"] == 0.0 and "interpreter" in r["detail"]


def test_torch_compile_small_function_on_cpu() -> None:
    """torch.compile (aot_eager: Dynamo + AOTAutograd, no C compiler needed) fwd+bwd matches fp64 eager."""
    r = torch_compile.small_function(cpu({"backend": "aot_eager", "tokens": 32, "dim": 16, "hidden": 32,
                                          "warmup": 0, "iters": 1}))
    assert_passes(r, 1e-5)
    assert "backend=aot_eager" in r["detail"] and "dw1" in r["detail"]


# --- optional packages, when installed --------------------------------------------------------------------


def test_bnb_four_bit_on_cpu() -> None:
    """NF4 round trip within the codebook bound and matmul_4bit fwd+bwd within the matmul rule."""
    pytest.importorskip("bitsandbytes")
    from doctor.probes.bodies import bnb_probe

    r = bnb_probe.four_bit(cpu({"dtype": "float32", "out_features": 64, "in_features": 128, "tokens": 8,
                                "warmup": 0, "iters": 1}))
    assert_passes(r, 0.16)
    assert "round-trip" in r["detail"] and "dx" in r["detail"]


def test_bnb_adam8bit_on_cpu() -> None:
    """Three AdamW8bit steps stay within 5% (normwise) of torch AdamW, with uint8 state."""
    pytest.importorskip("bitsandbytes")
    from doctor.probes.bodies import bnb_probe

    r = bnb_probe.adam8bit(cpu({"rows": 64, "cols": 128}))
    assert_passes(r, 0.05)
    assert r["error"] > 0  # 8-bit state really used: not bit-identical to fp32 AdamW after 3 steps


def test_xformers_bias_to_on_cpu() -> None:
    """With a non-subclass bias (xformers >= 0.0.32 or < 0.0.27) the .to() failure cannot occur: skipped."""
    xformers = pytest.importorskip("xformers")
    from xformers.ops.fmha.attn_bias import LowerTriangularMask

    r = xformers_probe.bias_to(cpu(SMALL_ATTN))
    if isinstance(LowerTriangularMask(), torch.Tensor):
        assert r.get("status") != "skipped" and r["error"] == 0.0, r
    else:
        assert r["status"] == "skipped" and "not a torch.Tensor subclass" in r["detail"], (xformers.__version__, r)


# --- numerics ----------------------------------------------------------------------------------------


def test_numerics_helpers() -> None:
    """Errors are max-normalised, non-finite is infinite, tolerances have a per-dtype floor."""
    ref = torch.tensor([1.0, -2.0, 4.0])
    assert _numerics.rel_err(ref + torch.tensor([0.0, 0.4, 0.0]), ref) == pytest.approx(0.1)
    assert _numerics.rel_err(torch.tensor([1.0, float("nan"), 4.0]), ref) == float("inf")
    assert _numerics.lowp_tolerance(0.0, torch.bfloat16) == 2 ** -7
    assert _numerics.lowp_tolerance(0.01, torch.bfloat16) == 0.02
    assert _numerics.lowp_tolerance(0.0, torch.float32, reduce_len=64) == pytest.approx(4 * 8 * 2 ** -23)
    assert _numerics.torch_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError):
        _numerics.torch_dtype("int4")
