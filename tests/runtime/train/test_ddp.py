"""`doctor train CONFIG.toml --nproc N` (a real CLI subprocess, 2 gloo ranks on CPU, fp32, a tiny Llama):
every step's loss is the one-process run's with the same global batch, even where the ranks hold different
token counts; rank 0 alone writes the adapter and the summary; a rank that dies ends the run in one line
naming it; a bad --nproc is one line, exit 3."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.conftest import REPO
from tests.runtime.train.conftest import (alive, children, doctor_train, interrupted_train, last_error_line,
                                          read_summary, train_env, trained_by_1_and_2, write_config, write_jsonl)

STEPS = 4
SETTINGS: Dict[str, Any] = {"steps": STEPS, "batch_size": 1, "grad_accum": 3, "gradient_checkpointing": False}
# grad_accum 3 over 2 ranks: rank 0 takes micro-batches 0 and 2 of a step, rank 1 takes micro-batch 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, dataset: Path) -> Dict[int, Any]:
    """The same config trained by 1 and by 2 processes: {nproc: (output_dir, completed process)}."""
    return trained_by_1_and_2(tmp_path_factory, model_dir, dataset, "nproc", SETTINGS, timeout=180)


def test_two_ranks_give_the_one_process_loss_at_every_step(runs: Dict[int, Any]) -> None:
    one, two = read_summary(runs[1][0]), read_summary(runs[2][0])
    assert len(two["losses"]) == STEPS
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["tokens"] == one["tokens"]  # the same global batches
    assert two["world_size"] == 2 and "world_size" not in one  # a single process's summary is as before


def test_the_ranks_hold_different_token_counts(runs: Dict[int, Any]) -> None:
    """The case the global normalisation is for: a plain per-rank mean would weight these shares wrongly."""
    from doctor.runtime.train import load_config
    from doctor.runtime.train.data import load_examples
    from doctor.runtime.train.loop import DataPlan, _load_tokenizer

    cfg = load_config(str(runs[2][2]))
    tok = _load_tokenizer(cfg.model)
    plan = DataPlan(load_examples(Path(cfg.data.path), tok, cfg.data.seq_len), cfg)
    shares: List[List[int]] = []
    for step in range(1, STEPS + 1):
        batches = plan.step_batches(step, tok.pad_token_id)
        shares.append([sum(b.targets for b in batches[r::2]) for r in range(2)])
    assert all(a != b for a, b in shares), shares


def test_rank_0_alone_writes_the_adapter_andread_summary(runs: Dict[int, Any], model_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    out, res, _ = runs[2]
    assert res.stdout.count("done: step") == 1 and res.stdout.count(f"step 1/{STEPS}") == 1  # one voice
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{STEPS:06d}"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files of another rank
    a = load_file(str(runs[1][0] / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # the same updates: the same adapter
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


def test_under_torchrun_each_rank_joins(tmp_path: Path, runs: Dict[int, Any], model_dir: Path, dataset: Path) -> None:
    """torchrun starts the ranks (WORLD_SIZE/RANK in their environment): they join, and the losses are the same,
    with 4 ranks for 3 micro-batches a step: rank 3 has none, and its zero gradients still take part in the sum."""
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out", **{**SETTINGS, "steps": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                          "--max-restarts", "0", "-m", "doctor", "train", str(cfg), "--no-progress"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    s = read_summary(tmp_path / "out")
    assert s["world_size"] == 4 and s["complete"]
    assert s["losses"] == pytest.approx(read_summary(runs[1][0])["losses"][:2], rel=1e-5)  # constant schedule
    # probes once per node: local rank 0 alone asks the dispatcher (on CPU it finds nothing to probe and says so
    # once); the other 3 read the verdicts it left, probes off, silently (torchrun shows every rank's stderr)
    assert res.stderr.count("doctor.runtime: no probe verdicts for") == 1, res.stderr


def _rank_of(pid: int) -> str:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), "")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc (Linux)")
def test_a_rank_that_dies_ends_the_run_in_one_line_naming_it(tmp_path: Path, model_dir: Path,
                                                             dataset: Path) -> None:
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out",
                       **{**SETTINGS, "steps": 500})  # never reached
    proc = subprocess.Popen([sys.executable, "-m", "doctor", "train", str(cfg), "--nproc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=train_env(), cwd=str(REPO),
                            stdin=subprocess.DEVNULL)
    ranks: Dict[str, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("step 1/"):
                ranks = {_rank_of(k): k for k in children(proc.pid)}
                os.kill(ranks["1"], signal.SIGKILL)
                break
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < 30  # rank 0 was stopped, not left waiting on its peer
    assert proc.returncode == 4, err
    line = last_error_line(err)
    assert line == "doctor: error: rank 1 of 2 failed (killed by SIGKILL); the other ranks were stopped", err
    assert not alive(ranks["0"])


def test_ctrl_c_checkpoints_the_last_finished_step(tmp_path: Path, runs: Dict[int, Any], model_dir: Path,
                                                   dataset: Path) -> None:
    """SIGINT to the command: rank 0 saves the last finished step (the one-process losses), exit 130, no rank left."""
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out", **{**SETTINGS, "steps": 500})
    code, out, err, kids = interrupted_train(str(cfg), "--nproc", "2", timeout=90)
    assert code == 130, err
    assert "doctor: interrupted" in err
    (ckpt,) = (tmp_path / "out" / "checkpoints").iterdir()
    state = json.loads((ckpt / "state.json").read_text())
    n = state["step"]
    assert n >= 2 and f"interrupted: checkpoint at step {n}" in out
    assert state["losses"] == pytest.approx(read_summary(runs[1][0])["losses"][:n], rel=1e-5)  # constant schedule
    assert len(kids) == 2 and not [k for k in kids if alive(k)]


def test_bad_data_in_the_ranks_is_one_line_naming_a_rank_and_exit_3(tmp_path: Path, model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", ['{"text": "the cat"}', '{"text": "the dog"'])
    cfg = write_config(tmp_path / "train.toml", model_dir, data, tmp_path / "out")
    res = doctor_train(str(cfg), "--nproc", "2", timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    line = last_error_line(res.stderr) or ""
    assert re.fullmatch(r"doctor: error: rank [01] of 2 failed \(exit code 3\): \S*train\.jsonl:2: not JSON \(.*\); "
                        r"the other ranks were stopped", line), line
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("n", ["0", "65"])
def test_a_bad_nproc_is_one_line_and_exit_3(tmp_path: Path, model_dir: Path, dataset: Path, n: str) -> None:
    cfg = write_config(tmp_path / "train.toml", model_dir, dataset, tmp_path / "out")
    res = doctor_train(str(cfg), "--nproc", n, timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert last_error_line(res.stderr) == f"doctor: error: --nproc {n}: must be between 1 and 64 (processes on this machine)"
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
