"""`[train] parallel = "fsdp"` (torch FSDP2 over 2 gloo ranks on CPU, fp32, a tiny Llama, real CLI subprocesses):
every step's loss is the one-process run's, with gradient checkpointing on and ranks holding unequal shares
(or none) of a step, and with a bf16 base under fp32 LoRA weights; the adapter rank 0 saves loads in plain peft
and matches; a stopped run resumes; Ctrl-C
says why no checkpoint of the sharded adapter is written; bad values are one line. Also the once-per-node rule:
with 2 ranks the attention probe runs once (local rank 0) and both ranks refuse with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.conftest import REPO
from tests.runtime.train.conftest import (alive, doctor_train, interrupted_train, last_error_line, read_summary,
                                          train_env, trained_by_1_and_2, write_config)

STEPS = 4
# grad_accum 3 over 2 ranks: rank 0 runs micro-batches 0 and 2 of a step, rank 1 micro-batch 1 and a stand-in;
# max_grad_norm low enough that clipping acts: the norm must be the whole adapter's, not a shard's
SETTINGS: Dict[str, Any] = {"steps": STEPS, "batch_size": 1, "grad_accum": 3, "gradient_checkpointing": True,
                            "parallel": "fsdp", "max_grad_norm": 0.05}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, dataset: Path) -> Dict[int, Any]:
    """The same config (parallel = "fsdp") trained by 1 and by 2 processes: {nproc: (output_dir, completed process)}."""
    return trained_by_1_and_2(tmp_path_factory, model_dir, dataset, "fsdp", SETTINGS, timeout=240)


def test_fsdp_over_two_ranks_gives_the_one_process_loss_at_every_step(runs: Dict[int, Any]) -> None:
    one, two = read_summary(runs[1][0]), read_summary(runs[2][0])
    assert len(two["losses"]) == STEPS
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["tokens"] == one["tokens"] and two["world_size"] == 2
    assert two["trainable_parameters"] == one["trainable_parameters"]  # counted whole, not per shard
    assert "model sharded over 2 ranks (FSDP)" in runs[2][1].stdout
    assert runs[2][1].stdout.count("done: step") == 1  # rank 0's voice alone


def test_fsdp_with_one_process_says_there_is_nothing_to_shard(runs: Dict[int, Any]) -> None:
    out = runs[1][1].stdout
    assert "parallel: fsdp with one process: nothing to shard, the whole model trains here" in out
    assert "sharded over" not in out


def test_the_adapter_loads_in_plain_peft_and_matches_one_process(runs: Dict[int, Any], model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    one, two = runs[1][0] / "adapter", runs[2][0] / "adapter"
    a = load_file(str(one / "adapter_model.safetensors"))
    b = load_file(str(two / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(".default." not in k for k in b)  # peft's saved names
    for k in a:  # whole tensors (not rank 0's shard), the same updates
        assert b[k].shape == a[k].shape, k
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    ids = torch.tensor([[5, 12, 30, 41, 7, 9]])
    logits = []
    for adapter in (one, two):
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(adapter)).eval()
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-5)


def test_a_stopped_fsdp_run_resumes_in_either_mode_and_an_idle_rank_takes_part(tmp_path: Path, model_dir: Path,
                                                                               dataset: Path) -> None:
    """grad_accum 1 over 2 ranks: rank 1 has no micro-batch in any step and runs only the zero-weight stand-in.
    Step 1's checkpoint is gathered from the shards, one process continues it to step 2, and 2 ranks scatter
    that one-process checkpoint into shards for step 3: the losses are one uninterrupted process's."""
    settings = {**SETTINGS, "grad_accum": 1, "steps": 3}
    ref = write_config(tmp_path / "one.toml", model_dir, dataset, tmp_path / "one", **settings)
    res = doctor_train(str(ref), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = write_config(tmp_path / "two.toml", model_dir, dataset, tmp_path / "two", **settings)
    legs = [("--nproc", "2", "--stop-after", "1"), ("--stop-after", "2"), ("--nproc", "2")]
    for i, leg in enumerate(legs):
        run = doctor_train(str(cfg), *leg, timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        assert i == 0 or f"(step {i} of 3)" in run.stdout
        assert ("sharded over 2 ranks" in run.stdout) == ("--nproc" in leg)
    assert read_summary(tmp_path / "two")["losses"] == pytest.approx(read_summary(tmp_path / "one")["losses"], rel=1e-5)


def test_a_bf16_base_with_fp32_lora_shards_and_trains_as_one_process(tmp_path: Path, model_dir: Path,
                                                                      dataset: Path) -> None:
    """Mixed dtypes in one FSDP unit (peft keeps LoRA in fp32 over a bf16 base): FSDP2 gathers them as they are."""
    from safetensors.torch import load_file

    settings = {**SETTINGS, "steps": 2, "precision": "bf16"}
    losses = []
    for n in (1, 2):
        cfg = write_config(tmp_path / f"{n}.toml", model_dir, dataset, tmp_path / f"out{n}", **settings)
        res = doctor_train(str(cfg), "--nproc", str(n), timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        losses.append(read_summary(tmp_path / f"out{n}")["losses"])
        saved = load_file(str(tmp_path / f"out{n}" / "adapter" / "adapter_model.safetensors"))
        assert {str(t.dtype) for t in saved.values()} == {"torch.float32"}
    assert "device: cpu, bf16" in res.stdout and "sharded over 2 ranks" in res.stdout
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)  # bf16 autocast: the same ops, so close (equal here)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc (Linux)")
def test_ctrl_c_under_fsdp_says_why_there_is_no_new_checkpoint(tmp_path: Path, model_dir: Path,
                                                               dataset: Path) -> None:
    """Ctrl-C reaches rank 0 alone, and gathering the sharded adapter needs every rank: one line says so, exit 130."""
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out",
                       **{**SETTINGS, "steps": 500, "gradient_checkpointing": False})
    code, out, err, kids = interrupted_train(str(cfg), "--nproc", "2", timeout=90)
    assert code == 130, err
    assert "interrupted: the sharded (FSDP) adapter cannot be gathered by rank 0 alone: no checkpoint of step" in out
    assert "none was saved yet (set [train] save_every); run again to continue" in out
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert len(kids) == 2 and not [k for k in kids if alive(k)]


@pytest.mark.parametrize("value, line", [
    ('"zero3"', "doctor: error: train.toml: [train] parallel: unknown mode 'zero3' (choose from ddp, fsdp)"),
    ("true", "doctor: error: train.toml: [train] parallel: expected a string, got a boolean True"),
])
def test_a_bad_parallel_is_one_line_and_exit_3(tmp_path: Path, model_dir: Path, dataset: Path, value: str,
                                               line: str) -> None:
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out")
    cfg.write_text(cfg.read_text(encoding="utf-8") + f"parallel = {value}\n", encoding="utf-8")
    res = doctor_train(str(cfg), "--nproc", "2", timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert last_error_line(res.stderr) == line
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_a_model_without_decoder_layer_classes_is_refused_by_name() -> None:
    import torch

    from doctor.errors import DoctorError
    from doctor.runtime.train.fsdp import decoder_layers, passes

    with pytest.raises(DoctorError, match=r"Linear names no decoder layer class \(_no_split_modules\) to shard by; "
                                          r"use parallel = \"ddp\""):
        decoder_layers(torch.nn.Linear(2, 2))
    assert [passes(n, 2) for n in (1, 2, 3, 4)] == [1, 1, 2, 2]  # the longest share: every rank runs that many


def test_probes_run_once_per_node_and_every_rank_refuses_with_their_line(tmp_path: Path, model_dir: Path,
                                                                         dataset: Path) -> None:
    """torchrun shows every rank's output: with 2 ranks on this node the attention probe (a real child process:
    FlexAttention has no backward on CPU, so it fails) runs once, in local rank 0, and both ranks exit with its line."""
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out", extra='attention = "flex_attention"',
                       **{**SETTINGS, "steps": 1})
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "--max-restarts", "0", "-m", "doctor", "train", str(cfg), "--no-progress"],
                         capture_output=True, text=True, timeout=180, env=train_env(), cwd=str(REPO), stdin=subprocess.DEVNULL)
    assert res.returncode != 0
    both = res.stdout + res.stderr
    assert both.count("doctor train: probing attention flex_attention on cpu") == 1, both
    refusal = "doctor: error: attention = 'flex_attention': its probe failed on cpu (NotImplementedError"
    assert both.count(refusal) == 2, both  # rank 1 took local rank 0's verdict: the same line
