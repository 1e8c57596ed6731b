"""LoRA fine-tuning side by side: transformers + peft, + Liger, Unsloth, and the doctor's runtime (ANCHORS.md setup).

Each variant runs in its OWN process with a time limit (`import unsloth` changes torch settings for the whole
process; a hang or a crash costs that variant only). All of them load one model directory, made once by a
"prepare" process, and train on the same batches with the same seeds:

    Llama-style 1.53B (hidden 2048, 16 layers, 16 heads / 8 kv heads, MLP 8192, vocab 128256), random init, bf16,
    LoRA r=16 alpha 16 on q/k/v/o/gate/up/down, gradient checkpointing, batch 8 x 2048 random tokens (labels =
    inputs), AdamW lr 1e-4; `--warmup` untimed steps, then `--steps` timed ones.

    hf       transformers + peft, SDPA attention (the baseline)
    liger    the same after liger_kernel's apply_liger_kernel_to_llama()
    unsloth  Unsloth's FastLanguageModel (its kernels, its offloaded gradient checkpointing), imported first
    doctor   the same as hf after doctor.runtime.patch(model)

Per variant: tokens/s over the timed steps, the median step, peak allocated memory over the timed steps, the
loss at every step (warm-up ones included). Per step: each variant's loss relative to HF's, the doctor's
against the issue's 0.5% bound.

    python benchmarks/train.py --out DIR                  # on the GPU: every variant
    python benchmarks/train.py --out DIR --smoke          # a tiny model on the CPU, fp32 (what CI runs)
      --variants hf doctor   --steps 20 --warmup 3   --timeout S (per variant)   --batch B --seq S
      --profile [VARIANT ...]   one more step under torch.profiler: a per-op table (default: the doctor's)
      --model-dir DIR           where the prepared model lives (default: a temp dir keyed by the setup)

Writes DIR/train.json (setup, every variant's result, the comparisons), DIR/train.md (tables for RESULTS.md),
DIR/train.log (every child's output) and DIR/profile_<variant>.txt with --profile. A variant whose library is
missing (or that needs a GPU in --smoke) is "skipped" with the reason; one that fails or runs out of time is
"error" / "timeout" with its output's tail; nothing of either stops the others. Exit 0 when every selected
variant ran or was skipped, 1 otherwise, 2 on bad usage. The chart: benchmarks/train_chart.py.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# `python benchmarks/train.py` puts benchmarks/ first on sys.path, where kernels.py would shadow the `kernels`
# distribution transformers imports for hub kernels.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
VARIANTS = ("hf", "doctor", "unsloth", "liger")  # run order: the baseline, this runtime, its target, then the rest
LABELS = {"hf": "transformers + peft", "liger": "+ Liger", "unsloth": "Unsloth", "doctor": "doctor runtime"}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOSS_BOUND = 0.005  # the bound on |loss - HF loss| / HF loss at every step

# The ANCHORS.md model, and the tiny one --smoke trains on the CPU.
FULL_MODEL = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
                  num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096)
SMOKE_MODEL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=128, max_position_embeddings=128)
SPECIAL_TOKENS = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}


# ------------------------------------------------------------------------------------------------ setup

def make_setup(args: argparse.Namespace) -> Dict[str, Any]:
    """Everything a child needs to train exactly like its siblings (plain JSON: it travels on the command line)."""
    smoke = bool(args.smoke)
    return {
        "smoke": smoke,
        "model": dict(SMOKE_MODEL if smoke else FULL_MODEL),
        "device": "cpu" if smoke else "cuda",
        "dtype": "float32" if smoke else "bfloat16",
        "batch": args.batch or (2 if smoke else 8),
        "seq": args.seq or (32 if smoke else 2048),
        "warmup": args.warmup if args.warmup is not None else (1 if smoke else 3),
        "steps": args.steps if args.steps is not None else (3 if smoke else 20),
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "targets": list(TARGETS)},
        "lr": 1e-4,
        "gradient_checkpointing": True,
        "seeds": {"model": 0, "lora": 0, "data": 1},
        "distinct_batches": 4,  # the anchors cycle through 4 random batches
    }


def model_key(setup: Dict[str, Any]) -> str:
    """A short hash of what the prepared model directory depends on."""
    what = {k: setup[k] for k in ("model", "dtype", "seeds")}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ children

def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def prepare(setup: Dict[str, Any], model_dir: str) -> Dict[str, Any]:
    """Build the random model (on the device: seconds, where a CPU init of 1.53B takes minutes) and save it with a
    word-level tokenizer (Unsloth loads a directory); a marker file is written last, so a partial one is redone."""
    marker = os.path.join(model_dir, ".complete")
    if os.path.exists(marker):
        return {"model_dir": model_dir, "reused": True}
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    t = time.perf_counter()
    cfg = LlamaConfig(**setup["model"], bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(setup["seeds"]["model"])
    with torch.device(setup["device"]):
        model = LlamaForCausalLM(cfg)
    model = model.to(_torch_dtype(setup["dtype"]))
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)
    n_words = min(1000, setup["model"]["vocab_size"] - len(SPECIAL_TOKENS))
    vocab = {**SPECIAL_TOKENS, **{f"w{i}": i + len(SPECIAL_TOKENS) for i in range(n_words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(model_dir)
    with open(marker, "w") as f:
        f.write(model_key(setup) + "\n")
    return {"model_dir": model_dir, "reused": False, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6),
            "prepare_s": round(time.perf_counter() - t, 1)}


def _skip_reason(variant: str, setup: Dict[str, Any]) -> str:
    """Why this variant cannot run here ('' when it can): a missing library, or a GPU-only peer in --smoke."""
    import importlib.util

    needs = {"liger": ("liger_kernel",), "unsloth": ("unsloth", "unsloth_zoo")}.get(variant, ())
    for name in needs:
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed"
    if needs and setup["device"] == "cpu":
        return f"{variant} needs a CUDA GPU (its kernels are Triton's, compiled for the GPU)"
    return ""


def _versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    out: Dict[str, Optional[str]] = {}
    for dist in ("torch", "triton", "transformers", "peft", "accelerate", "liger-kernel", "unsloth", "unsloth_zoo"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _batches(setup: Dict[str, Any]) -> List[Any]:
    """The same token batches in every process (a CPU generator: identical whatever the device)."""
    import torch

    g = torch.Generator().manual_seed(setup["seeds"]["data"])
    shape = (setup["batch"], setup["seq"])
    return [torch.randint(0, setup["model"]["vocab_size"], shape, generator=g).to(setup["device"])
            for _ in range(setup["distinct_batches"])]


def _hf_model(variant: str, setup: Dict[str, Any], model_dir: str) -> Any:
    """transformers + peft, with Liger's or the doctor's patches for those variants."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if variant == "liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()  # class-level, before the model is built (its documented use)
    dtype = _torch_dtype(setup["dtype"])
    kwargs: Dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    import importlib.util

    if setup["device"] != "cpu" and importlib.util.find_spec("accelerate") is not None:
        kwargs["device_map"] = {"": setup["device"]}  # straight onto the GPU (device_map needs accelerate)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(setup["device"])  # (a dispatched model is not moved again)
    if variant == "doctor":
        import doctor.runtime

        model = doctor.runtime.patch(model, seq_len=setup["seq"])  # the attention probe runs at the training shape
    if setup["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = setup["lora"]
    torch.manual_seed(setup["seeds"]["lora"])  # the same adapter init for every HF-based variant
    return get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                            bias="none", target_modules=list(lora["targets"])))


def _unsloth_model(setup: Dict[str, Any], model_dir: str) -> Any:
    """Unsloth's own runtime on the same directory (unsloth was imported first, before transformers)."""
    from unsloth import FastLanguageModel

    lora = setup["lora"]
    model, _ = FastLanguageModel.from_pretrained(model_dir, max_seq_length=setup["seq"],
                                                 dtype=_torch_dtype(setup["dtype"]), load_in_4bit=False)
    return FastLanguageModel.get_peft_model(
        model, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias="none",
        target_modules=list(lora["targets"]),
        use_gradient_checkpointing="unsloth" if setup["gradient_checkpointing"] else False,
        random_state=setup["seeds"]["lora"])


def _profile_step(step: Any, index: int, cuda: bool, path: str) -> None:
    """One more step under torch.profiler; the per-op table (by self time on the device, or the CPU) to `path`."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        step(index)
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t
    avgs = prof.key_averages()
    sort = "self_cpu_time_total"
    busy = ""
    if cuda:  # the key was renamed (cuda -> device) in torch 2.4
        sort = "self_device_time_total" if avgs and hasattr(avgs[0], "self_device_time_total") else "self_cuda_time_total"
        total_us = sum(getattr(e, sort, 0) for e in avgs)
        # GPU busy time against the wall: far below it, the step waits on the host (launches, syncs), not on kernels
        busy = f"; GPU busy (sum of self device time) {total_us / 1000:.1f} ms = {total_us / 10 / (wall * 1000):.0f}% of it"
    with open(path, "w") as f:
        f.write(f"# one training step under torch.profiler ({wall * 1000:.1f} ms wall with profiling{busy}), "
                f"sorted by {sort}\n")
        f.write(avgs.table(sort_by=sort, row_limit=60, max_name_column_width=70) + "\n")


def train(variant: str, setup: Dict[str, Any], model_dir: str, profile_path: Optional[str]) -> Dict[str, Any]:
    """Load, train warm-up + timed steps, measure; the result record (raises on failure)."""
    res: Dict[str, Any] = {"variant": variant}
    t0 = time.perf_counter()
    if variant == "unsloth":
        import unsloth  # noqa: F401  (first: it patches transformers while it is imported)

        res["import_unsloth_s"] = round(time.perf_counter() - t0, 1)
    import torch

    cuda = setup["device"] == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch (use --smoke on a CPU)")
    t = time.perf_counter()
    model = _unsloth_model(setup, model_dir) if variant == "unsloth" else _hf_model(variant, setup, model_dir)
    res["load_s"] = round(time.perf_counter() - t, 1)
    res["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3 if setup["smoke"] else 0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    res["trainable_M"] = round(sum(p.numel() for p in trainable) / 1e6, 3)
    opt = torch.optim.AdamW(trainable, lr=setup["lr"])
    batches = _batches(setup)
    model.train()

    def step(i: int) -> float:
        ids = batches[i % len(batches)]
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.item())  # .item() waits for the GPU: the step's time is all in

    losses: List[float] = []
    times: List[float] = []
    warmup, steps = setup["warmup"], setup["steps"]
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        losses.append(step(i))
        times.append(time.perf_counter() - t)
    timed = times[warmup:]
    tokens = setup["batch"] * setup["seq"]
    res.update({
        "status": "ok",
        "tokens_per_s": round(len(timed) * tokens / sum(timed)) if timed else None,
        "step_ms": round(statistics.median(timed) * 1000, 2) if timed else None,
        "step_ms_all": [round(x * 1000, 2) for x in times],
        "peak_GiB": round(torch.cuda.max_memory_allocated() / 2 ** 30, 3) if cuda else None,
        "reserved_GiB": round(torch.cuda.max_memory_reserved() / 2 ** 30, 3) if cuda else None,
        "losses": losses,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})",
        "versions": _versions(),
    })
    if profile_path:
        _profile_step(step, warmup + steps, cuda, profile_path)
        res["profile"] = os.path.basename(profile_path)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def child_main(role: str, setup: Dict[str, Any], model_dir: str, result_path: str, profile_path: Optional[str]) -> int:
    """A child process: prepare the model, or train one variant; the result (or the failure) as JSON in result_path."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")  # no hub: everything is local
    sys.path.append(ROOT)  # this checkout's doctor, where none is installed (an installed one comes first)
    try:
        if role == "prepare":
            res = prepare(setup, model_dir)
        else:
            reason = _skip_reason(role, setup)
            res = {"variant": role, "status": "skipped", "reason": reason} if reason else \
                train(role, setup, model_dir, profile_path)
    except BaseException as exc:  # reported, not raised: the parent reads the record
        traceback.print_exc()
        res = {"variant": role, "status": "error", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    with open(result_path + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(result_path + ".tmp", result_path)
    return 0 if res.get("status") in ("ok", "skipped", None) else 1


# ------------------------------------------------------------------------------------------------ parent

def run_child(role: str, setup: Dict[str, Any], model_dir: str, work: str, timeout: float, log: Any,
              profile: bool) -> Dict[str, Any]:
    """Run one child with a time limit (its whole process group killed at the limit); its result record."""
    result_path = os.path.join(work, f"{role}.json")
    profile_path = os.path.join(work, f"profile_{role}.txt") if profile else ""
    argv = [sys.executable, os.path.abspath(__file__), "--child", role, "--setup", json.dumps(setup),
            "--model-dir", model_dir, "--result", result_path] + (["--profile-to", profile_path] if profile else [])
    log.write(f"\n===== {role} ({datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} UTC) =====\n")
    log.flush()
    out_path = os.path.join(work, f"{role}.out")
    t = time.perf_counter()
    with open(out_path, "w") as out:
        # cwd: the work dir, where a relative cache (unsloth_compiled_cache) may land, never the checkout
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    wall = round(time.perf_counter() - t, 1)
    with open(out_path, errors="replace") as f:
        text = f.read()
    log.write(text)
    log.flush()
    tail = text[-3000:]
    res: Dict[str, Any] = {"variant": role}
    if os.path.exists(result_path):
        with open(result_path) as f:
            res = json.load(f)
    if rc is None:
        res = {"variant": role, "status": "timeout", "reason": f"no result within {timeout:g} s (killed)"}
    elif "status" not in res and role != "prepare":
        how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        res = {"variant": role, "status": "error", "reason": f"the process ended without a result ({how})"}
    if res.get("status") in ("error", "timeout"):
        res["output_tail"] = tail
    if profile and os.path.exists(profile_path):
        res["profile_text"] = profile_path
    res["process_s"] = wall
    return res


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """SIGKILL the child's process group (compilers and workers it started die with it), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def rel_diffs(losses: Sequence[float], ref: Sequence[float]) -> List[Optional[float]]:
    """(loss - ref) / |ref| per step, over the steps both have."""
    return [(a - b) / abs(b) if b else None for a, b in zip(losses, ref)]


def compare(results: Dict[str, Dict[str, Any]], setup: Dict[str, Any]) -> Dict[str, Any]:
    """Ratios of tokens/s and memory against HF and Unsloth, and every variant's per-step loss against HF's."""
    ok = {v: r for v, r in results.items() if r.get("status") == "ok"}
    out: Dict[str, Any] = {"loss_bound": LOSS_BOUND, "warmup": setup["warmup"]}
    for v, r in ok.items():
        row: Dict[str, Any] = {}
        for ref in ("hf", "unsloth"):
            if ref in ok and ref != v and ok[ref].get("tokens_per_s") and r.get("tokens_per_s"):
                row[f"speed_vs_{ref}"] = round(r["tokens_per_s"] / ok[ref]["tokens_per_s"], 3)
                if r.get("peak_GiB") is not None and ok[ref].get("peak_GiB"):
                    row[f"memory_vs_{ref}"] = round(r["peak_GiB"] / ok[ref]["peak_GiB"], 3)
        if "hf" in ok and v != "hf":
            d = rel_diffs(r["losses"], ok["hf"]["losses"])
            known = [abs(x) for x in d if x is not None]
            row["loss_rel_diff_vs_hf"] = d
            row["loss_max_abs_rel_diff_vs_hf"] = max(known) if known else None
            row["loss_within_bound"] = bool(known) and max(known) <= LOSS_BOUND
        out[v] = row
    return out


def _fmt(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def render(doc: Dict[str, Any]) -> str:
    """The run as markdown: a table per variant, the loss at each step, the doctor's loss against HF's."""
    setup, results, cmp = doc["setup"], doc["variants"], doc["comparison"]
    m = setup["model"]
    lines = [f"LoRA fine-tuning, {doc['device'] or setup['device']}, {doc['date']}: Llama-style "
             f"{results.get('hf', {}).get('params_M') or '?'}M params (hidden {m['hidden_size']}, {m['num_hidden_layers']} "
             f"layers), {setup['dtype']}, LoRA r={setup['lora']['r']} on all linear layers, gradient checkpointing, "
             f"batch {setup['batch']} x {setup['seq']}, AdamW, {setup['steps']} timed steps after {setup['warmup']} warm-up.",
             "", "| variant | status | tokens/s | step (median) | peak memory | vs HF | vs Unsloth | loss first -> last |",
             "|---|---|---|---|---|---|---|---|"]
    for v in doc["order"]:
        r = results.get(v, {"status": "not run", "reason": "the run ended before it"})
        c = cmp.get(v, {})
        if r.get("status") != "ok":
            lines.append(f"| {LABELS.get(v, v)} | {r.get('status')}: {str(r.get('reason', ''))[:120]} | | | | | | |")
            continue
        peak = "-" if r.get("peak_GiB") is None else f"{r['peak_GiB']:.2f} GiB"
        vs_hf = f"{c['speed_vs_hf']:.2f}x" if "speed_vs_hf" in c else ("1.00x" if v == "hf" else "-")
        vs_us = f"{c['speed_vs_unsloth']:.2f}x" if "speed_vs_unsloth" in c else ("1.00x" if v == "unsloth" else "-")
        lines.append(f"| {LABELS.get(v, v)} | ok | {_fmt(r.get('tokens_per_s'))} | {_fmt(r.get('step_ms'), '.1f')} ms | "
                     f"{peak} | {vs_hf} | {vs_us} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} |")
    ok = [v for v in doc["order"] if results.get(v, {}).get("status") == "ok"]
    if ok:
        head = "| step | " + " | ".join(LABELS.get(v, v) for v in ok) + (" | doctor vs HF |" if "doctor" in cmp and "hf" in ok else " |")
        lines += ["", "Loss at each step (w: warm-up, untimed):", "", head, "|" + "---|" * (head.count("|") - 1)]
        n = max(len(results[v]["losses"]) for v in ok)
        diffs = cmp.get("doctor", {}).get("loss_rel_diff_vs_hf")
        for i in range(n):
            label = f"{i + 1}{'w' if i < setup['warmup'] else ''}"
            cells = [f"{results[v]['losses'][i]:.5f}" if i < len(results[v]["losses"]) else "-" for v in ok]
            extra = ""
            if diffs is not None:
                extra = f" | {diffs[i] * 100:+.4f}%" if i < len(diffs) and diffs[i] is not None else " | -"
            lines.append(f"| {label} | " + " | ".join(cells) + extra + " |")
        d = cmp.get("doctor", {})
        if "loss_max_abs_rel_diff_vs_hf" in d and d["loss_max_abs_rel_diff_vs_hf"] is not None:
            verdict = "within" if d["loss_within_bound"] else "OUTSIDE"
            lines += ["", f"doctor vs HF: largest |relative loss difference| {d['loss_max_abs_rel_diff_vs_hf'] * 100:.4f}% "
                          f"over {len(d['loss_rel_diff_vs_hf'])} steps ({verdict} the {LOSS_BOUND * 100:g}% bound)."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="results folder (train.json, train.md, train.log, profile_*.txt)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, help="default: all (hf doctor unsloth liger)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; --smoke 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --smoke 1)")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; --smoke 2)")
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 2048; --smoke 32)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per variant's process (default 300; --smoke 180)")
    p.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, fp32 (CI)")
    p.add_argument("--profile", nargs="*", choices=VARIANTS, default=None, metavar="VARIANT",
                   help="one more step under torch.profiler, per-op table to profile_<variant>.txt (default: doctor)")
    p.add_argument("--model-dir", default=None, help="the prepared model (made once; default: a temp dir per setup)")
    # a child's own arguments (the parent starts it)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile-to", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is None:
        if not args.out:
            p.error("--out DIR is required")
        for name in ("steps", "batch", "seq"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                p.error(f"--{name} must be at least 1")
        if args.warmup is not None and args.warmup < 0:
            p.error("--warmup must be 0 or more")
        if args.timeout is not None and not args.timeout > 0:
            p.error("--timeout must be a positive number of seconds")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child, json.loads(args.setup), args.model_dir, args.result, args.profile_to)
    setup = make_setup(args)
    variants = list(dict.fromkeys(args.variants or VARIANTS))
    profiled = set() if args.profile is None else set(args.profile or ["doctor"])
    timeout = args.timeout or (180.0 if args.smoke else 300.0)
    os.makedirs(args.out, exist_ok=True)
    model_dir = args.model_dir or os.path.join(tempfile.gettempdir(), f"tune-doctor-train-bench-{model_key(setup)}")
    work = tempfile.mkdtemp(prefix="train-bench-")
    doc: Dict[str, Any] = {"benchmark": "train", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                           "setup": setup, "model_dir": model_dir, "order": variants, "variants": {}, "device": None,
                           "complete": False}
    print(f"train benchmark: {', '.join(variants)}; {setup['device']}, {setup['dtype']}, batch {setup['batch']} x "
          f"{setup['seq']}, {setup['warmup']} warm-up + {setup['steps']} timed steps; model {model_dir}", flush=True)
    with open(os.path.join(args.out, "train.log"), "w") as log:
        prep = run_child("prepare", setup, model_dir, work, max(timeout, 300.0), log, False)
        doc["prepare"] = prep
        print(f"  prepare: {'reused' if prep.get('reused') else prep.get('status', 'made')} ({prep['process_s']} s)", flush=True)
        for v in variants:
            if prep.get("status") in ("error", "timeout"):
                res = {"variant": v, "status": "error", "reason": f"the model could not be prepared: {prep.get('reason')}"}
            else:
                res = run_child(v, setup, model_dir, work, timeout, log, v in profiled)
            text = res.pop("profile_text", None)
            if text:
                dest = os.path.join(args.out, f"profile_{v}.txt")
                os.replace(text, dest)
                res["profile"] = os.path.basename(dest)
            doc["variants"][v] = res
            doc["device"] = doc["device"] or res.get("device")
            print(f"  {v}: {_line(res)}", flush=True)
            write(doc, args.out)  # after every variant: a run cut short (a device call's limit) keeps what it measured
    shutil.rmtree(work, ignore_errors=True)  # the children's records are in train.json, their output in train.log
    doc["complete"] = True
    print("\n" + write(doc, args.out), flush=True)
    return 0 if all(r.get("status") in ("ok", "skipped") for r in doc["variants"].values()) else 1


def write(doc: Dict[str, Any], out: str) -> str:
    """train.json and train.md from what has run so far (each written to a temporary name, then renamed); the markdown."""
    doc["comparison"] = compare(doc["variants"], doc["setup"])
    md = render(doc)
    for name, text in (("train.json", json.dumps(doc, indent=1)), ("train.md", md)):
        with open(os.path.join(out, name + ".tmp"), "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    return md


def _line(res: Dict[str, Any]) -> str:
    """One progress line for a finished variant."""
    if res.get("status") != "ok":
        return f"{res.get('status')}: {res.get('reason', '')} ({res.get('process_s')} s)"
    peak = "" if res.get("peak_GiB") is None else f", peak {res['peak_GiB']:.2f} GiB"
    return (f"{_fmt(res.get('tokens_per_s'))} tokens/s, step {_fmt(res.get('step_ms'), '.1f')} ms{peak}, loss "
            f"{res['loss_first']:.4f} -> {res['loss_last']:.4f} ({res['process_s']} s)")


if __name__ == "__main__":
    sys.exit(main())
