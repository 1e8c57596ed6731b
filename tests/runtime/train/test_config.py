"""The TOML config of `doctor train`: a complete file parses to typed values; every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctor.errors import DoctorError
from doctor.runtime.train.config import ALL_LINEAR, load_config

FULL = """
model = "models/tiny"
output_dir = "runs/one"
resume = false
patch = true
attention = "sdpa"

[data]
path = "data/train.jsonl"
seq_len = 512
packing = false

[lora]
rank = 8
alpha = 16
dropout = 0.05
targets = ["q_proj", "v_proj"]

[train]
batch_size = 4
grad_accum = 8
epochs = 2
lr = 1e-4
schedule = "linear"
warmup_steps = 10
weight_decay = 0.01
max_grad_norm = 0.5
precision = "bf16"
gradient_checkpointing = false
seed = 7
save_every = 100
log_every = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "train.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_complete_config_parses_with_paths_from_its_folder(tmp_path: Path) -> None:
    """Every key read with its type; relative paths resolved against the config's folder, not the cwd."""
    cfg = load_config(write(tmp_path, FULL))
    root = tmp_path.resolve()
    assert cfg.model == root / "models/tiny" and cfg.output_dir == root / "runs/one"
    assert cfg.data.path == str(root / "data/train.jsonl") and cfg.data.seq_len == 512 and cfg.data.packing is False
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets) == (8, 16, 0.05, ("q_proj", "v_proj"))
    t = cfg.train
    assert (t.batch_size, t.grad_accum, t.steps, t.epochs, t.lr, t.schedule) == (4, 8, 0, 2.0, 1e-4, "linear")
    assert (t.warmup_steps, t.weight_decay, t.max_grad_norm, t.precision) == (10, 0.01, 0.5, "bf16")
    assert (t.gradient_checkpointing, t.seed, t.save_every, t.log_every) == (False, 7, 100, 10)
    assert (cfg.resume, cfg.patch, cfg.attention) == (False, True, "sdpa")


def test_defaults_fill_what_a_minimal_config_leaves_out(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'model = "/m"\noutput_dir = "/o"\n[data]\npath = "/d.jsonl"\n'))
    assert cfg.model == Path("/m") and cfg.data.packing is True and cfg.lora.targets == ALL_LINEAR
    assert cfg.train.precision == "auto" and cfg.train.grad_accum == 1 and cfg.resume is True


MINIMAL = 'model = "m"\noutput_dir = "o"\n[data]\npath = "d.jsonl"\n'


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "[train]\nlearning_rate = 1e-4\n", "train.toml: [train] unknown key 'learning_rate' (known: "),
    (MINIMAL + "[trian]\nlr = 1e-4\n", "train.toml: unknown key 'trian' (known: attention, data, lora, model"),
    ("modle = 'm'\n" + MINIMAL, "train.toml: unknown key 'modle'"),
    (MINIMAL + "[train]\nbatch_size = \"8\"\n", "train.toml: [train] batch_size: expected an integer, got the string '8'"),
    (MINIMAL + "[train]\nbatch_size = 2.5\n", "train.toml: [train] batch_size: expected an integer, got the number 2.5"),
    (MINIMAL + "[train]\nlr = true\n", "train.toml: [train] lr: expected a number, got a boolean"),
    (MINIMAL + "[data]\n", "not valid TOML"),  # a table defined twice
    (MINIMAL.replace('[data]\npath = "d.jsonl"\n', "[data]\npacking = 1\n"), "[data] packing: expected true or false, got the integer 1"),
    (MINIMAL + "[lora]\ntargets = \"q_proj\"\n", "[lora] targets: expected a list of strings, got the string 'q_proj'"),
    (MINIMAL + "[lora]\ntargets = []\n", "[lora] targets: empty"),
    ("output_dir = 'o'\n[data]\npath = 'd'\n", "train.toml: missing key 'model'"),
    ("model = 'm'\noutput_dir = 'o'\n", "train.toml: [data] path: missing"),
    ("model = 3\noutput_dir = 'o'\n[data]\npath = 'd'\n", "train.toml: model: expected a string, got the integer 3"),
    ("data = 'x'\nmodel = 'm'\noutput_dir = 'o'\n", "train.toml: data: expected a table [data], got the string 'x'"),
    (MINIMAL + "[train]\nbatch_size = 0\n", "[train] batch_size: must be at least 1, got 0"),
    (MINIMAL + "[train]\nschedule = 'cosine-restarts'\n", "[train] schedule: unknown schedule 'cosine-restarts'"),
    (MINIMAL + "[train]\nprecision = 'fp8'\n", "[train] precision: unknown precision 'fp8'"),
    (MINIMAL.replace('path = "d.jsonl"\n', 'path = "d.jsonl"\ntrain_on = "completion"\n'),
     "[data] train_on: unknown choice 'completion' (choose from all, assistant)"),
    (MINIMAL + "[lora]\ndropout = 1.0\n", "[lora] dropout: must be in [0, 1), got 1.0"),
    ("attention = 'xformers'\n" + MINIMAL, "attention: unknown attention 'xformers'"),
    (MINIMAL + "[train]\nlr = 0\n", "[train] lr: must be above 0, got 0.0"),
    # top-level keys written below a [table] land inside it (TOML): the error says so
    ("[data]\npath = 'd'\nmodel = 'm'\noutput_dir = 'o'\n",
     "train.toml: missing key 'model' (the model directory): it is inside [data]; top-level keys go above the first"),
    (MINIMAL + "[train]\nlr = 1e-4\npatch = false\n",
     "train.toml: [train] unknown key 'patch': patch is a top-level key; top-level keys go above the first [table]"),
])
def test_bad_configs_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DoctorError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unreadable_or_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DoctorError, match="cannot read the config"):
        load_config(tmp_path / "absent.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe model")
    with pytest.raises(DoctorError, match="not UTF-8"):
        load_config(p)


def test_the_readme_example_is_complete_and_parses(tmp_path: Path) -> None:
    """README's "Fine-tuning: doctor train" TOML block names every key, with the default values, and loads."""
    import dataclasses
    import re

    from doctor.runtime.train.config import DataConfig, LoraConfig, TrainSettings
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Fine-tuning: doctor train\n(.*?)(?=^## )", readme, re.M | re.S)
    assert section, "README.md lost its '## Fine-tuning: doctor train' section"
    block = re.search(r"```toml\n(.*?)```", section.group(1), re.S)
    assert block
    cfg = load_config(write(tmp_path, block.group(1)))
    for table, cls in (("data", DataConfig), ("lora", LoraConfig), ("train", TrainSettings)):
        section_obj = getattr(cfg, table)
        for f in dataclasses.fields(cls):
            if f.name != "path":  # the one required key of a table
                assert getattr(section_obj, f.name) == f.default, f"README's [{table}] {f.name} is not the default"
    keys = set(re.findall(r"^(\w+) =", block.group(1), re.M))
    expected = {f.name for cls in (DataConfig, LoraConfig, TrainSettings) for f in dataclasses.fields(cls)}
    assert keys >= expected | {"model", "output_dir", "resume", "patch", "attention"}
