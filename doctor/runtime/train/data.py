"""The JSONL dataset of `doctor train`: one example a line, as token ids and labels.

Two line formats, told apart by their field:

    {"text": "any text"}                                       trained on every token
    {"messages": [{"role": "user", "content": "..."}, ...]}    rendered with the tokenizer's chat template

Every token of an example is a target (what trl's SFTTrainer does by default); with `[data] train_on =
"assistant"` a chat line's targets are its assistant turns alone (each turn's text and what the template writes
after it, up to the next turn), found by rendering the conversation up to each turn. A bad line is ONE
`DoctorError` naming `file:line`, so a 100k-line file with one broken record is fixed in one edit, and
nothing is tokenised before the whole file has been read and checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from doctor.errors import DoctorError

IGNORE = -100  # label of a token that is not a target (Hugging Face's loss ignores it)


@dataclass(frozen=True)
class Example:
    """One tokenised example."""

    input_ids: Tuple[int, ...]
    labels: Tuple[int, ...]  # same length; IGNORE where the token is not a target
    line: int  # 1-based line of the JSONL file it came from


@dataclass(frozen=True)
class Record:
    """One checked line: either text or chat messages."""

    line: int
    text: str = ""
    messages: Tuple[Tuple[str, str], ...] = ()  # (role, content)


def read_jsonl(path: Path) -> List[Record]:
    """Every non-blank line of a JSONL file as a Record (DoctorError naming file:line on the first bad one)."""
    try:
        handle = path.open("rb")  # bytes, decoded line by line: a text stream decodes ahead in 8 KiB chunks, so
        # its UnicodeDecodeError comes lines before the bad one and the line number would be wrong
    except FileNotFoundError:
        raise DoctorError(f"{path}: dataset not found") from None
    except IsADirectoryError:
        raise DoctorError(f"{path}: is a folder, not a JSONL file") from None
    except OSError as e:
        raise DoctorError(f"{path}: cannot read the dataset ({e.strerror or e})") from None
    records: List[Record] = []
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM (Windows editors) is not data
            except UnicodeDecodeError:
                raise DoctorError(f"{path}:{number}: not UTF-8 text") from None
            if line.strip():
                records.append(_record(path, number, line))
    if not records:
        raise DoctorError(f"{path}: the dataset has no examples (empty file)")
    return records


def _record(path: Path, number: int, line: str) -> Record:
    where = f"{path}:{number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DoctorError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DoctorError(f"{where}: expected a JSON object with \"text\" or \"messages\", got {type(obj).__name__}")
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise DoctorError(f"{where}: \"text\" must be a string, got {type(obj['text']).__name__}")
        return Record(number, text=obj["text"])
    if "messages" in obj:
        return Record(number, messages=_messages(where, obj["messages"]))
    keys = ", ".join(repr(k) for k in list(obj)[:5]) or "none"
    raise DoctorError(f"{where}: no \"text\" or \"messages\" field (keys: {keys})")


def _messages(where: str, value: Any) -> Tuple[Tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DoctorError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    out = []
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DoctorError(f"{where}: messages[{i}] must be an object with string \"role\" and \"content\"")
        out.append((m["role"], m["content"]))
    return tuple(out)


def tokenize(records: Sequence[Record], tokenizer: Any, seq_len: int, source: Path,
             train_on: str = "all") -> List[Example]:
    """Records as Examples: chat rendered by the tokenizer's template, EOS appended to text, cut to seq_len.

    train_on "assistant": a chat line's labels are IGNORE outside its assistant turns. An example without a
    next-token target (under 2 tokens, or no target after its first token) is left out.
    """
    if any(r.messages for r in records) and not getattr(tokenizer, "chat_template", None):
        first = next(r.line for r in records if r.messages)
        raise DoctorError(f"{source}:{first}: a \"messages\" line, but the model's tokenizer has no chat template")
    eos = getattr(tokenizer, "eos_token_id", None)
    # One batched call per kind (the fast tokenizers run a batch in parallel, in Rust): chat is rendered by its
    # template, which writes its own special tokens; plain text gets the tokenizer's own (BOS where it adds one).
    chats = [i for i, r in enumerate(records) if r.messages]
    texts = [i for i, r in enumerate(records) if not r.messages]
    ids_of: List[List[int]] = [[] for _ in records]
    labels_of: List[Optional[List[int]]] = [None for _ in records]  # None: every token is a target
    if chats:
        rendered = [_render(tokenizer, records[i].messages) for i in chats]
        if train_on == "assistant":
            if not getattr(tokenizer, "is_fast", False):
                raise DoctorError(f"{source}: [data] train_on = \"assistant\" needs a fast tokenizer (its character "
                                  "offsets tell which tokens an assistant turn holds); this model's is not")
            spans = [_assistant_spans(tokenizer, records[i], text, source) for i, text in zip(chats, rendered)]
            enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
            for i, ids, offsets, turn in zip(chats, enc["input_ids"], enc["offset_mapping"], spans):
                ids_of[i] = list(ids)
                # a token is a target when it starts inside an assistant span
                labels_of[i] = [t if any(a <= o[0] < b for a, b in turn) else IGNORE for t, o in zip(ids, offsets)]
        else:
            for i, ids in zip(chats, tokenizer(rendered, add_special_tokens=False)["input_ids"]):
                ids_of[i] = list(ids)
    if texts:
        for i, ids in zip(texts, tokenizer([records[i].text for i in texts])["input_ids"]):
            ids = list(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)  # the model learns where a text ends
            ids_of[i] = ids
    out: List[Example] = []
    for r, ids, labels in zip(records, ids_of, labels_of):
        ids = ids[:seq_len]
        labels = ids if labels is None else labels[:seq_len]
        if len(ids) >= 2 and any(t != IGNORE for t in labels[1:]):  # label 0 is never predicted
            out.append(Example(tuple(ids), tuple(labels), r.line))
    if not out:
        raise DoctorError(f"{source}: no example has 2 or more tokens" + (
            " with an assistant token among them" if train_on == "assistant" else "") + ": nothing to train on")
    return out


def _render(tokenizer: Any, messages: Sequence[Tuple[str, str]], generation_prompt: bool = False) -> str:
    """The conversation as the chat template writes it (text, not tokens)."""
    return str(tokenizer.apply_chat_template([{"role": a, "content": b} for a, b in messages], tokenize=False,
                                             add_generation_prompt=generation_prompt))


def _assistant_spans(tokenizer: Any, record: Record, full: str, source: Path) -> List[Tuple[int, int]]:
    """Character spans of `full` written for the assistant turns: from the end of the conversation rendered up to
    the turn (with the generation prompt) to its end rendered through the turn. A template that does not render
    a conversation as the concatenation of its prefixes cannot be split so: one line naming the record."""
    spans: List[Tuple[int, int]] = []
    for k, (role, _) in enumerate(record.messages):
        if role != "assistant":
            continue
        before = _render(tokenizer, record.messages[:k], generation_prompt=True) if k else ""
        through = _render(tokenizer, record.messages[:k + 1])
        if not (full.startswith(through) and through.startswith(before)):
            raise DoctorError(f"{source}:{record.line}: [data] train_on = \"assistant\": the chat template does not "
                              f"render this conversation turn by turn (turn {k + 1} changes what came before it), so "
                              "the assistant's tokens cannot be told apart; use train_on = \"all\"")
        spans.append((len(before), len(through)))
    return spans


def load_examples(path: Path, tokenizer: Any, seq_len: int, train_on: str = "all") -> List[Example]:
    """read_jsonl then tokenize: the dataset as Examples."""
    return tokenize(read_jsonl(path), tokenizer, seq_len, path, train_on)

