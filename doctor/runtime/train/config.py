"""`doctor train CONFIG.toml`: the TOML file as a typed, validated TrainConfig.

Strict on purpose: a misspelt key (`learning_rate` for `lr`) would otherwise be silently ignored and the run
would train with the default. Every problem is ONE `DoctorError` line naming the file, the table and the
key, e.g. `train.toml: [train] batch_size: expected an integer, got the string '8'`. Relative paths are
taken from the config file's folder, so a config works from any working directory.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar, Union

from doctor.errors import DoctorError

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomli is a dependency of the doctor below 3.11
    import tomli as tomllib

SCHEDULES = ("constant", "linear", "cosine")  # after the warmup: flat, linear to 0, cosine to 0
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # auto: bf16 where the GPU has it, else fp16; fp32 on CPU
# With 2+ ranks: ddp keeps a whole model on every rank (one all-reduce of the adapter's gradients a step);
# fsdp shards the model over the ranks (torch FSDP2, fully_shard): for a model that does not fit one GPU.
PARALLELS = ("ddp", "fsdp")
# Which tokens of a chat line are targets: all of them (trl's SFTTrainer default), or the assistant's turns alone.
TRAIN_ON = ("all", "assistant")
# The projections of the Llama family's decoder layers: what "all linear layers" means for LoRA here.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class DataConfig:
    """[data]: the JSONL dataset and how it becomes token rows."""

    path: str = ""  # JSONL file, one {"text": ...} or {"messages": [...]} object per line (required)
    seq_len: int = 2048  # tokens per row: longer examples are truncated, shorter ones packed up to it
    packing: bool = True  # several short examples per row, attention kept inside each (padding-free)
    train_on: str = "all"  # one of TRAIN_ON: chat lines' targets (text lines are trained on every token)


@dataclass(frozen=True)
class LoraConfig:
    """[lora]: the adapter (peft LoRA) trained on the frozen base model."""

    rank: int = 16  # r: rank of the update
    alpha: int = 32  # scaling numerator: the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapter's input
    targets: Tuple[str, ...] = ALL_LINEAR  # module names to adapt (default: every projection of the layers)


@dataclass(frozen=True)
class TrainSettings:
    """[train]: the optimisation."""

    batch_size: int = 8  # rows per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (the loss is normalised over all their tokens)
    steps: int = 0  # optimizer steps; 0: run `epochs` over the data instead
    epochs: float = 1.0  # passes over the data when steps is 0 (fractions allowed)
    lr: float = 2e-4  # peak learning rate (AdamW)
    schedule: str = "cosine"  # one of SCHEDULES, after warmup_steps of linear warmup
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient clipping; 0 turns it off
    precision: str = "auto"  # one of PRECISIONS
    gradient_checkpointing: bool = True  # recompute activations in the backward: memory for time
    seed: int = 0  # data order, adapter init and dropout
    save_every: int = 0  # save a resumable checkpoint every N steps (0: only at the end)
    log_every: int = 1  # print loss and tokens/s every N steps
    parallel: str = "ddp"  # one of PARALLELS: how 2+ ranks (--nproc, torchrun) share the model; one process: ignored


@dataclass(frozen=True)
class TrainConfig:
    """The whole `doctor train` configuration, paths already resolved against the config file's folder."""

    source: Path  # the TOML file it came from (named in errors)
    model: Path  # local Hugging Face model directory (config.json, weights, tokenizer)
    output_dir: Path  # adapter, run_summary.json and checkpoints/ go here
    data: DataConfig
    lora: LoraConfig
    train: TrainSettings
    resume: bool = True  # continue from the last checkpoint in output_dir when there is one
    patch: bool = True  # apply doctor.runtime.patch (the fast kernels) to the base model
    attention: str = "auto"  # packed attention: auto, sdpa (torch mask), flex_attention, flash_attention_2


ATTENTIONS = ("auto", "sdpa", "flex_attention", "flash_attention_2")
_TOP = {"model": str, "output_dir": str, "resume": bool, "patch": bool, "attention": str}
_SECTIONS: Dict[str, type] = {"data": DataConfig, "lora": LoraConfig, "train": TrainSettings}
_TOP_FIRST = "top-level keys go above the first [table]"

T = TypeVar("T")


def load_config(path: Union[str, Path]) -> TrainConfig:
    """Read and validate a `doctor train` TOML file (DoctorError, one line, on any problem)."""
    src = Path(path)
    try:
        raw = src.read_bytes()
    except OSError as e:
        raise DoctorError(f"{src}: cannot read the config ({e.strerror or e})") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DoctorError(f"{src}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise DoctorError(f"{src}: not valid TOML ({e})") from None
    return parse_config(doc, src)


def parse_config(doc: Mapping[str, Any], src: Path) -> TrainConfig:
    """A TrainConfig from an already-parsed TOML document (paths relative to src's folder)."""
    name = src.name
    known = sorted([*_TOP, *_SECTIONS])
    for key, value in doc.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise DoctorError(f"{name}: {key}: expected a table [{key}], got {_describe(value)}")
        elif key not in _TOP:
            raise DoctorError(f"{name}: unknown key {key!r} (known: {', '.join(known)})")
        else:
            _check(name, "", key, value, _TOP[key])
    for key in ("model", "output_dir"):
        if key not in doc:
            inside = [t for t in _SECTIONS if isinstance(doc.get(t), dict) and key in doc[t]]
            raise DoctorError(f"{name}: missing key {key!r} (the {'model directory' if key == 'model' else 'output folder'})"
                              + (f": it is inside [{inside[0]}]; {_TOP_FIRST}" if inside else ""))
    data = _section(name, "data", doc.get("data", {}), DataConfig)
    lora = _section(name, "lora", doc.get("lora", {}), LoraConfig)
    train = _section(name, "train", doc.get("train", {}), TrainSettings)
    if not data.path:
        raise DoctorError(f"{name}: [data] path: missing (the JSONL dataset)")
    _validate(name, data, lora, train, doc)
    base = src.resolve().parent
    return TrainConfig(source=src, model=_path(base, doc["model"]), output_dir=_path(base, doc["output_dir"]),
                       data=dataclasses.replace(data, path=str(_path(base, data.path))), lora=lora, train=train,
                       resume=doc.get("resume", True), patch=doc.get("patch", True),
                       attention=doc.get("attention", "auto"))


def _path(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _section(name: str, table: str, values: Mapping[str, Any], cls: Type[T]) -> T:
    """One [table] as its dataclass: unknown keys and wrong types are errors naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: Dict[str, Any] = {}
    for key, value in values.items():
        if key in _TOP:  # TOML puts every key after [table] inside it: the usual slip
            raise DoctorError(f"{name}: [{table}] unknown key {key!r}: {key} is a top-level key; {_TOP_FIRST}")
        if key not in fields:
            raise DoctorError(f"{name}: [{table}] unknown key {key!r} (known: {', '.join(sorted(fields))})")
        kwargs[key] = _check(name, table, key, value, fields[key].type)
    return cls(**kwargs)


def _check(name: str, table: str, key: str, value: Any, typ: Any) -> Any:
    """value if it has the declared type (ints accepted for floats; lists of strings as tuples), else DoctorError."""
    where = f"{name}: [{table}] {key}" if table else f"{name}: {key}"
    typ = {"int": int, "float": float, "bool": bool, "str": str, "Tuple[str, ...]": tuple}.get(typ, typ) if isinstance(typ, str) else typ
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif typ is str:
        ok = isinstance(value, str)
    else:  # Tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(typ, "a list of strings")
        raise DoctorError(f"{where}: expected {want}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "the integer", float: "the number", str: "the string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    return kind if isinstance(value, (list, dict)) else f"{kind} {value!r}"


def _validate(name: str, data: DataConfig, lora: LoraConfig, train: TrainSettings, doc: Mapping[str, Any]) -> None:
    """Ranges and choices: a value of the right type that still cannot work."""
    def bad(where: str, why: str) -> DoctorError:
        return DoctorError(f"{name}: {where}: {why}")

    for table, obj, key in (("data", data, "seq_len"), ("lora", lora, "rank"), ("train", train, "batch_size"),
                            ("train", train, "grad_accum"), ("train", train, "log_every")):
        if getattr(obj, key) < 1:
            raise bad(f"[{table}] {key}", f"must be at least 1, got {getattr(obj, key)}")
    for key in ("steps", "warmup_steps", "save_every", "seed"):
        if getattr(train, key) < 0:
            raise bad(f"[train] {key}", f"must be 0 or more, got {getattr(train, key)}")
    for key in ("lr", "epochs"):
        if not getattr(train, key) > 0:
            raise bad(f"[train] {key}", f"must be above 0, got {getattr(train, key)}")
    for key in ("weight_decay", "max_grad_norm"):
        if getattr(train, key) < 0:
            raise bad(f"[train] {key}", f"must be 0 or more, got {getattr(train, key)}")
    if not 0 <= lora.dropout < 1:
        raise bad("[lora] dropout", f"must be in [0, 1), got {lora.dropout}")
    if lora.alpha <= 0:
        raise bad("[lora] alpha", f"must be above 0, got {lora.alpha}")
    if not lora.targets:
        raise bad("[lora] targets", "empty: name at least one module (e.g. \"q_proj\")")
    if data.train_on not in TRAIN_ON:
        raise bad("[data] train_on", f"unknown choice {data.train_on!r} (choose from {', '.join(TRAIN_ON)})")
    if train.schedule not in SCHEDULES:
        raise bad("[train] schedule", f"unknown schedule {train.schedule!r} (choose from {', '.join(SCHEDULES)})")
    if train.precision not in PRECISIONS:
        raise bad("[train] precision", f"unknown precision {train.precision!r} (choose from {', '.join(PRECISIONS)})")
    if train.parallel not in PARALLELS:
        raise bad("[train] parallel", f"unknown mode {train.parallel!r} (choose from {', '.join(PARALLELS)})")
    attention: Optional[str] = doc.get("attention")
    if attention is not None and attention not in ATTENTIONS:
        raise bad("attention", f"unknown attention {attention!r} (choose from {', '.join(ATTENTIONS)})")
