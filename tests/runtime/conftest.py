"""Tiny random Llama-family models built from configs (fp32, fixed seed) and a local model directory writer.

Shared by the runtime's tests (patch, train, run). Nothing touches the Hugging Face hub: the tokenizer is a
word-level `tokenizers` vocabulary built here, wrapped in PreTrainedTokenizerFast with a chat template.

    model = build_model("llama")                 # or "qwen3", "gemma", "mistral", "qwen2"; **config overrides
    path = save_model_dir(model, tmp_path / "m") # model + tokenizer + chat template, loadable by from_pretrained
    WORDS                                        # the ordinary words the tokenizer knows (for datasets)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest

try:
    import torch

    _CUDA = torch.cuda.is_available()
except ImportError:  # torch is a test dependency
    torch = None  # type: ignore[assignment]
    _CUDA = False

if not _CUDA:  # Triton kernels (forced through DOCTOR_BACKEND_<OP>) run in the interpreter; set before any kernel loads
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import transformers  # noqa: F401

    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False

SPECIAL = ("<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
WORDS = tuple(
    "the a an and or but if then so because cat dog bird fish tree house car road river sun moon star "
    "red blue green small big fast slow old new happy sad good bad one two three four five six seven "
    "eight nine ten run walk jump swim fly eat sleep read write sing is are was were has have had will "
    "can not yes no hello world question answer what why how when where who . , ? !".split())
VOCAB: Dict[str, int] = {w: i for i, w in enumerate(SPECIAL + WORDS)}
VOCAB_SIZE = 128  # > len(VOCAB) (~92): rows past the tokenizer's ids exist, as in real checkpoints
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}")

# Common to every tiny config: 2 layers, hidden 32, 4 query heads over 2 kv heads (GQA), head dim 8.
_BASE: Dict[str, Any] = dict(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                             pad_token_id=VOCAB["<pad>"], bos_token_id=VOCAB["<s>"], eos_token_id=VOCAB["</s>"],
                             tie_word_embeddings=False)


def _configs() -> Dict[str, Tuple[Callable[..., Any], Callable[..., Any], Dict[str, Any]]]:
    """architecture -> (config class, model class, its own settings beyond _BASE)."""
    from transformers import (GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

    return {
        "llama": (LlamaConfig, LlamaForCausalLM, {"hidden_act": "silu"}),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"hidden_act": "silu", "use_sliding_window": False}),
        "gemma": (GemmaConfig, GemmaForCausalLM, {"hidden_act": "gelu_pytorch_tanh"}),
        "mistral": (MistralConfig, MistralForCausalLM, {"hidden_act": "silu", "sliding_window": None}),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"hidden_act": "silu", "use_sliding_window": False}),
    }


ARCHS = ("llama", "qwen3", "gemma", "mistral", "qwen2")


def build_config(arch: str, **overrides: Any) -> Any:
    """The tiny config of `arch` (eager attention: the plain reference to compare against), with overrides."""
    config_cls, _, own = _configs()[arch]
    settings = {**_BASE, **own, **overrides}
    settings.setdefault("attn_implementation", "eager")
    return config_cls(**settings)


def build_model(arch: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """A tiny random fp32 causal LM of `arch` (seeded: the same call gives the same weights), in eval mode."""
    _, model_cls, _ = _configs()[arch]
    config = build_config(arch, **overrides)
    torch.manual_seed(seed)
    model = model_cls(config).float()
    model.eval()
    return model


def build_tokenizer(chat_template: str = CHAT_TEMPLATE) -> Any:
    """A word-level PreTrainedTokenizerFast over VOCAB (whitespace split), with bos/eos/pad/unk and a chat template."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=list(SPECIAL[4:]))
    fast.chat_template = chat_template
    return fast


def save_model_dir(model: Any, path: Path, chat_template: str = CHAT_TEMPLATE) -> Path:
    """Write `model` and the word-level tokenizer (with its chat template) to `path`: a local model directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    build_tokenizer(chat_template).save_pretrained(str(path))
    return path


def sample_batch(batch: int = 2, seq: int = 12, seed: int = 1, pad: int = 0) -> Dict[str, Any]:
    """input_ids / attention_mask / labels of random words; the last `pad` positions of row 0 are right padding
    (labels -100 there, as a collator writes them)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), len(VOCAB), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        ids[0, seq - pad:] = VOCAB["<pad>"]
        mask[0, seq - pad:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _skip_without_transformers(config: pytest.Config, items: list) -> None:  # type: ignore[type-arg]
    if HAVE_TRANSFORMERS and torch is not None:
        return
    skip = pytest.mark.skip(reason="torch and transformers are needed for the runtime tests")
    for item in items:
        if "tests/runtime" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:  # type: ignore[type-arg]
    """Without torch/transformers (a bare install) the runtime tests are skipped, saying why."""
    _skip_without_transformers(config, items)


@pytest.fixture
def tiny_llama() -> Any:
    """A tiny random LlamaForCausalLM (fp32, seed 0, eager attention)."""
    return build_model("llama")


@pytest.fixture
def tiny_qwen3() -> Any:
    """A tiny random Qwen3ForCausalLM (fp32, seed 0, eager attention; q/k norms)."""
    return build_model("qwen3")


@pytest.fixture
def tiny_gemma() -> Any:
    """A tiny random GemmaForCausalLM (fp32, seed 0, eager attention; RMSNorm offset 1, tanh GeGLU)."""
    return build_model("gemma")


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A saved tiny Llama + tokenizer + chat template in a temp dir (what `doctor train` reads)."""
    return save_model_dir(build_model("llama"), tmp_path / "tiny-llama")
