"""The `doctor train` loop: LoRA on a local Hugging Face causal LM, resumable, its outputs written atomically.

    summary = train(load_config("train.toml"))

Order of set-up (each step has a reason):
1. the model directory and the dataset are checked before anything heavy loads (a typo costs no minutes);
2. the base model is loaded in the run's precision and patched (doctor.runtime.patch) BEFORE peft wraps it:
   the patches replace modules and forwards of the base model, and peft's LoRA layers then wrap the
   patched projections, so the adapter's weights have the names plain peft expects (the saved adapter
   loads into an unpatched model);
3. gradient checkpointing (non-reentrant: works with frozen embeddings and no input grads);
4. peft LoRA (rank, alpha, dropout, target modules), AdamW over the adapter only, warmup + schedule;
5. from a checkpoint in output_dir/checkpoints, when there is one: adapter, optimizer, scheduler, RNGs, step.
With 2+ ranks (doctor.runtime.train.distributed) the attention choice and the patch's probes run once per
node (local rank 0 first); `[train] parallel = "fsdp"` shards the model in step 4, between peft's wrap and
the optimizer, which is built over the shards (doctor.runtime.train.fsdp).

The loss of an optimizer step is normalised by the number of target tokens over ALL its micro-batches:
each micro-batch's mean loss (what the model returns) is weighted by its share of those tokens, so two
micro-batches accumulated give exactly the loss and gradients of one batch twice the size.

The data order is a pure function of (seed, step): micro-batch m of the run is rows permutation
(seed + epoch) at position m, so a resumed run sees exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from doctor.envvars import DOCTOR_RUNTIME_PROBES
from doctor.errors import DoctorError
from doctor.runtime.train import fsdp, packing
from doctor.runtime.train.attention import choose as choose_attention
from doctor.runtime.train.config import TrainConfig
from doctor.runtime.train.data import Example, read_jsonl, tokenize
from doctor.runtime.train.distributed import SINGLE, Group

SUMMARY = "run_summary.json"
ADAPTER = "adapter"  # output_dir/adapter: adapter_config.json + adapter_model.safetensors (plain peft format)
CHECKPOINTS = "checkpoints"  # output_dir/checkpoints/step-000123/ (only the newest is kept)
STATE = "state.json"  # in a checkpoint: step, loss history, the settings it is only valid for
# Settings a checkpoint depends on: resuming with any of them changed would not continue the same run.
RESUME_KEYS = ("model", "data", "lora", "train.batch_size", "train.grad_accum", "train.steps", "train.epochs",
               "train.lr", "train.schedule", "train.warmup_steps", "train.weight_decay", "train.seed",
               "train.precision", "attention", "patch")

Log = Callable[[str], None]
T = TypeVar("T")


@dataclass
class StepRecord:
    """One optimizer step, as the summary and the progress line show it."""

    step: int
    loss: float  # mean over the step's target tokens
    lr: float
    tokens: int  # real tokens in the step's micro-batches
    seconds: float


@dataclass
class RunSummary:
    """What run_summary.json holds."""

    model: str
    dataset: str
    output_dir: str
    adapter: str
    device: str
    precision: str
    attention: str
    attention_reason: str
    patched: str  # what doctor.runtime.patch did (or why it did not run)
    examples: int
    rows: int
    micro_batches_per_epoch: int
    total_steps: int
    resumed_from: int  # 0: a fresh run
    stopped_at: int  # the last step done in this process
    complete: bool
    trainable_parameters: int
    tokens: int  # real tokens trained on in this process
    seconds: float  # this process's training time
    tokens_per_second: float
    losses: List[float] = field(default_factory=list)  # one per step from step 1 (resumed steps included)
    config: Dict[str, Any] = field(default_factory=dict)


def train(cfg: TrainConfig, log: Optional[Log] = None, stop_after: Optional[int] = None,
          progress: bool = False, color: bool = True, group: Group = SINGLE) -> RunSummary:
    """Run (or continue) the training the config describes; write the adapter and run_summary.json.

    In a data-parallel run (`group`, doctor.runtime.train.distributed) every rank calls this; rank 0 alone
    logs and writes the adapter, checkpoints and summary.
    """
    say = log or (lambda line: print(line, flush=True))
    if not group.lead:  # one voice: rank 0's
        say = _silent
        progress = False
    _check_inputs(cfg)
    lines = read_jsonl(Path(cfg.data.path))  # a broken line is reported before torch and the model load
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # a rank's current device (set_device)
    precision, dtype = _precision(cfg.train.precision, device)
    _seed_everything(cfg.train.seed)
    tokenizer = _load_tokenizer(cfg.model)
    examples = tokenize(lines, tokenizer, cfg.data.seq_len, Path(cfg.data.path), cfg.data.train_on)
    plan = DataPlan(examples, cfg)
    total = plan.total_steps
    # probed once per node: local rank 0 chooses, the node's other ranks take its choice
    impl, why = group.node_first(lambda: choose_attention(cfg.attention, device.type, cfg.data.packing), _same)
    say(f"data: {len(examples)} examples -> {len(plan.rows)} rows of <= {cfg.data.seq_len} tokens "
        f"({'packed' if cfg.data.packing else 'one per row'}), {plan.per_epoch} micro-batches an epoch, {total} steps")

    out = cfg.output_dir
    ckpt = latest_checkpoint(out) if cfg.resume else None
    state = _read_state(ckpt, cfg) if ckpt is not None else None  # a mismatch is reported before the model loads
    sharding = group.world > 1 and cfg.train.parallel == "fsdp"
    # FSDP: rank 0 alone reads the weights, the others build the model on the meta device; only shards go to the GPU
    model, patched = build_model(cfg, dtype, impl, place=not sharding, group=group, empty=sharding and not group.lead)
    if sharding:
        fsdp.shard(model, group.world, device.type == "cuda", group.lead)
    in_force = getattr(model.config, "_attn_implementation", impl) or impl
    if in_force != impl:  # unpacked rows: the patch put its own attention in (it falls back to SDPA for masks)
        impl, why = in_force, "doctor.runtime.patch's attention (no packing: plain causal rows)"
    say(f"patch: {patched}")
    warning = positions_warning(examples, model.config, cfg.data.seq_len)
    if warning:
        say(warning)
    say(f"device: {device.type}, {precision}, attention {impl} ({why})"
        + (f", model sharded over {group.world} ranks (FSDP)" if sharding else ""))
    if cfg.train.parallel == "fsdp" and group.world == 1:
        say("parallel: fsdp with one process: nothing to shard, the whole model trains here")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.train.schedule, cfg.train.warmup_steps, total))
    scaler = _scaler(sharding) if precision == "fp16" else None

    if group.lead:
        out.mkdir(parents=True, exist_ok=True)
    start: int = 0
    losses: List[float] = []
    if ckpt is not None and state is not None:
        start, losses = int(state["step"]), [float(x) for x in state["losses"]]
        _restore(ckpt, model, optimizer, scheduler, scaler, params if sharding else None)
        say(f"resumed from {ckpt} (step {start} of {total})")
    last = total if stop_after is None else min(total, stop_after)
    model.train()
    records: List[StepRecord] = []
    bar = _Progress(progress, total, start, color)
    t0 = time.perf_counter()
    saved = done_step = start
    updating = False
    rng = _rng_state()
    try:
        for step in range(start + 1, last + 1):
            t_step = time.perf_counter()
            rng = _rng_state()  # what a checkpoint of the previous step holds, should Ctrl-C come mid-step
            batches = plan.step_batches(step, tokenizer.pad_token_id)
            if group.world == 1:
                loss = accumulate(model, batches, device, impl, dtype if precision != "fp32" else None, scaler)
            else:  # this rank's micro-batches, weighted by their share of the WHOLE step's targets; summed over ranks
                mine = batches[group.rank::group.world]
                total_targets = sum(b.targets for b in batches)
                if sharding:  # every rank the same number of passes; FSDP sums the gradients (averaged, scaled back)
                    stand_in = next((b for b in batches if b.targets), None)
                    part = accumulate(model, mine, device, impl, dtype if precision != "fp32" else None, scaler,
                                      total=total_targets, stand_in=stand_in,
                                      passes=fsdp.passes(len(batches), group.world), scale=float(group.world))
                else:
                    part = accumulate(model, mine, device, impl, dtype if precision != "fp32" else None, scaler,
                                      total=total_targets)
                loss = group.sum(part)
                if not sharding:
                    group.sum_grads(params)
            if not math.isfinite(loss):  # before the update: the last checkpoint stays a good one
                raise DoctorError(f"step {step}: the loss is {loss}: lower [train] lr or use precision = \"fp32\"")
            lr = scheduler.get_last_lr()[0]
            updating = True  # between here and the record, the state belongs to neither step
            _optimizer_step(params, optimizer, scaler, cfg.train.max_grad_norm)
            scheduler.step()
            losses.append(loss)
            done_step, updating = step, False
            rec = StepRecord(step, loss, lr, sum(b.tokens for b in batches), time.perf_counter() - t_step)
            records.append(rec)
            bar.update(rec)
            if step % cfg.train.log_every == 0 or step == last:
                tps = sum(r.tokens for r in records) / max(sum(r.seconds for r in records), 1e-9)
                say(f"step {step}/{total}  loss {loss:.4f}  lr {lr:.3g}  tokens/s {tps:,.0f}")
            if (cfg.train.save_every and step % cfg.train.save_every == 0) or step == last:
                whole = _gather(model, optimizer) if sharding else None  # FSDP: a collective of every rank
                if group.lead:
                    save_checkpoint(out, step, losses, cfg, model, optimizer, scheduler, scaler, whole=whole)
                saved = step
    except KeyboardInterrupt:
        # Ctrl-C between two updates: keep the finished steps (a half-accumulated step is simply redone).
        if group.lead and sharding and not updating and done_step > saved:
            # the adapter is sharded: gathering it needs every rank, and Ctrl-C reached rank 0 alone
            say(f"interrupted: the sharded (FSDP) adapter cannot be gathered by rank 0 alone: no checkpoint of "
                f"step {done_step}; " + (f"the last one is step {saved}" if saved else "none was saved yet")
                + " (set [train] save_every); run again to continue")
        elif group.lead and not updating and done_step > saved:
            optimizer.zero_grad(set_to_none=True)
            if done_step < step:  # interrupted inside the next step: the RNGs as they were when it began
                save_checkpoint(out, done_step, losses, cfg, model, optimizer, scheduler, scaler, rng=rng)
            else:
                save_checkpoint(out, done_step, losses, cfg, model, optimizer, scheduler, scaler)
            say(f"interrupted: checkpoint at step {done_step}; run again to continue")
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    done = last == total
    adapter_dir = out / ADAPTER
    if done:
        whole = _gather(model, None) if sharding else None  # FSDP: a collective of every rank
        if group.lead:
            save_adapter(model, adapter_dir, whole[0] if whole else None)
    tokens = sum(r.tokens for r in records)
    summary = RunSummary(
        model=str(cfg.model), dataset=str(cfg.data.path), output_dir=str(out), adapter=str(adapter_dir) if done else "",
        device=str(device), precision=precision, attention=impl, attention_reason=why, patched=patched,
        examples=len(examples), rows=len(plan.rows), micro_batches_per_epoch=plan.per_epoch, total_steps=total,
        resumed_from=start, stopped_at=max(last, start), complete=done,
        trainable_parameters=sum(p.numel() for p in params), tokens=tokens, seconds=round(seconds, 3),
        tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else 0.0, losses=losses,
        config=_config_dict(cfg))
    if group.lead:
        blob = asdict(summary)
        if group.world > 1:  # a key only data-parallel runs have: a single process's summary stays as it was
            blob["world_size"] = group.world
        write_json(out / SUMMARY, blob)
    say(f"{'done' if done else 'stopped'}: step {summary.stopped_at}/{total}, loss {losses[-1] if losses else float('nan'):.4f}"
        + (f", adapter in {adapter_dir}" if done else f"; run again to continue from step {summary.stopped_at}"))
    return summary


def _scaler(sharding: bool) -> Any:
    """fp16's loss scaler. Sharded: FSDP's, which all-reduces the found-inf flag, so that a rank whose shard
    overflowed does not skip a step the others take (the plain scaler sees only its own shards)."""
    import torch

    if sharding:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler("cuda")
    return torch.amp.GradScaler("cuda")


def _silent(line: str) -> None:
    """The log of a rank other than 0."""


def _same(value: T) -> T:
    """What a rank takes from its node's local rank 0 as it is."""
    return value


# ----------------------------------------------------------------------------- inputs and the model


def _check_inputs(cfg: TrainConfig) -> None:
    """Missing model directory or dataset: one line before torch is even imported."""
    if not cfg.model.is_dir():
        raise DoctorError(f"{cfg.source.name}: model: {cfg.model}: no such directory (a local Hugging Face model folder)")
    if not (cfg.model / "config.json").is_file():
        raise DoctorError(f"{cfg.source.name}: model: {cfg.model}: no config.json (not a Hugging Face model folder)")
    if cfg.patch:
        _check_architecture(cfg)
    data = Path(cfg.data.path)
    if not data.is_file():
        why = "a folder, not a JSONL file" if data.is_dir() else "no such file"
        raise DoctorError(f"{cfg.source.name}: [data] path: {cfg.data.path}: {why}")
    _check_output_dir(cfg)


def _check_architecture(cfg: TrainConfig) -> None:
    """patch = true on a model doctor.runtime.patch does not take: one line now, not after the model has loaded."""
    from doctor.runtime.patching import FAMILIES, REFUSED

    try:
        archs = json.loads((cfg.model / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # transformers' loader says what is wrong with the file
    if archs and not any(a in FAMILIES for a in archs):
        why = REFUSED.get(archs[0], "not of the Llama family")
        raise DoctorError(f"{cfg.source.name}: patch: {cfg.model} is a {archs[0]} ({why}); doctor.runtime.patch takes "
                          f"{', '.join(FAMILIES)}: set patch = false to train it on transformers' own code")


def _check_output_dir(cfg: TrainConfig) -> None:
    """output_dir must be (or be creatable as) a writable folder: found out now, not after the model loaded."""
    out = cfg.output_dir
    for folder in (out, *out.parents):  # the nearest part that exists decides
        if not folder.exists():
            continue
        if not folder.is_dir():
            what = "is a file" if folder == out else f"cannot be created: {folder} is a file"
            raise DoctorError(f"{cfg.source.name}: output_dir: {out} {what} (name a folder)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DoctorError(f"{cfg.source.name}: output_dir: {folder}: not writable by this user")
        return


def positions_warning(examples: Sequence[Example], config: Any, seq_len: int) -> str:
    """A line when examples run past the model's trained positions (RoPE extrapolates there: quality, not a crash);
    "" otherwise. Packing restarts positions per example, so the longest example is what counts."""
    limit = getattr(config, "max_position_embeddings", None)
    longest = max((len(e.input_ids) for e in examples), default=0)
    if not isinstance(limit, int) or longest <= limit:
        return ""
    return (f"warning: examples of up to {longest} tokens, past the model's {limit} positions "
            f"(max_position_embeddings): set [data] seq_len = {limit} to cut them there (now {seq_len})")


def _precision(requested: str, device: Any) -> Tuple[str, Any]:
    """(name, torch dtype): auto is bf16 where the GPU supports it, else fp16; fp32 on CPU."""
    import torch

    name = requested
    if requested == "auto":
        if device.type != "cuda":
            name = "fp32"
        else:
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return name, {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:  # transformers raises OSError/ValueError/... for a folder without a usable tokenizer
        raise DoctorError(f"{model_dir}: cannot load its tokenizer ({' '.join(str(e).split())[:200]})") from None
    if tok.pad_token_id is None:  # padding is never a target; any id will do, EOS is the usual choice
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def build_model(cfg: TrainConfig, dtype: Any, attention: str, place: bool = True,
                group: Group = SINGLE, empty: bool = False) -> Tuple[Any, str]:
    """The base model in `dtype`, patched, checkpointed, wrapped in peft LoRA: (model, what patch did).

    place: move it to this process's device (False: it stays on the CPU, for FSDP to shard). group: the ranks
    patch once per node (local rank 0 probes; the others then read the verdicts it stored). empty: the model's
    structure on the meta device, no weights read (an FSDP rank other than 0: rank 0's weights reach its shards)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: the run prints its own lines
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if empty:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(cfg.model)), dtype=dtype,
                                                         attn_implementation=attention)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(cfg.model), dtype=dtype, attn_implementation=attention)
    except Exception as e:
        raise DoctorError(f"{cfg.model}: cannot load the model ({' '.join(str(e).split())[:240]})") from None
    if place:
        model.to(device)
    patched = group.node_first(lambda: _patch(model, cfg), lambda _: _patch(model, cfg, probe=False))
    if cfg.train.gradient_checkpointing:
        kw = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x name (the old one warns)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    model.config.use_cache = False
    lora = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.targets), task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise DoctorError(f"{cfg.source.name}: [lora] targets: {' '.join(str(e).split())[:240]}") from None
    return model, patched


def _patch(model: Any, cfg: TrainConfig, probe: bool = True) -> str:
    """doctor.runtime.patch on the base model (before peft), keeping attention that can see packed rows' boundaries.

    probe=False: verdicts from the store only (DOCTOR_RUNTIME_PROBES=0 for the call) and its note unsaid: a rank
    whose node's local rank 0 has just probed and said it."""
    if not cfg.patch:
        return "off (patch = false in the config)"
    import doctor.runtime

    # Packed rows need the document mask of the attention implementation chosen for them (flash-attn varlen,
    # FlexAttention, or the explicit torch mask), and an implementation named in the config is the user's
    # choice: in both cases attention stays unpatched; the other ops are patched all the same.
    why = "packed rows need a document mask" if cfg.data.packing else (
        f"attention = {cfg.attention!r} in the config" if cfg.attention != "auto" else "")
    skip = ("attention",) if why else ()
    if probe:
        doctor.runtime.patch(model, skip=skip, seq_len=cfg.data.seq_len)  # attention probed at it
    else:
        with _probes_off():
            doctor.runtime.patch(model, skip=skip, seq_len=cfg.data.seq_len)
    return "applied" + (f" (attention kept: {why})" if why else "")


@contextlib.contextmanager
def _probes_off() -> Iterator[None]:
    """DOCTOR_RUNTIME_PROBES=0 and stderr swallowed for the block (the dispatcher reads os.environ and prints its note)."""
    before = os.environ.get(DOCTOR_RUNTIME_PROBES)
    os.environ[DOCTOR_RUNTIME_PROBES] = "0"
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if before is None:
            os.environ.pop(DOCTOR_RUNTIME_PROBES, None)
        else:
            os.environ[DOCTOR_RUNTIME_PROBES] = before


# ----------------------------------------------------------------------------- data order


class DataPlan:
    """Rows, and which micro-batches each optimizer step takes: a pure function of (seed, step)."""

    def __init__(self, examples: Sequence[Example], cfg: TrainConfig) -> None:
        """Shuffle the examples once (seed), pack them into rows, and size the run in steps."""
        self.examples = list(examples)
        self.cfg = cfg
        order = list(range(len(self.examples)))
        random.Random(cfg.train.seed).shuffle(order)  # packing neighbours differ run to run only by seed
        self.rows = [[order[i] for i in row] for row in
                     packing.rows([self.examples[i] for i in order], cfg.data.seq_len, cfg.data.packing)]
        self.per_epoch = max(1, math.ceil(len(self.rows) / cfg.train.batch_size))
        accum = cfg.train.grad_accum
        # with epochs, the run is that many micro-batches (the last step may accumulate fewer): rounding up to whole
        # steps would train 4 epochs for `epochs = 1` on a one-micro-batch dataset with grad_accum = 4
        self.micro_batches = 0 if cfg.train.steps else max(1, math.ceil(cfg.train.epochs * self.per_epoch))
        self.total_steps = cfg.train.steps or math.ceil(self.micro_batches / accum)
        self._perm: Dict[int, List[int]] = {}

    def _permutation(self, epoch: int) -> List[int]:
        if epoch not in self._perm:
            perm = list(range(len(self.rows)))
            random.Random(f"{self.cfg.train.seed}:{epoch}").shuffle(perm)
            self._perm = {epoch: perm}  # one epoch at a time is all a run needs
        return self._perm[epoch]

    def micro_batch_rows(self, m: int) -> List[List[Example]]:
        """The rows of the run's micro-batch number m (0-based, across epochs)."""
        epoch, pos = divmod(m, self.per_epoch)
        perm = self._permutation(epoch)
        b = self.cfg.train.batch_size
        return [[self.examples[i] for i in self.rows[r]] for r in perm[pos * b:(pos + 1) * b]]

    def step_batches(self, step: int, pad_id: int) -> List[packing.MicroBatch]:
        """The grad_accum micro-batches of optimizer step `step` (1-based)."""
        accum = self.cfg.train.grad_accum
        end = min(step * accum, self.micro_batches) if self.micro_batches else step * accum
        return [packing.collate(self.micro_batch_rows(m), pad_id, self.cfg.data.packing)
                for m in range((step - 1) * accum, end)]


# ----------------------------------------------------------------------------- one step


def accumulate(model: Any, batches: Sequence[packing.MicroBatch], device: Any, attention: str,
               autocast_dtype: Any = None, scaler: Any = None, total: Optional[int] = None,
               stand_in: Optional[packing.MicroBatch] = None, passes: int = 0, scale: float = 1.0) -> float:
    """Forward and backward over the micro-batches of one step; returns the step's loss (mean over all its targets).

    Each micro-batch's mean loss is weighted by targets_i / targets_total before backward, so the gradients
    summed over the micro-batches are those of the mean over every target token of the step. `total`: the
    targets of the whole step when these batches are one rank's share of it (the result is then that share's part).
    FSDP (doctor.runtime.train.fsdp): `passes` forward/backward passes exactly, a micro-batch without targets and
    the passes past this share running `stand_in` at weight 0; `scale` multiplies the weights (not the loss).
    """
    import torch

    if total is None:
        total = sum(b.targets for b in batches)
    if total == 0:
        raise DoctorError("a step has no target tokens (every example shorter than 2 tokens?)")
    loss_sum = 0.0
    mask_dtype = autocast_dtype or next(model.parameters()).dtype
    runs = [(b, 1.0) if b.targets else (stand_in, 0.0) for b in batches]
    if stand_in is not None:
        runs += [(stand_in, 0.0)] * (passes - len(runs))
    for b, on in runs:
        if b is None or b.targets == 0:  # no stand-in (no FSDP): a pass with nothing to learn is skipped
            continue
        kw = packing.model_inputs(b, device, attention, mask_dtype)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(**kw).loss
        weighted = loss.float() * (on * scale * b.targets / total)
        (scaler.scale(weighted) if scaler is not None else weighted).backward()
        loss_sum += on * float(loss.detach()) * b.targets
    return loss_sum / total


def _optimizer_step(params: Sequence[Any], optimizer: Any, scaler: Any, max_norm: float) -> None:
    import torch

    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _schedule(name: str, warmup: int, total: int) -> Callable[[int], float]:
    """LambdaLR factor at scheduler step s (0-based): linear warmup, then constant / linear / cosine to 0."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        if name == "constant":
            return 1.0
        frac = (s - warmup) / max(1, total - warmup)
        frac = min(max(frac, 0.0), 1.0)
        return 1.0 - frac if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return factor


# ----------------------------------------------------------------------------- saving and resuming


def write_json(path: Path, obj: Any) -> None:
    """JSON written to a temporary file beside path, then os.replace'd: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder tmp at final: an existing one is moved aside first and removed after."""
    old = final.with_name(f".{final.name}.old.{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _gather(model: Any, optimizer: Any) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """FSDP: the adapter (by parameter name) and the optimizer state, whole (collectives: every rank calls this)."""
    return fsdp.full_adapter(model), (fsdp.full_optimizer_state(optimizer) if optimizer is not None else None)


def save_adapter(model: Any, path: Path, whole: Optional[Dict[str, Any]] = None) -> None:
    """The adapter in plain peft format (PeftModel.from_pretrained loads it), written whole or not at all.

    whole: the adapter's tensors by parameter name, when the model's own are shards (FSDP)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if whole is not None:
        model.save_pretrained(str(tmp), state_dict=whole)  # peft filters and renames them as it does its own
    else:
        model.save_pretrained(str(tmp))
    _replace_dir(tmp, path)


def latest_checkpoint(out: Path) -> Optional[Path]:
    """The newest complete checkpoint in out/checkpoints (a folder is complete once renamed into place)."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / STATE).is_file())
    return done[-1] if done else None


def _rng_state() -> Dict[str, Any]:
    import torch

    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def save_checkpoint(out: Path, step: int, losses: Sequence[float], cfg: TrainConfig, model: Any, optimizer: Any,
                    scheduler: Any, scaler: Any, rng: Optional[Dict[str, Any]] = None,
                    whole: Optional[Tuple[Dict[str, Any], Optional[Dict[str, Any]]]] = None) -> Path:
    """Adapter weights, optimizer, scheduler, RNG states (now, or `rng`) and the loss history; older ones removed.

    whole: (adapter by parameter name, optimizer state) gathered from the shards (FSDP): saved in the same format."""
    import torch
    from peft import get_peft_model_state_dict

    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    adapter = get_peft_model_state_dict(model, state_dict=whole[0]) if whole else get_peft_model_state_dict(model)
    optim = whole[1] if whole and whole[1] is not None else optimizer.state_dict()
    torch.save({"adapter": adapter, "optimizer": optim,
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rng if rng is not None else _rng_state()}, tmp / "training_state.pt")
    state = {"step": step, "losses": list(losses), "settings": _resume_settings(cfg)}
    write_json(tmp / STATE, state)  # last: its presence marks the folder complete
    _replace_dir(tmp, final)
    for older in root.glob("step-*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def _read_state(ckpt: Path, cfg: TrainConfig) -> Dict[str, Any]:
    """A checkpoint's state.json, refused when it was made with settings the run depends on that now differ."""
    try:
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
        step, losses, settings = int(state["step"]), state["losses"], state["settings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DoctorError(f"{ckpt}: unreadable checkpoint ({type(e).__name__}: {e}); delete it to start over") from None
    changed = [k for k, v in _resume_settings(cfg).items() if settings.get(k) != v]
    if changed:
        raise DoctorError(f"{ckpt}: the checkpoint was made with other settings ({', '.join(changed)} changed); "
                          f"set resume = false or use another output_dir to start a new run")
    return {"step": step, "losses": losses}


def _restore(ckpt: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any,
             sharded: Optional[List[Any]] = None) -> None:
    """Adapter weights, optimizer, scheduler, grad scaler and RNG states from a checkpoint.

    sharded: the trainable parameters when they are FSDP shards (each rank takes its shard of the saved tensors)."""
    import torch
    from peft import set_peft_model_state_dict

    try:
        blob = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as e:
        raise DoctorError(f"{ckpt}: unreadable checkpoint ({e}); delete it to start over") from None
    if sharded is not None:
        fsdp.load_adapter(model, blob["adapter"])
        optimizer.load_state_dict(fsdp.shard_optimizer_state(blob["optimizer"], sharded))
    else:
        set_peft_model_state_dict(model, blob["adapter"])
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])
    random.setstate(_tuplify(blob["rng"]["python"]))
    torch.set_rng_state(blob["rng"]["torch"])
    if torch.cuda.is_available() and blob["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _config_dict(cfg: TrainConfig) -> Dict[str, Any]:
    return {"source": str(cfg.source), "model": str(cfg.model), "output_dir": str(cfg.output_dir),
            "data": asdict(cfg.data), "lora": {**asdict(cfg.lora), "targets": list(cfg.lora.targets)},
            "train": asdict(cfg.train), "resume": cfg.resume, "patch": cfg.patch, "attention": cfg.attention}


def _resume_settings(cfg: TrainConfig) -> Dict[str, Any]:
    d = _config_dict(cfg)
    out: Dict[str, Any] = {}
    for key in RESUME_KEYS:
        table, _, name = key.partition(".")
        out[key] = d[table][name] if name else d[table]
    return json.loads(json.dumps(out))  # the form it has after a round trip through state.json


# ----------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar with loss and tokens/s when stdout is a terminal; nothing otherwise (lines are logged)."""

    def __init__(self, enabled: bool, total: int, start: int, color: bool = True) -> None:
        """Start the bar at `start` of `total` steps."""
        self._bar: Any = None
        if not (enabled and sys.stdout.isatty()):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(no_color=True) if not color else None  # rich reads NO_COLOR itself
        self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                             TimeElapsedColumn(), transient=False, console=console)
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=start, info="")
        self._tokens = 0
        self._seconds = 0.0

    def update(self, rec: StepRecord) -> None:
        """Advance one step."""
        if self._bar is None:
            return
        self._tokens += rec.tokens
        self._seconds += rec.seconds
        self._bar.update(self._task, completed=rec.step,
                         info=f"loss {rec.loss:.4f}  {self._tokens / max(self._seconds, 1e-9):,.0f} tok/s")

    def close(self) -> None:
        """Stop the bar (leaves the last state on screen)."""
        if self._bar is not None:
            self._bar.stop()
