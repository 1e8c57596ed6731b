"""The probe verdict table stays readable at 100 columns: short details, nothing else folded."""

from __future__ import annotations

import io

from rich.console import Console

from doctor.report.console import console
from doctor.report.tables import SHORT_DETAIL, error_text, render_verdict_details, short_detail, time_text, verdict_table
from doctor.verdicts import ProbeResult

XFORMERS_ERROR = ("xFormers can't load C++/CUDA extensions. xFormers was built for: PyTorch 2.10.0+cu128 with CUDA 1208 "
                  "(you have 2.11.0+cu130) Python 3.11.9 (you have 3.11.7)\n  Please reinstall xformers (see "
                  "https://github.com/facebookresearch/xformers#installing-xformers)\nMemory-efficient attention, "
                  "SwiGLU, sparse and more won't be available.")
RESULTS = [
    ProbeResult("xformers.mea", "xformers", "error", detail=XFORMERS_ERROR, stderr_tail="Traceback (most recent call last):\n"
                "NotImplementedError: No operator found for `memory_efficient_attention_forward`"),
    ProbeResult("sdpa.efficient", "sdpa-efficient", "wrong-result", error=0.1234, tolerance=0.01, time_ms=12.345,
                detail="max relative error 0.1234 > tolerance 0.01 on bf16 causal fwd+bwd, shapes (2, 8, 1024, 128) " * 2),
    ProbeResult("dispatch.attention", "sdpa-efficient", "pass", error=1e-3, tolerance=1e-2, time_ms=0.4213, detail="ok"),
    ProbeResult("flash_attn.func", "flash-attn", "crash", time_ms=1234.5,
                detail="killed by SIGSEGV (signal 11) " + "x" * 300),
    ProbeResult("bnb.adam8bit", "", "skipped", detail="bitsandbytes is not installed"),
]


def _render(width: int) -> str:
    buf = io.StringIO()
    Console(width=width, file=buf, highlight=False).print(verdict_table(RESULTS))
    return buf.getvalue()


def test_verdict_table_at_100_columns_keeps_every_column_whole() -> None:
    """No line over 100; id, backend, verdict, error and time are never folded; the detail is a short form."""
    lines = _render(100).splitlines()
    assert max(len(ln) for ln in lines) <= 100
    for r in RESULTS:
        [row] = [ln for ln in lines if ln.startswith(r.id + " ")]  # one line per verdict: nothing wrapped
        for cell in (r.backend, r.status, error_text(r), time_text(r)):
            assert cell in row, (cell, row)
        first_words = short_detail(r.detail).split()[0]
        assert first_words in row  # the detail starts on the verdict's own line
    assert len(lines) == 2 + len(RESULTS) + 1  # title, header, rule, one row each


def test_verdict_table_in_a_pipe_is_not_wrapped() -> None:
    """The doctor's pipe console: one line per verdict, the whole short detail, no trailing spaces."""
    buf = io.StringIO()
    console(file=buf).print(verdict_table(RESULTS))
    lines = buf.getvalue().splitlines()
    for r in RESULTS:
        [row] = [ln for ln in lines if ln.startswith(r.id + " ")]
        assert short_detail(r.detail) in row
    assert not [ln for ln in lines if ln != ln.rstrip()]


def test_short_detail_is_the_first_line_cut() -> None:
    """First non-empty line, cut with an ellipsis; the full text is for -v and --json."""
    assert short_detail("\n  first line\nsecond") == "first line"
    cut = short_detail("y" * 500)
    assert len(cut) == SHORT_DETAIL and cut.endswith("…")


def test_verbose_details_show_everything_the_table_cut() -> None:
    """-v: the full detail and the stderr tail of every verdict that did not pass, nothing for a pass."""
    buf = io.StringIO()
    render_verdict_details(console(file=buf), RESULTS)
    text = buf.getvalue()
    assert "Please reinstall xformers" in text and "No operator found" in text and "x" * 300 in text
    assert "dispatch.attention" not in text
