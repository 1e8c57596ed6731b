"""The loop's pieces in process: gradient accumulation normalised by target tokens, the schedule, the data plan."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, List

import pytest
import torch

from doctor.errors import DoctorError
from doctor.runtime.train import loop
from doctor.runtime.train.config import load_config
from doctor.runtime.train.data import load_examples
from tests.runtime.train.conftest import write_config


def _setup(tmp_path: Path, model_dir: Path, dataset: Path, packing: bool = True, **train: Any) -> Any:
    """Config, LoRA model (B non-zero, so the adapter shapes the loss), tokenizer and data plan."""
    cfg = load_config(write_config(tmp_path / "c.toml", model_dir, dataset, tmp_path / "out",
                                   **train))
    cfg = replace(cfg, data=replace(cfg.data, packing=packing))
    torch.manual_seed(0)
    model, _ = loop.build_model(cfg, torch.float32, "sdpa")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    tok = loop._load_tokenizer(cfg.model)
    plan = loop.DataPlan(load_examples(Path(cfg.data.path), tok, cfg.data.seq_len), cfg)
    return cfg, model, tok, plan


def _grads(model: Any) -> List[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("packing", [True, False])
def test_two_micro_batches_accumulated_equal_one_batch_twice_the_size(tmp_path: Path, model_dir: Path, dataset: Path,
                                                                     packing: bool) -> None:
    """Loss and gradients of batch 2 x grad_accum 2 == batch 4 x grad_accum 1 (fp32): the token count, not the
    micro-batch count, normalises the loss (micro-batches here hold different numbers of target tokens)."""
    results = []
    for bs, accum in ((2, 2), (4, 1)):
        cfg, model, tok, plan = _setup(tmp_path, model_dir, dataset, packing, batch_size=bs, grad_accum=accum)
        batches = plan.step_batches(1, tok.pad_token_id)
        assert len(batches) == accum
        if accum == 2:
            assert batches[0].targets != batches[1].targets  # a plain mean of means would be wrong here
        loss = loop.accumulate(model, batches, torch.device("cpu"), "sdpa")
        results.append((loss, _grads(model), sum(b.targets for b in batches)))
    (l2, g2, n2), (l4, g4, n4) = results
    assert n2 == n4
    assert l2 == pytest.approx(l4, rel=1e-5)
    for a, b in zip(g2, g4):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_data_plan_is_a_function_of_seed_and_step(tmp_path: Path, model_dir: Path, dataset: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.toml", model_dir, dataset, tmp_path / "o", steps=0, epochs=2,
                                   batch_size=2, grad_accum=1))
    tok = loop._load_tokenizer(cfg.model)
    examples = load_examples(Path(cfg.data.path), tok, cfg.data.seq_len)
    a, b = loop.DataPlan(examples, cfg), loop.DataPlan(examples, cfg)
    assert a.total_steps == 2 * a.per_epoch  # epochs -> steps
    ids = [[bt.input_ids.tolist() for bt in a.step_batches(s, 0)] for s in range(1, a.total_steps + 1)]
    assert ids == [[bt.input_ids.tolist() for bt in b.step_batches(s, 0)] for s in range(1, b.total_steps + 1)]
    # every example once per epoch
    per_epoch = sum(sum(bt.examples for bt in a.step_batches(s, 0)) for s in range(1, a.per_epoch + 1))
    assert per_epoch == len(examples)
    # epochs = 1 with more accumulation than the epoch has micro-batches: one pass, not grad_accum passes
    one = replace(cfg, train=replace(cfg.train, epochs=1.0, grad_accum=a.per_epoch + 3))
    plan = loop.DataPlan(examples, one)
    assert plan.total_steps == 1 and sum(bt.examples for bt in plan.step_batches(1, 0)) == len(examples)


def test_schedules() -> None:
    cos = loop._schedule("cosine", 2, 10)
    assert [round(cos(s), 3) for s in (0, 1, 2, 6, 10)] == [0.333, 0.667, 1.0, 0.5, 0.0]
    lin = loop._schedule("linear", 0, 4)
    assert [lin(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert loop._schedule("constant", 0, 4)(3) == 1.0


def test_lora_targets_the_model_lacks_are_one_line(tmp_path: Path, model_dir: Path, dataset: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.toml", model_dir, dataset, tmp_path / "o"))
    cfg = replace(cfg, lora=replace(cfg.lora, targets=("query_key_value",)))
    with pytest.raises(DoctorError, match=r"c.toml: \[lora\] targets: .*query_key_value"):
        loop.build_model(cfg, torch.float32, "sdpa")


def _cfg(tmp_path: Path, model_dir: Path, dataset: Path, **train: Any) -> Any:
    return load_config(write_config(tmp_path / "c.toml", model_dir, dataset, tmp_path / "out", **train))


def test_a_loss_that_stops_being_finite_ends_the_run_in_one_line(tmp_path: Path, model_dir: Path, dataset: Path) -> None:
    cfg = _cfg(tmp_path, model_dir, dataset, lr=1e9, max_grad_norm=0.0, steps=6, grad_accum=1)
    lines: List[str] = []
    with pytest.raises(DoctorError, match=r"step \d: the loss is (nan|inf): lower \[train\] lr"):
        loop.train(cfg, log=lines.append)


def test_bf16_on_cpu_trains(tmp_path: Path, model_dir: Path, dataset: Path) -> None:
    """precision = "bf16" where the machine allows it: the model in bf16, the adapter in fp32, autocast, the mask in bf16."""
    cfg = _cfg(tmp_path, model_dir, dataset, precision="bf16", steps=2)
    summary = loop.train(cfg, log=lambda line: None)
    assert summary.precision == "bf16" and summary.complete and all(map(torch.isfinite, torch.tensor(summary.losses)))


@pytest.mark.parametrize("state, message", [
    ("{not json", "unreadable checkpoint (JSONDecodeError"),
    ('{"step": 2}', "unreadable checkpoint (KeyError"),
])
def test_a_broken_checkpoint_is_one_line(tmp_path: Path, model_dir: Path, dataset: Path, state: str,
                                         message: str) -> None:
    cfg = _cfg(tmp_path, model_dir, dataset)
    ckpt = tmp_path / "out" / loop.CHECKPOINTS / "step-000002"
    ckpt.mkdir(parents=True)
    (ckpt / loop.STATE).write_text(state, encoding="utf-8")
    with pytest.raises(DoctorError, match=re.escape(message)):
        loop.train(cfg, log=lambda line: None)


def test_model_folders_without_config_or_tokenizer(tmp_path: Path, model_dir: Path, dataset: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DoctorError, match=r"model: .*/empty: no config.json \(not a Hugging Face model folder\)"):
        loop.train(_cfg(tmp_path, empty, dataset), log=lambda line: None)
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(DoctorError, match=r"no_tok: cannot load its tokenizer"):
        loop.train(_cfg(tmp_path, no_tok, dataset), log=lambda line: None)


def test_an_output_dir_that_cannot_be_a_folder_is_one_line_before_the_model_loads(tmp_path: Path, model_dir: Path,
                                                                                  dataset: Path) -> None:
    """Found before anything heavy (it used to be an internal error, exit 4, after the model had loaded)."""
    taken = tmp_path / "taken"
    taken.write_text("a file", encoding="utf-8")
    for out, message in ((taken, f"output_dir: {taken} is a file (name a folder)"),
                         (taken / "run", f"output_dir: {taken / 'run'} cannot be created: {taken} is a file")):
        cfg = replace(_cfg(tmp_path, model_dir, dataset), output_dir=out)
        with pytest.raises(DoctorError, match=re.escape(message)):
            loop.train(cfg, log=lambda line: pytest.fail(f"the run started: {line}"))
    with pytest.raises(DoctorError, match=r"\[data\] path: .*: a folder, not a JSONL file"):
        loop.train(_cfg(tmp_path, model_dir, tmp_path), log=lambda line: None)


def test_patch_on_an_architecture_it_does_not_take_is_one_line_before_the_model_loads(tmp_path: Path, dataset: Path) -> None:
    """An OLMo folder with patch = true (the default): refused naming the way out, before any weights load."""
    olmo = tmp_path / "olmo"
    olmo.mkdir()
    (olmo / "config.json").write_text('{"architectures": ["OlmoForCausalLM"], "model_type": "olmo"}', encoding="utf-8")
    with pytest.raises(DoctorError, match=r"c.toml: patch: .*olmo is a OlmoForCausalLM \(not of the Llama family\); "
                                          r"doctor.runtime.patch takes LlamaForCausalLM.*: set patch = false"):
        loop.train(_cfg(tmp_path, olmo, dataset), log=lambda line: pytest.fail(f"the run started: {line}"))
    with pytest.raises(DoctorError) as e:  # patch = false: past this check (it fails later: the folder has no weights)
        loop.train(replace(_cfg(tmp_path, olmo, dataset), patch=False), log=lambda line: None)
    assert "patch:" not in str(e.value)


def test_the_progress_bar_shows_loss_and_tokens_per_second_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal (stdout.isatty) the bar shows step, loss and tok/s; off a terminal it prints nothing."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    bar = loop._Progress(True, total=4, start=1, color=False)
    bar.update(loop.StepRecord(step=2, loss=4.25, lr=1e-3, tokens=300, seconds=0.5))
    bar.close()
    shown = screen.getvalue()
    assert "2/4" in shown and "loss 4.2500" in shown and "600 tok/s" in shown, shown
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stdout", pipe)
    quiet = loop._Progress(True, total=4, start=0)
    quiet.update(loop.StepRecord(step=1, loss=4.0, lr=1e-3, tokens=10, seconds=1.0))
    quiet.close()
    assert pipe.getvalue() == ""


def test_examples_past_the_models_positions_get_a_warning_line() -> None:
    from types import SimpleNamespace

    from doctor.runtime.train.data import Example

    config = SimpleNamespace(max_position_embeddings=8)
    short, long = Example(tuple(range(8)), tuple(range(8)), 1), Example(tuple(range(12)), tuple(range(12)), 2)
    assert loop.positions_warning([short], config, seq_len=16) == ""
    assert loop.positions_warning([short, long], config, seq_len=16) == (
        "warning: examples of up to 12 tokens, past the model's 8 positions (max_position_embeddings): "
        "set [data] seq_len = 8 to cut them there (now 16)")
