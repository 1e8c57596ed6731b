"""Item 2 of issue 11: attention probed at a model's training shapes, SDPA's default as a backend, and the
dispatcher never forcing an attention backend that is not clearly faster than SDPA's own choice."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from doctor import dispatch  # noqa: E402
from doctor.backends import attention as attn  # noqa: E402
from doctor.probes.bodies.attention import at_shape  # noqa: E402
from doctor.probes.catalogue import CATALOGUE, attention_at  # noqa: E402
from doctor.probes.spec import ProbeContext  # noqa: E402
from doctor.runtime.choice import AttentionShape, _verdicts_by_op, attention_tag, probe_specs  # noqa: E402
from doctor.verdicts import ProbeResult  # noqa: E402


def verdict(backend: str, ms: float, status: str = "pass", id: str = "") -> ProbeResult:
    """A timed attention verdict."""
    return ProbeResult(id or f"attention.x.{backend}", backend, status, time_ms=ms, op="attention")


def test_default_wins_unless_clearly_beaten() -> None:
    """Within the noise margin SDPA's default is kept; clearly faster forced backends are chosen; a faster
    backend that failed is never chosen; without a default verdict the fastest that passed wins."""
    near = {"sdpa": verdict("sdpa", 10.0), "sdpa-efficient": verdict("sdpa-efficient", 9.8),
            "sdpa-cudnn": verdict("sdpa-cudnn", 12.0)}
    c = dispatch.choose("attention", near, {})
    assert c.backend == "sdpa" and "within 5%" in c.reason
    clear = {**near, "sdpa-cudnn": verdict("sdpa-cudnn", 6.0)}
    assert dispatch.choose("attention", clear, {}).backend == "sdpa-cudnn"
    slower = {"sdpa": verdict("sdpa", 4.0), "sdpa-efficient": verdict("sdpa-efficient", 14.8)}  # the 3.7x case
    assert dispatch.choose("attention", slower, {}).backend == "sdpa"
    failed = {"sdpa": verdict("sdpa", 10.0), "flash-attn": verdict("flash-attn", 1.0, status="wrong-result")}
    assert dispatch.choose("attention", failed, {}).backend == "sdpa"
    no_default = {"sdpa-efficient": verdict("sdpa-efficient", 9.8), "sdpa-cudnn": verdict("sdpa-cudnn", 12.0)}
    assert dispatch.choose("attention", no_default, {}).backend == "sdpa-efficient"
    # the rule is attention's: other ops still take the fastest
    ops = {"triton": ProbeResult("k", "triton", "pass", time_ms=9.9, op="rms_norm"),
           "torch": ProbeResult("k2", "torch", "pass", time_ms=10.0, op="rms_norm")}
    assert dispatch.choose("rms_norm", ops, {}).backend == "triton"


def test_probes_at_training_shapes() -> None:
    """attention_at: one probe per backend, ids naming the shape, bf16 causal with kv heads, ~16k tokens."""
    specs = attention_at(32, 8, 128, 2048)
    assert {s.backend for s in specs} == {"flash-attn", "sdpa", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "xformers"}
    for s in specs:
        assert s.id == f"attention.h32kv8d128s2048.{s.backend}" and s.op == "attention"
        assert s.params["kv_heads"] == 8 and s.params["dtype"] == "bfloat16" and s.params["causal"] is True
        assert s.params["batch"] == 4  # 16k tokens would be 8 x 2048; the reference's scores cap it at 2^29
    assert attention_at(8, 8, 64, 1024)[0].params["batch"] == 16  # 16k tokens
    assert attention_at(32, 8, 128, 16384)[0].params["batch"] == 1
    assert [s.requires for s in specs if s.backend == "flash-attn"] == [("flash-attn",)]
    assert any(s.id == "sdpa.default" and s.backend == "sdpa" for s in CATALOGUE)
    assert attention_tag(AttentionShape(32, 8, 128, 2048)) == "h32kv8d128s2048"


def test_shaped_verdicts_win_over_generic_ones() -> None:
    """The runtime reads attention verdicts at its model's shapes when present, else the generic sdpa.* ones."""
    generic = ProbeResult("sdpa.math", "sdpa-math", "pass", time_ms=1.0, op="attention")
    shaped = verdict("sdpa", 5.0, id="attention.h4kv2d8s64.sdpa")
    other = verdict("sdpa-flash", 1.0, id="attention.h8kv8d64s512.sdpa-flash")
    assert _verdicts_by_op([generic, shaped, other], "h4kv2d8s64")["attention"] == {"sdpa": shaped}
    assert _verdicts_by_op([generic, other], "h4kv2d8s64")["attention"] == {"sdpa-math": generic}


@pytest.mark.parametrize("backend", ["sdpa", "sdpa-math", "torch"])
def test_shape_probe_body_with_gqa_on_cpu(backend: str) -> None:
    """The body at_shape runs a backend with fewer kv heads than query heads (fp32 on the CPU) and passes."""
    ctx = ProbeContext("cpu", {"batch": 1, "heads": 4, "kv_heads": 2, "seq": 32, "head_dim": 16, "causal": True,
                               "dtype": "float32", "backend": backend, "warmup": 0, "iters": 1}, 0)
    r = at_shape(ctx)
    assert r.get("status") != "skipped", r
    assert r["error"] <= r["tolerance"] and "Hkv=2" in r["detail"], r


def test_backends_take_scale_and_gqa() -> None:
    """Every CPU-runnable attention backend: k/v with fewer heads and a non-default scale, as the reference."""
    torch.manual_seed(0)
    q = torch.randn(2, 4, 16, 8)
    k, v = torch.randn(2, 2, 16, 8), torch.randn(2, 2, 16, 8)
    want = attn.reference(q, k, v, True, compute_dtype=torch.float64, scale=0.3)
    for name in ("sdpa", "sdpa-math", "torch"):
        got = attn.get(name)(q, k, v, True, scale=0.3)
        assert (got - want).abs().max().item() < 1e-5, name
    with pytest.raises(ValueError, match="4 query heads cannot share 3"):
        attn.repeat_kv(torch.randn(1, 3, 2, 2), 4)


def test_what_patch_would_probe_on_a_gpu() -> None:
    """With a GPU and no verdicts, patch probes each op's kernels.* backends and attention at the model's shape
    (the generic attention probes when no shape is known: patch_llama_family); never the dispatch.* checks."""
    specs = probe_specs(["rms_norm", "attention"], AttentionShape(4, 2, 8, 256))
    ids = [s.id for s in specs]
    assert {s.op for s in specs} == {"rms_norm", "attention"} and not any(i.startswith("dispatch.") for i in ids)
    assert "kernels.rms_norm.triton" in ids and "attention.h4kv2d8s256.sdpa" in ids
    assert not any(i.startswith("sdpa.") for i in ids)
    generic = [s.id for s in probe_specs(["attention"], None)]
    assert "sdpa.default" in generic and "flash_attn.func" in generic


def test_the_generic_table_ignores_shaped_verdicts() -> None:
    """`doctor probe`'s dispatch table compares the catalogue's shapes only: a verdict timed at a model's shapes
    (bigger, so slower or faster for other reasons) does not enter it."""
    generic = [verdict("sdpa-flash", 2.0, id="sdpa.flash"), verdict("sdpa-efficient", 3.0, id="sdpa.efficient")]
    shaped = verdict("sdpa-efficient", 0.5, id="attention.h4kv2d8s64.sdpa-efficient")
    pick = {c.op: c.backend for c in dispatch.table(generic + [shaped], {})}
    assert pick["attention"] == "sdpa-flash"
