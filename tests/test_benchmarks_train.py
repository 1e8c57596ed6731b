"""benchmarks/train.py --smoke (hf and doctor on the CPU, each in its own process) and benchmarks/train_chart.py.

The GPU run (every variant at the ANCHORS.md setup) is `bash benchmarks/gpu_kernels_run.sh train` on the H200;
here the same code paths run at a tiny size: the prepared model directory, the per-variant children, the
comparison, the markdown, the profile, a timeout, the chart's bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from tests.conftest import REPO

TRAIN = REPO / "benchmarks" / "train.py"
CHART = REPO / "benchmarks" / "train_chart.py"

pytest.importorskip("transformers")
pytest.importorskip("peft")


def _bench(*args: str, timeout: float = 600) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path, "subprocess.CompletedProcess[str]"]:
    """One --smoke run of hf and doctor (1 warm-up + 2 timed steps), the doctor's step profiled."""
    root = tmp_path_factory.mktemp("train-bench")
    out, model = root / "out", root / "model"
    proc = _bench("--smoke", "--variants", "hf", "doctor", "--steps", "2", "--warmup", "1", "--profile",
                  "--out", str(out), "--model-dir", str(model))
    return out, model, proc


def _doc(out: Path) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads((out / "train.json").read_text())
    return doc


def test_smoke_runs_hf_and_doctor_and_compares_their_losses(smoke) -> None:  # type: ignore[no-untyped-def]
    """Both variants train 3 steps on the same data; the doctor's loss matches HF's at every step (fp32, CPU)."""
    out, model, proc = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = _doc(out)
    assert doc["order"] == ["hf", "doctor"] and doc["setup"]["smoke"] and doc["setup"]["device"] == "cpu"
    assert doc["complete"] is True
    for v in ("hf", "doctor"):
        r = doc["variants"][v]
        assert r["status"] == "ok", r
        assert len(r["losses"]) == 3 and len(r["step_ms_all"]) == 3
        assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["trainable_M"] > 0
        assert r["peak_GiB"] is None  # memory is measured on the GPU only
    hf, dr = doc["variants"]["hf"], doc["variants"]["doctor"]
    assert hf["losses"][0] == pytest.approx(dr["losses"][0], rel=1e-4)  # same weights, same batch
    cmp = doc["comparison"]["doctor"]
    assert len(cmp["loss_rel_diff_vs_hf"]) == 3
    assert cmp["loss_max_abs_rel_diff_vs_hf"] < 1e-3 and cmp["loss_within_bound"] is True
    assert cmp["speed_vs_hf"] > 0
    md = (out / "train.md").read_text()
    assert "| transformers + peft | ok |" in md and "| doctor runtime | ok |" in md
    assert "doctor vs HF: largest |relative loss difference|" in md and "| 1w |" in md
    assert "doctor vs HF" in proc.stdout  # the tables are printed too
    assert (model / ".complete").exists() and (model / "config.json").exists()


def test_smoke_profile_and_log(smoke) -> None:  # type: ignore[no-untyped-def]
    """--profile alone profiles the doctor's variant: a per-op table; every child's output lands in train.log."""
    out, _, proc = smoke
    table = (out / "profile_doctor.txt").read_text()
    assert table.startswith("# one training step under torch.profiler") and "aten::" in table
    assert not (out / "profile_hf.txt").exists()
    assert _doc(out)["variants"]["doctor"]["profile"] == "profile_doctor.txt"
    log = (out / "train.log").read_text()
    assert "===== prepare" in log and "===== hf" in log and "===== doctor" in log


def test_timeout_and_skips_are_reported_not_fatal(smoke, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A variant past its time limit is killed and reported with its output; one whose library is missing is
    skipped with the reason; the prepared model is reused; exit 1 (a variant did not run)."""
    _, model, _ = smoke
    proc = _bench("--smoke", "--variants", "liger", "unsloth", "hf", "--timeout", "1", "--out", str(tmp_path),
                  "--model-dir", str(model), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = _doc(tmp_path)
    assert doc["prepare"]["reused"] is True
    hf = doc["variants"]["hf"]
    assert hf["status"] == "timeout" and "within 1 s" in hf["reason"] and "output_tail" in hf
    for v in ("liger", "unsloth"):
        assert doc["variants"][v]["status"] == "skipped"
        assert "not installed" in doc["variants"][v]["reason"] or "needs a CUDA GPU" in doc["variants"][v]["reason"]
    assert "| transformers + peft | timeout:" in (tmp_path / "train.md").read_text()


@pytest.mark.parametrize("args, message", [
    ((), "--out DIR is required"),
    (("--out", "x", "--steps", "0"), "--steps must be at least 1"),
    (("--out", "x", "--timeout", "-1"), "--timeout must be a positive"),
    (("--out", "x", "--variants", "vllm"), "invalid choice"),
])
def test_bad_usage_is_exit_2(args, message) -> None:  # type: ignore[no-untyped-def]
    """Bad options: argparse's exit 2 with the reason, before any child starts."""
    proc = _bench(*args, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr


def test_chart_says_matplotlib_is_missing_or_draws(smoke, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without matplotlib: one line saying so, exit 1; with it (where installed): a PNG from the smoke JSON."""
    out, _, _ = smoke
    png = tmp_path / "train.png"
    proc = subprocess.run([sys.executable, str(CHART), str(out / "train.json"), "-o", str(png)], capture_output=True,
                          text=True, timeout=120)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert proc.returncode == 1 and "needs matplotlib" in proc.stderr and "pip install matplotlib" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not png.exists()
    else:
        assert proc.returncode == 0, proc.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the benchmark's JSON"),
    ("{not json", "cannot read the benchmark's JSON"),
    ('{"rows": []}', "not benchmarks/train.py output"),
])
def test_chart_bad_input_is_one_line(tmp_path: Path, content, message) -> None:  # type: ignore[no-untyped-def]
    """A missing, malformed or foreign JSON: one line naming the file, exit 1, no traceback."""
    path = tmp_path / "train.json"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, str(CHART), str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_partial_results_render(smoke, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What a run cut short leaves (written after every variant): the variants not reached are named, not a crash."""
    import importlib.util

    out, _, _ = smoke
    spec = importlib.util.spec_from_file_location("train_bench", TRAIN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = _doc(out)
    doc.update(order=["hf", "doctor", "unsloth"], complete=False)
    del doc["variants"]["doctor"]
    md = mod.write(doc, str(tmp_path))
    assert "| doctor runtime | not run: the run ended before it |" in md and "| Unsloth | not run:" in md
    assert json.loads((tmp_path / "train.json").read_text())["complete"] is False
    assert "doctor" not in json.loads((tmp_path / "train.json").read_text())["comparison"]
