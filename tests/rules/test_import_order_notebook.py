"""Import order of a notebook file: cells in order, magics and `!pip` lines, broken notebooks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from doctor.actions import ReorderImports, RestartRuntime
from doctor.errors import DoctorError
from doctor.findings import Finding, Severity
from doctor.rules.import_order.script import check_script


def ev(f: Finding) -> Dict[str, str]:
    """Evidence as a dict."""
    return dict(f.evidence)



def notebook(tmp_path: Path, cells: List[tuple], name: str = "nb.ipynb", as_list: bool = True) -> str:
    """Write an nbformat-4 notebook of (cell_type, source) pairs."""
    out = []
    for kind, src in cells:
        src = textwrap.dedent(src).lstrip("\n")
        out.append({"cell_type": kind, "metadata": {}, "source": src.splitlines(True) if as_list else src})
    p = tmp_path / name
    p.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": out}))
    return str(p)


def test_notebook_cells_and_magics(tmp_path: Path) -> None:
    """Cell numbers count every cell; `!pip install unsloth` and %%bash cells are not imports."""
    path = notebook(
        tmp_path,
        [
            ("markdown", "# Fine-tune\n"),
            ("code", "!pip install unsloth\n%load_ext autoreload\nfiles = !ls\nimport os\n"),
            ("code", "%%bash\nimport unsloth\n"),
            ("code", "from trl import SFTTrainer\nimport transformers\n"),
            ("code", "%%capture\nimport peft\n"),
            ("code", "x = 1\nfrom unsloth import FastLanguageModel\n"),
        ],
    )
    [f] = check_script(path)
    assert f.severity is Severity.ERROR
    assert ev(f)["patcher"] == "unsloth (cell 6, line 2)"
    assert ev(f)["imported before it"] == "trl (cell 4, line 1), transformers (cell 4, line 2), peft (cell 5, line 2)"
    assert [type(a) for a in f.fix] == [ReorderImports, RestartRuntime]
    assert f.fix[0].description == "move `from unsloth import FastLanguageModel` (cell 6, line 2) above cell 4, line 1"


def test_notebook_good_order_string_sources(tmp_path: Path) -> None:
    """Sources as one string (also valid nbformat), unsloth in the first code cell."""
    path = notebook(
        tmp_path,
        [("code", "import unsloth\n"), ("code", "import transformers\nimport trl\n")],
        as_list=False,
    )
    assert check_script(path)[0].severity is Severity.OK


def test_notebook_indented_magic_and_percent_continuation(tmp_path: Path) -> None:
    """`    !pip ...` inside an if, a `% args` continuation line and top-level await all parse."""
    path = notebook(
        tmp_path,
        [
            ("code", 'import sys\nif "google.colab" in sys.modules:\n    !pip install -q unsloth\n'),
            ("code", 'msg = ("%s-%s"\n       % (1, 2))\nawait something()\nimport transformers\n'),
            ("code", "import unsloth\n"),
        ],
    )
    [f] = check_script(path)
    assert ev(f)["imported before it"] == "transformers (cell 2, line 4)"


def test_notebook_bad_json(tmp_path: Path) -> None:
    """Not JSON: DoctorError."""
    p = tmp_path / "nb.ipynb"
    p.write_text("{not json")
    with pytest.raises(DoctorError, match=r"^cannot parse .*nb\.ipynb: not a notebook"):
        check_script(str(p))


def test_notebook_syntax_error_names_cell(tmp_path: Path) -> None:
    """A broken cell: the error names the cell and the line in it."""
    path = notebook(tmp_path, [("code", "import os\n"), ("markdown", "x"), ("code", "x = 1\ndef (:\n")])
    with pytest.raises(DoctorError, match=r"^cannot parse .*nb\.ipynb: cell 3, line 2: "):
        check_script(path)



def test_notebook_nested_too_deeply(tmp_path: Path) -> None:
    """A .ipynb of 100 000 nested brackets: one-line DoctorError, not a RecursionError traceback."""
    p = tmp_path / "nb.ipynb"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DoctorError, match=r"^cannot parse .*nb\.ipynb: not a notebook \(JSON nested too deeply\)$"):
        check_script(str(p))


def test_notebook_top_level_not_an_object(tmp_path: Path) -> None:
    """Valid JSON that is not a notebook (a list): DoctorError naming why."""
    p = tmp_path / "nb.ipynb"
    p.write_text("[1, 2]")
    with pytest.raises(DoctorError, match=r"^cannot parse .*: not a notebook \(top level is not an object\)$"):
        check_script(str(p))
