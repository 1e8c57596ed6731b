"""The training kernels' ops as probes and dispatcher backends (doctor.backends.ops, bodies/kernel_ops).

On the CPU: the torch reference backend runs in process at tiny shapes; doctor's Triton backends run in a
real probe child through Triton's interpreter (TRITON_INTERPRET=1 set for that child only), fp32 and fp16;
a planted wrong backend is caught; a machine without a GPU skips every kernel probe with its reason and
starts no child. On a GPU (marked `gpu`): every kernel probe passes or is skipped, and the dispatcher
picks a backend that passed.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Dict

import pytest

torch = pytest.importorskip("torch")

from doctor import dispatch  # noqa: E402
from doctor.backends import ops  # noqa: E402
from doctor.cache.own import DoctorCache  # noqa: E402
from doctor.errors import DoctorError  # noqa: E402
from doctor.probes.bodies import kernel_ops  # noqa: E402
from doctor.probes.catalogue import CATALOGUE, select  # noqa: E402
from doctor.probes.spec import ProbeContext  # noqa: E402
from doctor.verdicts import ProbeResult  # noqa: E402
from tests.conftest import REPO  # noqa: E402

# Tiny shapes (the interpreter costs ~3 ms per program instance); odd sizes on purpose: hidden 40/123 not a
# power of two, 5 positions, grouped-query heads, a vocab not a multiple of any block, ignored labels.
SMALL: Dict[str, Dict[str, Any]] = {
    "rms_norm": {"rows": 5, "hidden": 123},
    "rope": {"batch": 2, "heads_q": 4, "heads_k": 2, "seq": 5, "head_dim": 16, "layout": "bshd"},
    "swiglu": {"rows": 3, "inter": 123},
    "geglu": {"rows": 3, "inter": 123, "approximate": "tanh"},
    "cross_entropy": {"tokens": 7, "hidden": 16, "vocab": 77, "ignored": 0.3},
}
QUICK = {"warmup": 0, "iters": 1, "rounds": 1}
KERNEL_MODULE = {"rms_norm": "rms_norm", "rope": "rope", "swiglu": "activations", "geglu": "activations",
                 "cross_entropy": "fused_linear_ce"}


def cpu(op: str, dtype: str = "float32", **extra: Any) -> ProbeContext:
    """A CPU context at the op's tiny shapes."""
    return ProbeContext(device="cpu", params={**SMALL[op], **QUICK, "dtype": dtype, **extra}, seed=3)


def passes(result: Dict[str, Any]) -> bool:
    """What the runner would call a pass: finite error within a positive tolerance, timed."""
    return (result.get("status") != "skipped" and math.isfinite(result["error"]) and 0 < result["tolerance"]
            and result["error"] <= result["tolerance"] and result["time_ms"] > 0)


def have_kernel(op: str) -> bool:
    """doctor.kernels' module for this op exists in this checkout (the ops land one by one)."""
    return importlib.util.find_spec(f"doctor.kernels.{KERNEL_MODULE[op]}") is not None


# --- the catalogue and the names ----------------------------------------------------------------------


def test_every_op_backend_is_a_probe_and_a_dispatch_candidate() -> None:
    """Each (op, backend) but the reference has one probe naming it; each op has a dispatch probe; the
    dispatcher's candidates are the backends' names, reference last."""
    probes = {(s.op, s.backend): s for s in CATALOGUE if s.id.startswith("kernels.")}
    for op, names in ops.BACKENDS.items():
        assert dispatch.OPS[op] == names and names[-1] == dispatch.REFERENCE == ops.REFERENCE
        for b in names[:-1]:
            spec = probes.pop((op, b))
            assert spec.needs_cuda and spec.params["backend"] == b and set(ops.REQUIRES[b]) <= set(spec.requires)
            assert spec.target == f"doctor.probes.bodies.kernel_ops:{op}"
        assert any(s.id == f"dispatch.{op}" and s.params["op"] == op for s in CATALOGUE)
    assert not probes, probes
    assert {s.id for s in select(["kernels.rms_norm"])} == {"kernels.rms_norm.triton", "kernels.rms_norm.liger",
                                                            "kernels.rms_norm.compile"}


def test_get_rejects_unknown_names() -> None:
    """A bad op or backend name is a KeyError listing the known ones."""
    with pytest.raises(KeyError, match="known: rms_norm"):
        ops.get("layer_norm", "triton")
    with pytest.raises(KeyError, match="known: triton, liger"):
        ops.get("rope", "unsloth")


def test_liger_geglu_refuses_the_exact_gelu() -> None:
    """Liger has only the tanh GeGLU: asked for the exact one it raises rather than compute another function."""
    g = torch.randn(2, 8)
    with pytest.raises(NotImplementedError, match="only approximate='tanh'"):
        ops.get("geglu", "liger")(g, g, "none")


def test_missing_peer_is_unavailable_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer package that cannot be imported makes the probe skipped, naming the package."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # past the 'needs a GPU' check, so the import is tried
    monkeypatch.setattr(ops, "_import", lambda module, what: (_ for _ in ()).throw(ops.BackendUnavailable(f"{what} is not importable here")))
    for op, backend in (("swiglu", "liger"), ("cross_entropy", "cut-cross-entropy")):
        r = kernel_ops.check_op(op, backend, cpu(op))
        assert r["status"] == "skipped" and "is not importable here" in r["detail"], r


# --- the references and the judgement, in process ------------------------------------------------------


@pytest.mark.parametrize("op", sorted(SMALL))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_reference_backend_passes_its_own_probe(op: str, dtype: str) -> None:
    """The torch reference (fp32 math, cast back) is within 2x torch's own low-precision error, fwd and every grad."""
    r = kernel_ops.check_op(op, "torch", cpu(op, dtype))
    assert passes(r), r
    assert dtype in r["detail"] and "fwd+bwd" in r["detail"]


def test_rope_contiguous_layout_and_gemma_offset() -> None:
    """The other layout of q/k and RMSNorm's Gemma offset go through the same judgement."""
    assert passes(kernel_ops.check_op("rope", "torch", cpu("rope", layout="bhsd")))
    assert passes(kernel_ops.check_op("rms_norm", "torch", cpu("rms_norm", offset=1.0)))
    assert passes(kernel_ops.check_op("geglu", "torch", cpu("geglu", approximate="none")))
    assert passes(kernel_ops.check_op("cross_entropy", "torch", cpu("cross_entropy", softcap=3.0)))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_planted_wrong_backends_are_wrong_results(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """Backends that compute something else (eps off by 1e3, cos and sin swapped, ignore_index not honoured, silu for gelu)
    report an error above their tolerance: the runner turns that into wrong-result."""

    def bad_rms(x, w, eps=1e-6, offset=0.0):  # type: ignore[no-untyped-def]
        return ops.rms_norm_reference(x, w, eps * 1e3 + 1e-2, offset)

    def bad_rope(q, k, cos, sin):  # type: ignore[no-untyped-def]
        return ops.rope_reference(q, k, sin, cos)

    def bad_ce(h, w, labels, ignore_index=-100, *a):  # type: ignore[no-untyped-def]
        return ops.cross_entropy_reference(h, w, labels.clamp(min=0), ignore_index, *a)

    def bad_glu(gate, up, approximate="none"):  # type: ignore[no-untyped-def]
        return ops.swiglu_reference(gate, up)  # silu where gelu belongs

    for (op, fn) in (("rms_norm", bad_rms), ("rope", bad_rope), ("cross_entropy", bad_ce), ("geglu", bad_glu)):
        monkeypatch.setitem(ops._IMPLS, (op, "torch"), fn)
        r = kernel_ops.check_op(op, "torch", cpu(op, dtype))
        assert r["error"] > r["tolerance"], (op, r)


def test_wrong_shape_and_lost_gradient_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend returning the wrong shape, or cutting the graph, raises (the probe's verdict: error)."""
    monkeypatch.setitem(ops._IMPLS, ("swiglu", "torch"), lambda g, u: ops.swiglu_reference(g, u)[:, :-1])
    with pytest.raises(RuntimeError, match="shape"):
        kernel_ops.check_op("swiglu", "torch", cpu("swiglu"))
    monkeypatch.setitem(ops._IMPLS, ("swiglu", "torch"), lambda g, u: ops.swiglu_reference(g, u.detach()))
    with pytest.raises(RuntimeError, match="no gradient reached dup"):
        kernel_ops.check_op("swiglu", "torch", cpu("swiglu"))


def test_nan_output_is_an_infinite_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN anywhere in the output is an infinite error (a wrong result), never a pass."""
    monkeypatch.setitem(ops._IMPLS, ("swiglu", "torch"), lambda g, u: ops.swiglu_reference(g, u) * float("nan"))
    r = kernel_ops.check_op("swiglu", "torch", cpu("swiglu"))
    assert r["error"] == float("inf")


def test_where_a_backend_cannot_run_it_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton without a GPU (and no interpreter), bf16 in the interpreter, torch.compile on CPU: skipped, saying why."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    r = kernel_ops.check_op("rms_norm", "triton", cpu("rms_norm"))
    assert r["status"] == "skipped" and "need a CUDA GPU" in r["detail"] and "TRITON_INTERPRET=1" in r["detail"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    r = kernel_ops.check_op("rms_norm", "triton", cpu("rms_norm", "bfloat16"))
    assert r["status"] == "skipped" and "bf16" in r["detail"]
    r = kernel_ops.check_op("swiglu", "torch-compile", cpu("swiglu"))
    assert r["status"] == "skipped" and "GPU only" in r["detail"]


def test_bodies_reject_catalogue_bugs() -> None:
    """A kernel probe without a backend, or a dispatch probe without a choice or with an unknown op, raises."""
    with pytest.raises(ValueError, match="without params"):
        kernel_ops.rms_norm(ProbeContext("cpu", {**SMALL["rms_norm"]}, 0))
    with pytest.raises(ValueError, match="no backend to verify"):
        kernel_ops.dispatch(ProbeContext("cpu", {"op": "swiglu"}, 0))
    with pytest.raises(ValueError, match="unknown op"):
        kernel_ops.dispatch(ProbeContext("cpu", {"op": "softmax", "choice": "torch"}, 0))
    with pytest.raises(KeyError, match="unknown swiglu backend"):
        kernel_ops.dispatch(ProbeContext("cpu", {**SMALL["swiglu"], "op": "swiglu", "choice": "xformers"}, 0))


def test_dispatch_body_checks_the_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch probe runs params['choice'], else $DOCTOR_BACKEND_<OP>, through the same judgement."""
    r = kernel_ops.dispatch(ProbeContext("cpu", {**SMALL["rope"], **QUICK, "dtype": "float16", "op": "rope",
                                                 "choice": "torch"}, 0))
    assert passes(r) and r["detail"].startswith("dispatch rope -> torch")
    monkeypatch.setenv("DOCTOR_BACKEND_CROSS_ENTROPY", "torch")
    r = kernel_ops.dispatch(ProbeContext("cpu", {**SMALL["cross_entropy"], **QUICK, "op": "cross_entropy"}, 0))
    assert passes(r) and "cross_entropy -> torch" in r["detail"]


# --- the dispatcher over kernel verdicts ----------------------------------------------------------------


def kv(op: str, backend: str, status: str, t: float = None) -> ProbeResult:  # type: ignore[assignment]
    """A kernel-op verdict."""
    return ProbeResult(id=f"kernels.{op}.{backend}", backend=backend, status=status, time_ms=t, op=op,
                       detail=f"{status}: detail")


def test_dispatcher_picks_per_op_and_never_a_failed_backend() -> None:
    """Each op independently: the fastest that passed; a faster failure never; nothing passing: the reference."""
    verdicts = [kv("rms_norm", "triton", "pass", 0.2), kv("rms_norm", "liger", "pass", 0.4),
                kv("rope", "triton", "wrong-result", 0.01), kv("rope", "liger", "pass", 0.5),
                kv("swiglu", "triton", "crash"), kv("swiglu", "torch-compile", "skipped"),
                kv("cross_entropy", "triton", "pass", 30.0), kv("cross_entropy", "cut-cross-entropy", "pass", 80.0)]
    t = {c.op: c for c in dispatch.table(verdicts, {})}
    assert t["rms_norm"].backend == "triton" and "fastest" in t["rms_norm"].reason
    assert t["rope"].backend == "liger"
    assert t["swiglu"].backend == "torch" and "no backend passed" in t["swiglu"].reason
    assert t["geglu"].backend == "torch"
    assert t["cross_entropy"].backend == "triton"


def test_forcing_a_kernel_backend() -> None:
    """DOCTOR_BACKEND_<OP> forces a backend that passed; one that failed or was skipped is a one-line error."""
    verdicts = {"triton": kv("rms_norm", "triton", "pass", 0.2), "liger": kv("rms_norm", "liger", "wrong-result", 0.1),
                "torch-compile": kv("rms_norm", "torch-compile", "skipped")}
    c = dispatch.choose("rms_norm", verdicts, {"DOCTOR_BACKEND_RMS_NORM": "torch"})
    assert c.backend == "torch" and "forced" in c.reason
    with pytest.raises(DoctorError, match=r"DOCTOR_BACKEND_RMS_NORM=liger: that backend failed its probe \(wrong-result"):
        dispatch.choose("rms_norm", verdicts, {"DOCTOR_BACKEND_RMS_NORM": "liger"})
    with pytest.raises(DoctorError, match="is not available here"):
        dispatch.choose("rms_norm", verdicts, {"DOCTOR_BACKEND_RMS_NORM": "torch-compile"})
    with pytest.raises(DoctorError, match="unknown backend for cross_entropy"):
        dispatch.validate_overrides({"DOCTOR_BACKEND_CROSS_ENTROPY": "unsloth"})
    dispatch.validate_overrides({"DOCTOR_BACKEND_CROSS_ENTROPY": "cut-cross-entropy", "DOCTOR_BACKEND_ROPE": "liger"})


def test_implementation_resolves_every_candidate() -> None:
    """The callable behind each (op, backend) the dispatcher can name, attention included."""
    for op, names in dispatch.OPS.items():
        for b in names:
            assert callable(dispatch.implementation(op, b)), (op, b)
    with pytest.raises(KeyError):
        dispatch.implementation("rope", "sdpa-flash")


# --- isolated, as `doctor probe` runs them ---------------------------------------------------------------


def test_doctor_probe_without_a_gpu_skips_kernel_probes_with_the_reason(tmp_path: Path) -> None:
    """On this CPU-only machine every kernel probe is skipped before any child starts, saying why."""
    from doctor.inventory import gather
    from doctor.probes.session import run_probes

    facts = gather()
    if facts.torch is not None and facts.torch.cuda and facts.hardware.gpus:
        pytest.skip("a GPU is visible: the kernel probes run (test_kernel_probes_on_the_gpu)")
    run = run_probes(facts, only=["kernels", "dispatch.rope"], cache=DoctorCache(tmp_path))
    assert run.results and not run.ran
    for r in run.results:
        assert r.status == "skipped" and r.detail, r
        assert any(why in r.detail for why in ("not a CUDA build", "no NVIDIA GPU", "is not installed")), r


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is needed for the interpreter")
def test_triton_backends_in_a_probe_child_through_the_interpreter(tmp_path: Path) -> None:
    """doctor's Triton backends run in a real probe child (TRITON_INTERPRET=1 for that child), fp32 and fp16,
    and pass; the dispatcher then picks them. Ops whose kernel module has not landed yet are left out."""
    from doctor.inventory import gather
    from doctor.probes.session import run_probes

    ready = [op for op in SMALL if have_kernel(op)]
    specs = [s._replace(id=f"{s.id}.{dt}", needs_cuda=False, group=f"interp-{dt}", timeout=120,
                        params={**SMALL[s.op], **QUICK, "backend": "triton", "dtype": dt})
             for dt in ("float32", "float16") for s in CATALOGUE if s.backend == "triton" and s.op in ready]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = run_probes(gather(), catalogue=specs, environ=env, cache=DoctorCache(tmp_path), jobs=2)
    for r in run.results:
        assert r.status == "pass", (r.id, r.status, r.detail, r.stderr_tail)
    table = {c.op: c.backend for c in dispatch.table(run.results, {})}
    for op in ready:
        assert table[op] == "triton", (op, table)


# --- on the GPU --------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_kernel_probes_on_the_gpu(tmp_path: Path) -> None:
    """Every kernel probe passes or is skipped (a peer not installed) on this GPU; doctor's Triton backend passes;
    the dispatcher's pick per op passed its probe and its dispatch probe passes."""
    from doctor.inventory import gather
    from doctor.probes.session import run_probes

    run = run_probes(gather(), only=["kernels", "dispatch"], cache=DoctorCache(tmp_path), jobs=1)
    verdicts = {r.id: r for r in run.results}
    for r in run.results:
        assert r.status in ("pass", "skipped"), (r.id, r.status, r.detail, r.stderr_tail)
    for op in ops.BACKENDS:
        if have_kernel(op):
            assert verdicts[f"kernels.{op}.triton"].status == "pass", verdicts[f"kernels.{op}.triton"]
            assert verdicts[f"dispatch.{op}"].status == "pass" and verdicts[f"dispatch.{op}"].backend != "torch"
