"""The JSONL dataset: text and chat lines tokenised as the model's tokenizer says; a bad line names file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctor.errors import DoctorError
from doctor.runtime.train.data import IGNORE, load_examples, read_jsonl
from tests.runtime.conftest import CHAT_TEMPLATE, VOCAB, build_tokenizer
from tests.runtime.train.conftest import write_jsonl


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return build_tokenizer()


def test_text_lines_get_eos_and_chat_lines_the_template(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"text": "the cat can run"},
        "",  # blank lines are skipped (a trailing newline is common)
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "yes"}]},
    ])
    text, chat = load_examples(path, tokenizer, seq_len=64)
    assert list(text.input_ids) == [VOCAB[w] for w in "the cat can run".split()] + [VOCAB["</s>"]]
    assert text.labels == text.input_ids and text.line == 1
    rendered = "<|user|> hello <|end|> <|assistant|> yes <|end|>"
    assert list(chat.input_ids) == [VOCAB[w] for w in rendered.split()] and chat.line == 3
    assert IGNORE not in chat.labels  # every token is a target (trl's SFTTrainer default)


def test_long_examples_are_cut_and_one_token_ones_dropped(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "one two three four five six"}, {"text": ""}])
    (ex,) = load_examples(path, tokenizer, seq_len=4)  # "" is just </s>: nothing to predict
    assert len(ex.input_ids) == 4 and ex.input_ids[0] == VOCAB["one"]


@pytest.mark.parametrize("lines, message", [
    (['{"text": "ok"}', '{"text": "ok"', ], "d.jsonl:2: not JSON ("),
    (['{"text": "ok"}', '{"prompt": "x", "completion": "y"}'], "d.jsonl:2: no \"text\" or \"messages\" field (keys: 'prompt', 'completion')"),
    (['["text", "x"]'], "d.jsonl:1: expected a JSON object with \"text\" or \"messages\", got list"),
    (['{"text": 3}'], "d.jsonl:1: \"text\" must be a string, got int"),
    (['{"messages": []}'], "d.jsonl:1: \"messages\" must be a non-empty list"),
    (['{"messages": [{"role": "user"}]}'], "d.jsonl:1: messages[0] must be an object with string \"role\" and \"content\""),
    (['', '  '], "d.jsonl: the dataset has no examples"),
])
def test_bad_lines_name_file_and_line(tmp_path: Path, lines, message) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with pytest.raises(DoctorError) as e:
        read_jsonl(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file_non_utf8_and_chat_without_a_template(tmp_path: Path) -> None:
    with pytest.raises(DoctorError, match="dataset not found"):
        read_jsonl(tmp_path / "absent.jsonl")
    bad = tmp_path / "bin.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n\xff\xfe\n')
    with pytest.raises(DoctorError, match="not UTF-8"):
        read_jsonl(bad)
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"text": "a b"}, {"messages": [{"role": "user", "content": "hi"}]}])
    no_template = build_tokenizer(chat_template=CHAT_TEMPLATE)
    no_template.chat_template = None
    with pytest.raises(DoctorError, match=r"chat.jsonl:2: a \"messages\" line, but the model's tokenizer has no chat template"):
        load_examples(chat, no_template, 16)


def test_a_bad_byte_deep_in_the_file_names_its_own_line_and_a_bom_is_not_data(tmp_path: Path) -> None:
    """A text stream decodes 8 KiB ahead: the error must still name the line holding the bad byte."""
    lines = [b'{"text": "the cat can run %d"}' % i for i in range(1000)]
    lines[700] = lines[700].replace(b"cat", b"c\xffat")
    bad = tmp_path / "big.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DoctorError) as e:
        read_jsonl(bad)
    assert str(e.value) == f"{bad}:701: not UTF-8 text"
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"text": "the cat"}\r\n{"text": "a dog"}\r\n')  # as Windows editors save it
    assert [r.text for r in read_jsonl(bom)] == ["the cat", "a dog"]
    with pytest.raises(DoctorError, match="is a folder, not a JSONL file"):
        read_jsonl(tmp_path)


def _words(ids, labels):  # type: ignore[no-untyped-def]
    """The target tokens as words ('-' where IGNORE)."""
    words = {i: w for w, i in VOCAB.items()}
    return " ".join(words[t] if lab != IGNORE else "-" for t, lab in zip(ids, labels))


def test_train_on_assistant_targets_only_the_assistant_turns(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Every assistant turn (its text and the template's end-of-turn after it), nothing of the system or user."""
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "system", "content": "good"}, {"role": "user", "content": "hello"},
                      {"role": "assistant", "content": "yes yes"}, {"role": "user", "content": "why"},
                      {"role": "assistant", "content": "no"}]},
        {"text": "the cat can run"},
    ])
    chat, text = load_examples(path, tokenizer, seq_len=64, train_on="assistant")
    assert _words(chat.input_ids, chat.labels) == "- - - - - - - yes yes <|end|> - - - - no <|end|>"
    assert _words(chat.input_ids, chat.input_ids) == ("<|system|> good <|end|> <|user|> hello <|end|> <|assistant|> "
                                                      "yes yes <|end|> <|user|> why <|end|> <|assistant|> no <|end|>")
    assert text.labels == text.input_ids  # text lines: every token, whatever train_on says
    (same,) = load_examples(write_jsonl(tmp_path / "one.jsonl", [{"messages": [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "yes"}]}]), tokenizer, 64)
    assert IGNORE not in same.labels  # the default, "all", is unchanged


def test_train_on_assistant_drops_lines_without_an_assistant_token(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """No assistant turn, or one cut off by seq_len: nothing to learn from that line; none at all is one line."""
    rows = [{"messages": [{"role": "user", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "one two three four five"}, {"role": "assistant", "content": "yes"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]}]
    (kept,) = load_examples(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, seq_len=8, train_on="assistant")
    assert kept.line == 3
    with pytest.raises(DoctorError, match=r"d2.jsonl: no example has 2 or more tokens with an assistant token among "
                                          r"them: nothing to train on"):
        load_examples(write_jsonl(tmp_path / "d2.jsonl", rows[:2]), tokenizer, seq_len=8, train_on="assistant")


def test_train_on_assistant_refuses_a_template_that_rewrites_earlier_turns(tmp_path: Path) -> None:
    """A template whose rendering of the first turns changes once later ones exist (here: a turn count written up
    front) cannot be split by prefixes: one line naming the record, not silently wrong labels."""
    counting = build_tokenizer(chat_template="{{ messages | length }} " + CHAT_TEMPLATE)
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "yes"}]}])
    with pytest.raises(DoctorError, match=r"d.jsonl:1: \[data\] train_on = \"assistant\": the chat template does not "
                                          r"render this conversation turn by turn \(turn 2"):
        load_examples(path, counting, 64, train_on="assistant")
