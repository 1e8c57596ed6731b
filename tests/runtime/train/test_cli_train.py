"""`doctor train CONFIG.toml` as a user runs it (a real subprocess through the CLI) on a tiny saved Llama:
the loss falls, the adapter loads in plain peft, an interrupted run continues with the same losses, and
bad input is one line with exit code 3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.runtime.train.conftest import (doctor_train, interrupted_train, last_error_line, read_summary, write_config,
                                          write_jsonl)

STEPS = 8


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, dataset: Path) -> Path:
    """One uninterrupted run of STEPS steps (shared: the resume test compares against its losses)."""
    root = tmp_path_factory.mktemp("full_run")
    cfg = write_config(root / "train.toml", model_dir, dataset, root / "out", steps=STEPS, save_every=4)
    res = doctor_train(str(cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    return root / "out"


def test_training_reduces_the_loss_and_the_adapter_loads_in_plain_peft(full_run: Path, model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    s = read_summary(full_run)
    assert s["complete"] and s["stopped_at"] == STEPS and len(s["losses"]) == STEPS and s["resumed_from"] == 0
    assert s["losses"][-1] < s["losses"][0] - 0.2, s["losses"]  # ~4.86 -> ~4.54 in 8 steps here
    assert s["device"] == "cpu" and s["precision"] == "fp32" and s["attention"] == "sdpa"
    assert s["patched"].startswith("applied") and s["tokens"] > 0 and s["tokens_per_second"] > 0
    assert [p.name for p in (full_run / "checkpoints").iterdir()] == [f"step-{STEPS:06d}"]  # older ones removed
    assert not [p for p in full_run.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    # plain peft on an unpatched model: the adapter's names are peft's own, and it changes the model
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    ids = torch.tensor([[10, 11, 12, 13, 14, 15]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(full_run / "adapter"))
        after = tuned(ids).logits
    assert tuned.peft_config["default"].r == 4
    assert not torch.allclose(before, after)


def test_an_interrupted_run_continues_with_the_same_losses(tmp_path: Path, full_run: Path, model_dir: Path,
                                                           dataset: Path) -> None:
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out", steps=STEPS, save_every=4)
    first = doctor_train(str(cfg), "--stop-after", "3")
    assert first.returncode == 0, first.stderr
    s = read_summary(tmp_path / "out")
    assert (s["complete"], s["stopped_at"], len(s["losses"])) == (False, 3, 3)
    assert not (tmp_path / "out" / "adapter").exists()
    assert "run again to continue from step 3" in first.stdout

    second = doctor_train(str(cfg))
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout and "(step 3 of 8)" in second.stdout
    s = read_summary(tmp_path / "out")
    assert s["complete"] and s["resumed_from"] == 3
    assert s["losses"] == pytest.approx(read_summary(full_run)["losses"], rel=1e-6)

    # the same output_dir with a setting the checkpoint depends on changed: refused, nothing overwritten
    changed = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out", steps=STEPS, save_every=4,
                           lr=0.5)
    third = doctor_train(str(changed))
    assert third.returncode == 3
    assert "the checkpoint was made with other settings (train.lr changed)" in (last_error_line(third.stderr) or "")


BAD_CASES = {
    "missing model dir": ({"model": "nowhere"}, None, "model: {root}/nowhere: no such directory"),
    "line not JSON": ({}, ['{"text": "the cat"}', '{"text": "the dog"'], "train.jsonl:2: not JSON ("),
    "line lacks the field": ({}, ['{"text": "a"}', '{"content": "the dog"}'],
                             "train.jsonl:2: no \"text\" or \"messages\" field (keys: 'content')"),
    "unknown key": ({"extra": "[train]\nbatchsize = 2"}, None, "train.toml: [train] unknown key 'batchsize'"),
    "wrong type": ({"lr": "0.1"}, None, "train.toml: [train] lr: expected a number, got the string '0.1'"),
    "missing dataset": ({"data": "absent.jsonl"}, None, "[data] path: {root}/absent.jsonl: no such file"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_line_and_exit_3(tmp_path: Path, model_dir: Path, dataset: Path, case: str) -> None:
    change, lines, message = BAD_CASES[case]
    data = write_jsonl(tmp_path / "train.jsonl", lines) if lines else dataset
    model = tmp_path / change["model"] if "model" in change else model_dir
    if "data" in change:
        data = tmp_path / change["data"]
    train = {"lr": change["lr"]} if "lr" in change else {}
    extra = change.get("extra", "")
    cfg = tmp_path / "train.toml"
    if extra:  # a second [train] table would be a TOML error: write this one's keys by hand
        write_config(cfg, model, data, tmp_path / "out")
        cfg.write_text(cfg.read_text().replace("[train]\n", extra + "\n", 1), encoding="utf-8")
    else:
        write_config(cfg, model, data, tmp_path / "out", **train)
    res = doctor_train(str(cfg), timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    line = last_error_line(res.stderr)
    assert line is not None and line.startswith("doctor: error: ")
    assert message.format(root=tmp_path) in line
    assert "Traceback" not in res.stderr


def test_ctrl_c_keeps_the_finished_steps(tmp_path: Path, full_run: Path, model_dir: Path, dataset: Path) -> None:
    """SIGINT mid-run: exit 130, and a checkpoint of the last finished step whose losses are the full run's."""
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out", steps=200)  # never reached
    code, out, err, _ = interrupted_train(str(cfg))
    assert code == 130, err
    assert "doctor: interrupted" in err
    (ckpt,) = (tmp_path / "out" / "checkpoints").iterdir()
    state = json.loads((ckpt / "state.json").read_text())
    n = state["step"]
    assert n >= 2 and ckpt.name == f"step-{n:06d}" and f"interrupted: checkpoint at step {n}" in out
    # a constant schedule: the first steps are the 8-step run's, whatever the total
    assert state["losses"] == pytest.approx(read_summary(full_run)["losses"][:n], rel=1e-6)


def test_train_on_assistant_trains_on_fewer_targets(tmp_path: Path, full_run: Path, model_dir: Path) -> None:
    """`train_on = "assistant"` end to end: the run completes on the chat lines' assistant turns alone; its first
    step's loss differs from the all-token run's (other targets), and the config is in the summary."""
    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "what is the cat"}, {"role": "assistant", "content": "the cat is red"}]},
        {"messages": [{"role": "user", "content": "how are you"}, {"role": "assistant", "content": "good yes"}]},
    ] * 4)
    runs = {}
    for mode in ("all", "assistant"):
        cfg = write_config(tmp_path / f"{mode}.toml", model_dir, chat, tmp_path / mode, steps=2, grad_accum=1)
        cfg.write_text(cfg.read_text(encoding="utf-8").replace("seq_len = 48", f'seq_len = 48\ntrain_on = "{mode}"'),
                       encoding="utf-8")
        res = doctor_train(str(cfg), timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        runs[mode] = read_summary(tmp_path / mode)
    assert runs["assistant"]["config"]["data"]["train_on"] == "assistant" and runs["assistant"]["complete"]
    assert runs["assistant"]["losses"][0] != pytest.approx(runs["all"]["losses"][0], rel=1e-3)
