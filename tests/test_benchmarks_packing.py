"""benchmarks/packing.py --smoke: `doctor train` packed vs unpacked on short examples, on the CPU at a tiny size.

The GPU run is `bash benchmarks/gpu_kernels_run.sh packing`; here the same code runs end to end: the model
prepared by benchmarks/train.py's code, the dataset, the warm-up, both timed epochs through the real command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKING = REPO / "benchmarks" / "packing.py"

pytest.importorskip("transformers")
pytest.importorskip("peft")


def _bench(*args: str, timeout: float = 600) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, str(PACKING), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_smoke_trains_both_ways_on_the_same_tokens(tmp_path: Path) -> None:
    """Both epochs see every real token once; packing needs fewer rows and steps; the gain is their speed ratio."""
    proc = _bench("--out", str(tmp_path), "--smoke", "--model-dir", str(tmp_path / "model"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "packing.json").read_text())
    packed, unpacked = doc["runs"]["packed"], doc["runs"]["unpacked"]
    assert packed["status"] == unpacked["status"] == "ok" and doc["warmup"]["status"] == "ok"
    assert packed["tokens"] == unpacked["tokens"] > doc["dataset"]["total_words"]  # words + bos/eos, none dropped
    assert unpacked["rows"] == doc["dataset"]["examples"] and packed["rows"] < unpacked["rows"]
    assert packed["total_steps"] < unpacked["total_steps"]
    assert doc["gain"] == pytest.approx(packed["tokens_per_second"] / unpacked["tokens_per_second"], rel=1e-2)
    md = (tmp_path / "packing.md").read_text()
    assert "| packed | ok |" in md and "| unpacked | ok |" in md and "Packing's gain" in md
    assert (tmp_path / "packing.log").stat().st_size > 0


@pytest.mark.parametrize("args", [["--smoke", "--min-len", "20", "--max-len", "10"],
                                  ["--smoke", "--max-len", "40", "--seq", "32"], ["--smoke", "--examples", "0"], []])
def test_bad_usage_exits_2(tmp_path: Path, args) -> None:  # type: ignore[no-untyped-def]
    """Lengths that cannot fit a row, no examples, or no --out: argparse's usage error, nothing run."""
    proc = _bench(*(["--out", str(tmp_path)] if args else []), *args, timeout=60)
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stderr
    assert not (tmp_path / "packing.json").exists()
