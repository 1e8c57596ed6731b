"""Packing's gain: `doctor train` on a dataset of short examples, padding-free packing on vs off (issue 11).

The same model, data, LoRA and optimizer settings; one epoch over the data each way, through the real command
(`python -m doctor train CONFIG`, each run its own process with a time limit). Packed rows hold several examples
with attention kept inside each one; unpacked rows hold one example each, padded within the micro-batch. The
figure that matters is real (non-padding) tokens per second over the epoch, and the epoch's time.

    python benchmarks/packing.py --out DIR            # on the GPU: the ANCHORS.md model (benchmarks/train.py's)
    python benchmarks/packing.py --out DIR --smoke    # a tiny model on the CPU, fp32 (what CI runs)
      --examples N --min-len A --max-len B   the dataset: N examples of A..B words (one token each), seeded
      --seq S --batch B                      tokens per row, rows per micro-batch
      --timeout S                            seconds per `doctor train` process

A warm-up run first (a few packed steps, untimed) fills the probe verdicts and Triton's cache, so neither timed
run pays for compiling. Writes DIR/packing.json and DIR/packing.md; exit 0 when both timed runs finished,
1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]  # benchmarks/kernels.py shadows `kernels`


def _train_bench() -> Any:
    """benchmarks/train.py as a module: its model preparation (same model, same directory key) is reused."""
    spec = importlib.util.spec_from_file_location("train_bench", os.path.join(HERE, "train.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_dataset(path: str, n: int, lo: int, hi: int, vocab_words: int, seed: int = 7) -> Dict[str, Any]:
    """n {"text": ...} lines of lo..hi words from the prepared word-level vocabulary; their length statistics."""
    rng = random.Random(seed)
    lengths = [rng.randint(lo, hi) for _ in range(n)]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for k in lengths:
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(vocab_words)}" for _ in range(k))}) + "\n")
    os.replace(tmp, path)
    return {"examples": n, "min_words": lo, "max_words": hi, "mean_words": round(sum(lengths) / n, 1),
            "total_words": sum(lengths)}


def write_config(path: str, model_dir: str, data: str, out: str, *, seq: int, batch: int, packing: bool,
                 steps: int = 0, precision: str = "auto", gradient_checkpointing: bool = True) -> str:
    """A `doctor train` TOML for one run (epochs 1 unless steps is set)."""
    lines = [f"model = {json.dumps(model_dir)}", f"output_dir = {json.dumps(out)}", "",
             "[data]", f"path = {json.dumps(data)}", f"seq_len = {seq}", f"packing = {'true' if packing else 'false'}", "",
             "[lora]", "rank = 16", "alpha = 16", "", "[train]", f"batch_size = {batch}", "lr = 1e-4",
             "schedule = \"constant\"", "max_grad_norm = 0.0", f"precision = \"{precision}\"",
             f"gradient_checkpointing = {'true' if gradient_checkpointing else 'false'}", "seed = 0", "log_every = 1000"]
    lines.append(f"steps = {steps}" if steps else "epochs = 1.0")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_train(config: str, out: str, timeout: float, log: Any) -> Dict[str, Any]:
    """`python -m doctor train CONFIG` with a time limit; its run_summary.json (or why there is none)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), ROOT) if p)  # an installed doctor first
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "doctor", "train", config], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as exc:
        said = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr)]
        log.write(f"\n===== {config}: timeout after {timeout:g} s\n" + "".join(said))
        return {"status": "timeout", "reason": f"no result within {timeout:g} s"}
    wall = round(time.perf_counter() - t, 1)
    log.write(f"\n===== {config} (exit {proc.returncode}, {wall} s)\n{proc.stdout}{proc.stderr}")
    log.flush()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {"status": "error", "reason": f"exit {proc.returncode}: {tail[0][:300]}", "process_s": wall}
    with open(os.path.join(out, "run_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return {"status": "ok", "process_s": wall, **{k: summary[k] for k in (
        "rows", "total_steps", "tokens", "seconds", "tokens_per_second", "attention", "attention_reason", "precision",
        "device", "patched") if k in summary}}


def _device_name(device: str) -> str:
    """The GPU's name (torch's), or the CPU's machine type in a smoke run."""
    if device == "cpu":
        import platform

        return f"CPU ({platform.machine()})"
    import torch

    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "no CUDA GPU visible"


def render(doc: Dict[str, Any]) -> str:
    """The two runs as markdown."""
    d, runs = doc["dataset"], doc["runs"]
    lines = [f"Packing on a dataset of short examples, {doc['device']}, {doc['date']}: {d['examples']} examples of "
             f"{d['min_words']}-{d['max_words']} tokens (mean {d['mean_words']}), rows of {doc['seq']} tokens, "
             f"batch {doc['batch']}, one epoch, LoRA r=16, gradient checkpointing, the model of benchmarks/train.py"
             + (" (SMOKE: tiny model, CPU)" if doc["smoke"] else "") + ".", "",
             "| packing | status | rows | steps | real tokens | epoch time | real tokens/s | attention |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("packed", "unpacked"):
        r = runs.get(name, {})
        if r.get("status") != "ok":
            lines.append(f"| {name} | {r.get('status', 'not run')}: {r.get('reason', '')} | | | | | | |")
            continue
        lines.append(f"| {name} | ok | {r['rows']} | {r['total_steps']} | {r['tokens']:,} | {r['seconds']:.2f} s | "
                     f"{r['tokens_per_second']:,.0f} | {r.get('attention', '?')} |")
    if doc.get("gain") is not None:
        lines += ["", f"Packing's gain: {doc['gain']:.2f}x real tokens/s (the epoch in "
                      f"{runs['packed']['seconds']:.2f} s instead of {runs['unpacked']['seconds']:.2f} s)."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """Prepare, warm up, time packed and unpacked epochs, write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results folder (packing.json, packing.md, packing.log)")
    p.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, fp32")
    p.add_argument("--examples", type=int, default=None, help="default 1200 (--smoke 24)")
    p.add_argument("--min-len", type=int, default=None, help="default 32 (--smoke 3)")
    p.add_argument("--max-len", type=int, default=None, help="default 512 (--smoke 12)")
    p.add_argument("--seq", type=int, default=None, help="default 2048 (--smoke 32)")
    p.add_argument("--batch", type=int, default=None, help="default 8 (--smoke 2)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run (default 300; --smoke 180)")
    p.add_argument("--model-dir", default=None, help="the prepared model (default: benchmarks/train.py's for this setup)")
    args = p.parse_args(argv)
    s = args.smoke
    def pick(value: Optional[Any], smoke: Any, full: Any) -> Any:
        return value if value is not None else (smoke if s else full)

    n, lo, hi = pick(args.examples, 24, 1200), pick(args.min_len, 3, 32), pick(args.max_len, 12, 512)
    seq, batch, timeout = pick(args.seq, 32, 2048), pick(args.batch, 2, 8), pick(args.timeout, 180.0, 300.0)
    if not (0 < lo <= hi < seq) or n < 1 or batch < 1:
        p.error("need 0 < --min-len <= --max-len < --seq, --examples >= 1, --batch >= 1")
    os.makedirs(args.out, exist_ok=True)
    tb = _train_bench()
    setup = tb.make_setup(tb.parse_args(["--out", args.out] + (["--smoke"] if s else [])))
    model_dir = args.model_dir or os.path.join(tempfile.gettempdir(), f"tune-doctor-train-bench-{tb.model_key(setup)}")
    work = tempfile.mkdtemp(prefix="tune-doctor-packing-")
    with open(os.path.join(args.out, "packing.log"), "w") as log:
        prep = tb.run_child("prepare", setup, model_dir, work, timeout, log, False)
        if prep.get("status") == "error" or not os.path.exists(os.path.join(model_dir, ".complete")):
            print(f"preparing the model failed: {prep.get('reason', prep)}", file=sys.stderr)
            return 1
        vocab_words = min(1000, setup["model"]["vocab_size"] - len(tb.SPECIAL_TOKENS))
        data = os.path.join(work, "short.jsonl")
        stats = write_dataset(data, n, lo, hi, vocab_words)
        precision = "fp32" if s else "auto"
        common = dict(seq=seq, batch=batch, precision=precision)
        warm = write_config(os.path.join(work, "warm.toml"), model_dir, data, os.path.join(work, "warm"),
                            packing=True, steps=2, **common)  # type: ignore[arg-type]
        warm_res = run_train(warm, os.path.join(work, "warm"), timeout, log)
        runs: Dict[str, Dict[str, Any]] = {}
        for name, packing in (("packed", True), ("unpacked", False)):
            cfg = write_config(os.path.join(work, f"{name}.toml"), model_dir, data, os.path.join(work, name),
                               packing=packing, **common)  # type: ignore[arg-type]
            runs[name] = run_train(cfg, os.path.join(work, name), timeout, log)
    ok = all(r.get("status") == "ok" for r in runs.values())
    gain = round(runs["packed"]["tokens_per_second"] / runs["unpacked"]["tokens_per_second"], 3) \
        if ok and runs["unpacked"].get("tokens_per_second") else None
    device = _device_name(setup["device"])
    doc = {"benchmark": "packing", "date": datetime.date.today().isoformat(), "smoke": s, "device": device,
           "seq": seq, "batch": batch, "dataset": stats, "warmup": warm_res, "runs": runs, "gain": gain,
           "model": setup["model"], "model_dir": model_dir}
    for name, text in (("packing.json", json.dumps(doc, indent=2) + "\n"), ("packing.md", render(doc))):
        tmp = os.path.join(args.out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(args.out, name))
    print(render(doc), end="")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
