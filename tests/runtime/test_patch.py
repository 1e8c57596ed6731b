"""doctor.runtime.patch on real tiny transformers models (fp32, CPU): the patched model computes what the
unpatched one computes (logits, loss, every gradient), through the torch references and through the Triton
kernels in interpreter mode; skip=, forced backends, cached verdicts, bad inputs, peft, checkpointing."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import doctor.runtime as runtime  # noqa: E402
from doctor.errors import DoctorError  # noqa: E402
from doctor.runtime.patching import backends_of  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.runtime.conftest import build_config, build_model, sample_batch, save_model_dir  # noqa: E402

KERNEL_OPS = ("rms_norm", "rope", "swiglu", "geglu", "cross_entropy")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets an empty doctor cache (no verdicts) and no DOCTOR_BACKEND_* from outside."""
    cache = tmp_path / "doctor-cache"
    monkeypatch.setenv("DOCTOR_CACHE_DIR", str(cache))
    for op in KERNEL_OPS + ("attention",):
        monkeypatch.delenv(f"DOCTOR_BACKEND_{op.upper()}", raising=False)
    yield cache


def run(model: Any, batch: Dict[str, Any], **kw: Any) -> Dict[str, Any]:
    """Forward + backward of the loss; logits, loss and every parameter's gradient by name."""
    model.zero_grad(set_to_none=True)
    out = model(**batch, **kw)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"logits": None if out.logits is None else out.logits.detach(), "loss": out.loss.detach(), "grads": grads}


def assert_same(a: Dict[str, Any], b: Dict[str, Any], tol: float) -> None:
    """Loss, logits (when both have them) and the same set of gradients agree within tol (absolute, fp32)."""
    assert torch.allclose(a["loss"], b["loss"], atol=tol, rtol=0), (a["loss"], b["loss"])
    if a["logits"] is not None and b["logits"] is not None:
        assert (a["logits"] - b["logits"]).abs().max().item() <= tol
    assert set(a["grads"]) == set(b["grads"]) and a["grads"]
    for name in a["grads"]:
        diff = (a["grads"][name] - b["grads"][name]).abs().max().item()
        assert diff <= tol, f"{name}: {diff}"


def patched_pair(arch: str, **kw: Any) -> Any:
    """(unpatched, patched) copies of one tiny model."""
    ref = build_model(arch)
    model = runtime.patch(copy.deepcopy(ref), **kw)
    return ref, model


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma"])
def test_reference_backends_match_unpatched(arch: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No verdicts, no GPU: every op on its torch reference, one line saying so; logits/loss/grads agree."""
    ref, model = patched_pair(arch)
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.startswith("doctor.runtime:")]) == 1, err
    assert "torch reference" in err
    act = "geglu" if arch == "gemma" else "swiglu"
    assert backends_of(model) == {"rms_norm": "torch", "rope": "torch", act: "torch", "cross_entropy": "torch",
                                  "attention": "torch"}
    assert model.config._attn_implementation == "doctor"
    batch = sample_batch()
    assert_same(run(ref, batch), run(model, batch), 1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma"])
def test_triton_kernels_in_interpreter_match_unpatched(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCTOR_BACKEND_<OP>=triton for every kernel op (Triton's CPU interpreter): the same numbers, fp32."""
    pytest.importorskip("triton")
    for op in KERNEL_OPS:
        monkeypatch.setenv(f"DOCTOR_BACKEND_{op.upper()}", "triton")
    ref, model = patched_pair(arch, skip=("attention",))
    act = "geglu" if arch == "gemma" else "swiglu"
    assert backends_of(model) == {"rms_norm": "triton", "rope": "triton", act: "triton", "cross_entropy": "triton"}
    batch = sample_batch(batch=2, seq=8)
    a, b = run(ref, batch), run(model, batch)
    assert_same(a, b, 2e-4)
    # the kernels really ran: bit-identical results everywhere would mean the references did
    assert any((a["grads"][n] != b["grads"][n]).any() for n in a["grads"]) or (a["logits"] != b["logits"]).any()


@pytest.mark.parametrize("attention", ["sdpa", "sdpa-math", "torch"])
def test_attention_backends_match(attention: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forced attention backend (GQA, causal) computes what eager attention does."""
    monkeypatch.setenv("DOCTOR_BACKEND_ATTENTION", attention)
    ref, model = patched_pair("qwen3")
    assert backends_of(model)["attention"] == attention
    calls: list = []  # type: ignore[type-arg]

    def counted(fn: Any) -> Any:
        def attention(*a: Any, **k: Any) -> Any:
            calls.append(1)
            return fn(*a, **k)
        return attention

    for layer in model.model.layers:  # count the backend's calls (the unpadded batch takes it, the padded one not)
        layer.self_attn._doctor_attention = counted(layer.self_attn._doctor_attention)
    batch = sample_batch()
    assert_same(run(ref, batch), run(model, batch), 1e-5)
    assert len(calls) == 2
    padded = sample_batch(pad=2)
    assert_same(run(ref, padded), run(model, padded), 1e-5)
    assert len(calls) == 2  # a padding mask: transformers' SDPA with the mask


def test_padding_mask_sliding_window_and_generation() -> None:
    """Right padding, a Mistral window shorter than the sequence (SDPA with the mask), and decoding with a cache."""
    for arch, over in (("llama", {}), ("mistral", {"sliding_window": 4}), ("qwen2", {"use_sliding_window": True,
                                                                                       "sliding_window": 4})):
        ref = build_model(arch, **over)
        model = runtime.patch(copy.deepcopy(ref))
        assert set(backends_of(model)) == {"rms_norm", "rope", "swiglu", "cross_entropy", "attention"}
        layer = model.model.layers[0]
        assert all("forward" in m.__dict__ for m in (model.model.norm, layer.mlp, layer.self_attn, model))
        batch = sample_batch(seq=10, pad=3)
        assert_same(run(ref, batch), run(model, batch), 1e-5)
    ids = sample_batch(batch=1, seq=5)["input_ids"]
    a = ref.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=1)
    b = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert a.tolist() == b.tolist()


def test_tied_embeddings() -> None:
    """Gemma as released ties the LM head to the embeddings: the fused loss's weight gradient reaches them."""
    ref = build_model("gemma", tie_word_embeddings=True)
    assert ref.lm_head.weight is ref.model.embed_tokens.weight
    model = runtime.patch(copy.deepcopy(ref))
    batch = sample_batch()
    assert_same(run(ref, batch), run(model, batch), 1e-5)


def test_loss_conventions() -> None:
    """num_items_in_batch (gradient accumulation), shift_labels as given, ignored labels, logits only when asked."""
    ref, model = patched_pair("llama")
    batch = sample_batch(pad=4)
    n = torch.tensor(9)
    assert_same(run(ref, batch, num_items_in_batch=n), run(model, batch, num_items_in_batch=n), 1e-5)
    model.train()
    out = model(**batch)
    assert out.logits is None and out.loss is not None  # training with labels: the logits are never built
    assert model(**batch, skip_logits=False).logits.shape == (2, 12, model.config.vocab_size)
    model.eval()
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    assert torch.allclose(model(**no_labels).logits, ref(**no_labels).logits, atol=1e-5)
    assert model(**no_labels).loss is None
    tup = model(**batch, return_dict=False)
    assert isinstance(tup, tuple) and torch.allclose(tup[0], ref(**batch).loss, atol=1e-5)


def test_skip_leaves_ops_untouched() -> None:
    """skip=("attention", "rms_norm"): eager attention and HF's RMSNorm stay; the rest is patched."""
    model = runtime.patch(build_model("llama"), skip=("attention", "rms_norm"))
    assert set(backends_of(model)) == {"rope", "swiglu", "cross_entropy"}
    assert model.config._attn_implementation == "eager"
    norm = model.model.norm
    assert "forward" not in norm.__dict__ and "forward" in model.model.layers[0].mlp.__dict__
    only = runtime.patch(build_model("llama"), skip="cross_entropy")  # a bare string is one name
    assert "cross_entropy" not in backends_of(only) and "forward" not in only.__dict__


def _store_verdicts(results: list) -> None:  # type: ignore[type-arg]
    """Write verdicts for this environment's fingerprint into the (test's) doctor cache, as `doctor probe` does."""
    import os

    from doctor.inventory import gather
    from doctor.probes import store
    from doctor.probes.catalogue import CATALOGUE_VERSION
    from doctor.probes.fingerprint import fingerprint, fingerprint_inputs

    from doctor.envvars import CUDA_VISIBLE_DEVICES

    facts = gather(environ=dict(os.environ))
    gpu = os.environ.get(CUDA_VISIBLE_DEVICES)
    store.save(fingerprint(facts, gpu, CATALOGUE_VERSION), results, fingerprint_inputs(facts, gpu, CATALOGUE_VERSION))


def test_forced_backend_that_failed_its_probe_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached failing verdict for triton RMSNorm + DOCTOR_BACKEND_RMS_NORM=triton: DoctorError, nothing patched."""
    from doctor.verdicts import ProbeResult

    _store_verdicts([ProbeResult("kernels.rms_norm.triton", "triton", "wrong-result", error=0.3, tolerance=0.01,
                                 detail="dx off", op="rms_norm")])
    monkeypatch.setenv("DOCTOR_BACKEND_RMS_NORM", "triton")
    model = build_model("llama")
    with pytest.raises(DoctorError, match="DOCTOR_BACKEND_RMS_NORM=triton.*failed its probe"):
        runtime.patch(model)
    assert backends_of(model) == {} and "forward" not in model.model.norm.__dict__


def test_cached_verdicts_decide(capsys: pytest.CaptureFixture[str]) -> None:
    """Verdicts cached for this environment pick the backend (a passing sdpa-math beats the reference); an op
    whose only probe failed keeps the reference."""
    from doctor.verdicts import ProbeResult

    _store_verdicts([ProbeResult("sdpa.math", "sdpa-math", "pass", time_ms=2.0, op="attention"),
                     ProbeResult("kernels.swiglu.triton", "triton", "error", detail="boom", op="swiglu")])
    model = runtime.patch(build_model("llama"))
    assert backends_of(model)["attention"] == "sdpa-math"
    assert backends_of(model)["swiglu"] == "torch"
    assert "attention" not in capsys.readouterr().err.split("verdicts for", 1)[1].split("in this environment")[0]


def test_bad_inputs() -> None:
    """Not a causal LM, an unsupported architecture (named), an unknown skip name: one clear DoctorError each."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaModel

    with pytest.raises(DoctorError, match="LlamaModel is not a causal LM"):
        runtime.patch(LlamaModel(build_config("llama")))
    with pytest.raises(DoctorError, match="Linear is not a causal LM"):
        runtime.patch(torch.nn.Linear(2, 2))
    with pytest.raises(DoctorError, match="takes a transformers causal LM, not str"):
        runtime.patch("meta-llama/Llama-3-8B")  # type: ignore[type-var]
    gemma2 = Gemma2ForCausalLM(Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    with pytest.raises(DoctorError, match="unsupported architecture Gemma2ForCausalLM: Gemma 2 keeps its own"):
        runtime.patch(gemma2)
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    gemma3 = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    with pytest.raises(DoctorError, match="unsupported architecture Gemma3ForCausalLM: Gemma 3 keeps its own"):
        runtime.patch(gemma3)
    with pytest.raises(DoctorError, match="unknown op 'flash' in skip"):
        runtime.patch(build_model("llama"), skip=("flash",))


def test_forced_backend_typo_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCTOR_BACKEND_ROPE=trition names no backend: DoctorError listing the real ones."""
    monkeypatch.setenv("DOCTOR_BACKEND_ROPE", "trition")
    with pytest.raises(DoctorError, match="DOCTOR_BACKEND_ROPE=trition: unknown backend for rope"):
        runtime.patch(build_model("llama"))


def test_forced_op_names_and_the_stand_in_note(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """DOCTOR_BACKEND_RMSNORM (no such op) is an error, not ignored; forced ops are not named as using the references."""
    monkeypatch.setenv("DOCTOR_BACKEND_RMSNORM", "triton")
    with pytest.raises(DoctorError, match="DOCTOR_BACKEND_RMSNORM=triton: no op called 'rmsnorm'"):
        runtime.patch(build_model("llama"))
    monkeypatch.delenv("DOCTOR_BACKEND_RMSNORM")
    monkeypatch.setenv("DOCTOR_BACKEND_RMS_NORM", "torch")
    model = runtime.patch(build_model("llama"), skip=("attention",))
    assert backends_of(model)["rms_norm"] == "torch"
    note = capsys.readouterr().err
    assert "no probe verdicts for rope, swiglu, cross_entropy in this environment" in note, note


@pytest.mark.parametrize("var, backend, package", [("DOCTOR_BACKEND_CROSS_ENTROPY", "liger", "liger_kernel"),
                                                    ("DOCTOR_BACKEND_ATTENTION", "xformers", "xformers")])
def test_forced_backend_that_is_not_installed_fails_at_patch_time(monkeypatch: pytest.MonkeyPatch, var: str,
                                                                   backend: str, package: str) -> None:
    """Never probed here and its package absent: DoctorError from patch(), not an ImportError at the first forward."""
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    monkeypatch.setenv(var, backend)
    with pytest.raises(DoctorError, match=f"{var}={backend}: .* is not installed here"):
        runtime.patch(build_model("llama"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="Triton has a driver on a CUDA machine")
def test_forced_triton_without_a_gpu_or_the_interpreter_fails_at_patch_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton with no CUDA GPU and TRITON_INTERPRET unset: DoctorError from patch() (it was Triton's
    "0 active drivers" RuntimeError at the first forward)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("DOCTOR_BACKEND_RMS_NORM", "triton")
    with pytest.raises(DoctorError, match="DOCTOR_BACKEND_RMS_NORM=triton: Triton kernels need a CUDA GPU here"):
        runtime.patch(build_model("llama"))


@pytest.mark.parametrize("seq_len", [0, -5, "2048", 2.5, True])
def test_bad_seq_len_and_skip_none(seq_len: Any) -> None:
    """seq_len sizes the attention probe: anything but a positive int is an error (0 was silently the default)."""
    with pytest.raises(DoctorError, match="seq_len must be a positive integer"):
        runtime.patch(build_model("llama"), seq_len=seq_len)
    if seq_len == 0:  # skip=None means skip nothing (it was a TypeError)
        assert set(backends_of(runtime.patch(build_model("llama"), skip=None))) >= {"rms_norm", "attention"}


def test_patch_twice_and_kept_attention_choices() -> None:
    """Patching twice is patching once; a user's attention implementation other than sdpa/eager is kept."""
    ref = build_model("llama", attn_implementation="sdpa")
    model = runtime.patch(runtime.patch(copy.deepcopy(ref)))
    assert model.config._attn_implementation == "doctor"
    batch = sample_batch()
    assert_same(run(ref, batch), run(model, batch), 1e-5)
    narrower = runtime.patch(model, skip=("attention", "rope"))  # a second call means its own skip=
    assert set(backends_of(narrower)) == {"rms_norm", "swiglu", "cross_entropy"}
    assert narrower.config._attn_implementation == "sdpa" and "forward" not in model.model.layers[0].self_attn.__dict__
    assert_same(run(ref, batch), run(narrower, batch), 1e-5)
    compiled = torch.compile(build_model("llama"))  # patched under its wrapper (not run here: compiling is slow)
    assert runtime.patch(compiled) is compiled and backends_of(compiled)["rms_norm"] == "torch"
    flex = runtime.patch(build_model("llama", attn_implementation="flex_attention"))
    assert flex.config._attn_implementation == "flex_attention" and "attention" not in backends_of(flex)


def test_class_level_patch_and_is_active(tmp_path: Path) -> None:
    """patch_llama_family(): models built afterwards are patched (and match); is_active() tracks it."""
    from doctor.runtime.patching import unpatch_classes

    assert not runtime.is_active()
    ref = build_model("gemma")
    runtime.patch_llama_family()
    try:
        assert runtime.is_active()
        model = build_model("gemma")  # the same seed: the same weights as ref
        assert model.config._attn_implementation == "doctor"
        assert type(model).forward.__module__ == "doctor.runtime.modules"
        batch = sample_batch(pad=2)
        assert_same(run(ref, batch), run(model, batch), 1e-5)
        again = runtime.patch(build_model("llama"))  # instance patching on top of class patching
        assert backends_of(again)["rope"] == "torch"
        from transformers import AutoModelForCausalLM

        save_model_dir(ref, tmp_path / "gemma")  # from_pretrained builds through the patched __init__ too
        loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "gemma"))
        assert loaded.config._attn_implementation == "doctor"
        assert torch.allclose(loaded(**batch).loss, ref(**batch).loss, atol=1e-5)
    finally:
        unpatch_classes()
    assert not runtime.is_active()
    assert type(build_model("llama")).forward.__module__ != "doctor.runtime.modules"


def test_gradient_checkpointing() -> None:
    """Training mode with gradient checkpointing: the recomputed patched forward gives the same gradients."""
    ref, model = patched_pair("qwen3")
    for m in (ref, model):
        if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.2x: the newer name
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        assert any(getattr(mod, "gradient_checkpointing", False) for mod in m.modules())
        m.train()
    batch = sample_batch()
    assert_same(run(ref, batch), run(model, batch), 1e-5)


def test_peft_lora_adapter_loads_in_plain_peft(tmp_path: Path) -> None:
    """LoRA on a patched model trains; the adapter it saves loads into plain peft on an unpatched model."""
    from peft import LoraConfig, PeftModel, get_peft_model

    base = build_model("llama")
    plain_base = copy.deepcopy(base)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    runtime.patch(lora)
    assert backends_of(lora)["cross_entropy"] == "torch"
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    batch = sample_batch()
    lora.train()
    for _ in range(2):
        opt.zero_grad()
        lora(**batch).loss.backward()
        opt.step()
    lora.eval()
    lora.save_pretrained(str(tmp_path / "adapter"))
    base.save_pretrained(str(tmp_path / "full"))  # the patched model's own checkpoint: nothing of the doctor in it
    assert "doctor" not in (tmp_path / "full" / "config.json").read_text()
    loaded = PeftModel.from_pretrained(plain_base, str(tmp_path / "adapter"))
    loaded.eval()
    assert "forward" not in loaded.get_base_model().__dict__  # plain peft, nothing of the doctor
    a, b = lora(**batch), loaded(**batch)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.allclose(a.loss, b.loss, atol=1e-5)


def test_trainer_with_gradient_accumulation(tmp_path: Path) -> None:
    """transformers' Trainer (2 steps x 2 accumulated micro-batches): the patched model's losses are HF's."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from transformers import Trainer, TrainingArguments

    rows = [{k: v[0].tolist() for k, v in sample_batch(batch=1, seq=10, seed=s, pad=s % 3).items()} for s in range(8)]
    losses = []
    for patched in (False, True):
        model = build_model("llama")
        if patched:
            runtime.patch(model)
        args = TrainingArguments(output_dir=str(tmp_path / f"out{patched}"), per_device_train_batch_size=2,
                                 gradient_accumulation_steps=2, max_steps=2, learning_rate=1e-1, logging_steps=1,
                                 optim="sgd",  # not Adam: its first step turns 1e-9 gradient noise into +-lr
                                 report_to=[], save_strategy="no", use_cpu=True, seed=0, data_seed=0,
                                 dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows))
        trainer.train()
        losses.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    assert len(losses[0]) == 2 and losses[0][1] != losses[0][0]  # it trained
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_importing_the_runtime_imports_nothing_heavy() -> None:
    """`import doctor.runtime` (and is_active()) loads neither torch nor transformers."""
    code = ("import sys, doctor.runtime as r; assert not r.is_active(); "
            "print(sorted(m for m in ('torch', 'transformers', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_trl_sft_trainer(tmp_path: Path) -> None:
    """trl's SFTTrainer on a patched model trains with the patched backbone (trl >= 1.x puts its own fused LM
    head on the model, so the loss is trl's there); the first logged loss is the unpatched run's."""
    pytest.importorskip("trl")
    from datasets import Dataset  # type: ignore[import-untyped]
    from trl import SFTConfig, SFTTrainer

    from tests.runtime.conftest import WORDS, build_tokenizer

    rows = [{"text": " ".join(WORDS[(i * 7 + j) % 60] for j in range(6 + i % 5))} for i in range(8)]
    first = []
    for patched in (False, True):
        model = build_model("llama")
        if patched:
            runtime.patch(model)
        args = SFTConfig(output_dir=str(tmp_path / f"sft{patched}"), per_device_train_batch_size=2,
                         gradient_accumulation_steps=2, max_steps=1, learning_rate=1e-2, logging_steps=1,
                         report_to=[], save_strategy="no", use_cpu=True, seed=0, max_length=16, disable_tqdm=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=build_tokenizer())
        trainer.train()
        first.append([h["loss"] for h in trainer.state.log_history if "loss" in h][0])
        if patched:
            assert backends_of(model)["attention"] == "torch"
            assert "forward" in model.model.layers[0].mlp.__dict__  # still the patched MLP after trl's changes
    assert first[0] == pytest.approx(first[1], abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_bf16_model_and_autocast_stay_within_a_bf16_unit(arch: str) -> None:
    """A bf16 model, and an fp32 model under CPU autocast (bf16 q/k with fp32 cos/sin: transformers' RoPE there):
    logits within 2 bf16 units of their size, loss within 1e-3 relative (the README's expected difference)."""
    ref32 = build_model(arch)
    batch = sample_batch()
    for model_ref, autocast in ((copy.deepcopy(ref32).to(torch.bfloat16), False), (ref32, True)):
        model = runtime.patch(copy.deepcopy(model_ref))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            a, b = model_ref(**batch), model(**batch)
        assert a.logits.dtype == b.logits.dtype == torch.bfloat16
        unit = a.logits.float().abs().max().item() * 2 ** -8
        assert (a.logits.float() - b.logits.float()).abs().max().item() <= 2 * unit
        assert abs(a.loss.item() - b.loss.item()) <= 1e-3 * abs(a.loss.item())


def test_mixed_dtype_rms_norm_runs_transformers_forward() -> None:
    """A norm whose weight dtype differs from its input's runs transformers' forward (its type promotion)."""
    model = runtime.patch(build_model("llama"))
    norm = model.model.norm
    x = torch.randn(2, 3, 32, dtype=torch.float64)
    got = norm(x)
    want = type(norm).forward(norm, x)  # the class is not patched: transformers' own forward
    assert got.dtype == want.dtype == torch.float64 and torch.equal(got, want)
    assert "forward" in norm.__dict__


def test_lora_on_the_lm_head_keeps_the_plain_loss() -> None:
    """peft's LoRA layer on lm_head (its class is also named Linear): the loss goes through the logits with the
    adapter's delta, as unpatched (a fused loss on the frozen weight would silently drop the delta)."""
    from peft import LoraConfig, get_peft_model

    def lora(model: Any) -> Any:
        out = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head", "q_proj"],
                                               lora_dropout=0.0, init_lora_weights=False))  # a non-zero delta
        out.train()
        return out

    ref = lora(build_model("llama"))
    model = lora(build_model("llama"))
    runtime.patch(model)
    assert type(model.get_base_model().lm_head).__name__ == "Linear"  # peft's, not torch's
    batch = sample_batch()
    a, b = run(ref, batch), run(model, batch)
    assert_same(a, b, 1e-5)
    assert b["logits"] is not None  # the plain path builds them


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_bf16_on_the_gpu_through_the_kernels(arch: str) -> None:
    """On a CUDA GPU: the Triton kernels and SDPA's default attention in bf16, against the unpatched bf16 model
    (verdicts stored as passing, as the kernels' own GPU tests and probes prove them, so no probe runs here)."""
    from doctor.probes.catalogue import attention_at
    from doctor.runtime.patching import attention_shape
    from doctor.verdicts import ProbeResult

    ref = build_model(arch).to("cuda", torch.bfloat16)
    shape = attention_shape(ref.config, 64)
    _store_verdicts([ProbeResult(f"kernels.{op}.triton", "triton", "pass", time_ms=1.0, op=op) for op in KERNEL_OPS]
                    + [ProbeResult(s.id, s.backend, "pass", time_ms=1.0, op="attention")
                       for s in attention_at(*shape) if s.backend == "sdpa"])
    model = runtime.patch(copy.deepcopy(ref), seq_len=64)
    act = "geglu" if arch == "gemma" else "swiglu"
    assert backends_of(model) == {"rms_norm": "triton", "rope": "triton", act: "triton", "cross_entropy": "triton",
                                  "attention": "sdpa"}
    batch = {k: v.cuda() for k, v in sample_batch(batch=2, seq=64).items()}
    a, b = ref(**batch), model(**batch)
    unit = a.logits.float().abs().max().item() * 2 ** -8
    assert (a.logits.float() - b.logits.float()).abs().max().item() <= 4 * unit
    assert abs(a.loss.item() - b.loss.item()) <= 2e-3 * abs(a.loss.item())
