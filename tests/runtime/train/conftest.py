"""Fixtures of the `doctor train` tests: a saved tiny Llama, small JSONL datasets, config files, a CLI runner."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.conftest import REPO
from tests.runtime.conftest import WORDS, build_model, save_model_dir


def sentences(n: int, seed: int = 0) -> List[str]:
    """n short texts in the tokenizer's words: a few fixed phrases (so the loss can fall fast) of varied length."""
    r = random.Random(seed)
    phrases = ["the cat can run fast .", "a dog is happy and the bird can fly .", "hello world ."]
    return [" ".join(r.choice(phrases) for _ in range(r.randint(1, 3))) for _ in range(n)]


def write_jsonl(path: Path, rows: List[Any]) -> Path:
    """Each row as one JSON line (strings are written as they are: for broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def dataset_rows(n: int = 24, seed: int = 0) -> List[Dict[str, Any]]:
    """Mostly text lines, every fourth a chat."""
    r = random.Random(seed)
    out: List[Dict[str, Any]] = []
    for i, text in enumerate(sentences(n, seed)):
        if i % 4 == 3:
            q = " ".join(r.choice(WORDS[:20]) for _ in range(4))
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": text}]})
        else:
            out.append({"text": text})
    return out


def write_config(path: Path, model: Path, data: Path, out: Path, extra: str = "", **train: Any) -> Path:
    """A config file for `doctor train` with small settings; keyword arguments override [train] values."""
    settings = {"batch_size": 2, "grad_accum": 2, "steps": 6, "lr": 0.02, "schedule": "constant", "log_every": 1,
                "gradient_checkpointing": True, "seed": 0, **train}
    lines = [f'model = "{model}"', f'output_dir = "{out}"', extra, "[data]", f'path = "{data}"', "seq_len = 48",
             "[lora]", "rank = 4", "alpha = 8", "[train]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama with its word-level tokenizer and chat template (shared by a module's tests)."""
    return save_model_dir(build_model("llama"), tmp_path_factory.mktemp("train_model") / "tiny-llama")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 lines of text and chat examples."""
    return write_jsonl(tmp_path_factory.mktemp("train_data") / "train.jsonl", dataset_rows())


def train_env() -> Dict[str, str]:
    """The environment of a `doctor train` child: this checkout's doctor, one torch thread (2 shared cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def doctor_train(*args: str, timeout: float = 240) -> "subprocess.CompletedProcess[str]":
    """`python -m doctor train ARGS` in a fresh process, one torch thread (the CI box has 2 shared cores)."""
    return subprocess.run([sys.executable, "-m", "doctor", "train", *args], capture_output=True, text=True,
                          timeout=timeout, env=train_env(), cwd=str(REPO), stdin=subprocess.DEVNULL)


def children(pid: int) -> List[int]:
    """The process's children now (Linux /proc)."""
    kids: List[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def alive(pid: int) -> bool:
    """Whether the process still runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def interrupted_train(*args: str, timeout: float = 120) -> Tuple[int, str, str, List[int]]:
    """`doctor train ARGS`, Ctrl-C (SIGINT to the command) once it prints step 2: (exit code, stdout, stderr, the
    command's child processes at that moment: the ranks of an --nproc run)."""
    proc = subprocess.Popen([sys.executable, "-m", "doctor", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=train_env(), cwd=str(REPO), stdin=subprocess.DEVNULL)
    kids: List[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("step 2/"):
                kids = children(proc.pid)
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err, kids


def read_summary(out: Path) -> Dict[str, Any]:
    """The run's run_summary.json."""
    return json.loads((out / "run_summary.json").read_text(encoding="utf-8"))


def trained_by_1_and_2(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, dataset: Path, tag: str,
                       settings: Dict[str, Any], timeout: float) -> Dict[int, Any]:
    """The same config trained by 1 and by 2 processes: {nproc: (output_dir, completed process, config path)}."""
    done: Dict[int, Any] = {}
    for n in (1, 2):
        root = tmp_path_factory.mktemp(f"{tag}{n}")
        cfg = write_config(root / "train.toml", model_dir, dataset, root / "out", **settings)
        res = doctor_train(str(cfg), "--nproc", str(n), timeout=timeout)
        assert res.returncode == 0, res.stdout + res.stderr
        done[n] = (root / "out", res, cfg)
    return done


def last_error_line(stderr: str) -> Optional[str]:
    """The doctor's one-line error, ignoring noise other libraries print at exit (nanobind leak reports)."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("doctor:")]
    return lines[-1] if lines else None


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One intra-op thread in these tests: on 2 shared cores, two spinning threads make a tiny step 10-30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
