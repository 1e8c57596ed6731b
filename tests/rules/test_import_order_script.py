"""Import order of a script, read statically (never run): order, nesting, dynamic imports, unreadable input."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from doctor.actions import ReorderImports
from doctor.errors import DoctorError
from doctor.findings import Finding, Severity
from doctor.rules.import_order.script import check_script


def ev(f: Finding) -> Dict[str, str]:
    """Evidence as a dict."""
    return dict(f.evidence)



def script(tmp_path: Path, body: str, name: str = "train.py") -> str:
    """Write a script, return its path."""
    p = tmp_path / name
    p.write_text(textwrap.dedent(body).lstrip("\n"))
    return str(p)


def test_script_order_error_with_lines(tmp_path: Path) -> None:
    """The brief's example: unsloth on line 12 after transformers (3) and peft (5)."""
    lines = ["import os"] * 11 + ["import unsloth"]
    lines[2] = "from transformers import AutoTokenizer"
    lines[4] = "import peft.tuners as pt"
    path = script(tmp_path, "\n".join(lines) + "\n")
    [f] = check_script(path)
    assert f.id == "imports.script-order" and f.severity is Severity.ERROR
    assert ev(f) == {
        "script": path,
        "patcher": "unsloth (line 12)",
        "imported before it": "transformers (line 3), peft (line 5)",
    }
    assert [type(a) for a in f.fix] == [ReorderImports]
    assert f.fix[0].description == "move `import unsloth` (line 12) above line 3"


def test_script_from_import_and_dynamic_imports(tmp_path: Path) -> None:
    """`from unsloth import X`, importlib.import_module("trl"), __import__("peft") all count."""
    path = script(
        tmp_path,
        """
        import importlib
        trl = importlib.import_module("trl.trainer")
        peft = __import__("peft")
        mod = importlib.import_module(name_from_config)
        from unsloth import FastLanguageModel
        """,
    )
    [f] = check_script(path)
    assert ev(f)["imported before it"] == "trl (line 2), peft (line 3)"
    assert ev(f)["patcher"] == "unsloth (line 5)"
    assert f.fix[0].description == "move `from unsloth import FastLanguageModel` (line 5) above line 2"


def test_script_dynamic_patcher(tmp_path: Path) -> None:
    """A dynamic import of unsloth itself is found too."""
    path = script(tmp_path, 'import transformers\nimport importlib\nimportlib.import_module("unsloth")\n')
    [f] = check_script(path)
    assert ev(f)["patcher"] == "unsloth (line 3)"


def test_script_relative_imports_are_ignored(tmp_path: Path) -> None:
    """`from . import transformers` is the script's own package, not Hugging Face's."""
    path = script(tmp_path, "from . import transformers\nfrom .peft import x\nimport unsloth\n")
    [f] = check_script(path)
    assert f.severity is Severity.OK


def test_script_good_order_and_later_reimport(tmp_path: Path) -> None:
    """unsloth first; importing it again later changes nothing."""
    path = script(tmp_path, "import unsloth\nimport transformers\nimport trl\nimport unsloth\n")
    [f] = check_script(path)
    assert f.severity is Severity.OK and f.id == "imports.script-order"


def test_script_without_patcher(tmp_path: Path) -> None:
    """Only transformers + liger: nothing to order."""
    path = script(tmp_path, "import transformers\nfrom liger_kernel.transformers import apply_liger_kernel_to_llama\n")
    [f] = check_script(path)
    assert f.severity is Severity.OK and "no import-time" in f.title


def test_script_one_statement(tmp_path: Path) -> None:
    """`import transformers, unsloth`: transformers is imported first."""
    [f] = check_script(script(tmp_path, "import transformers, unsloth\n"))
    assert f.severity is Severity.ERROR and ev(f)["imported before it"] == "transformers (line 1)"


def test_script_nested_imports_report_nesting(tmp_path: Path) -> None:
    """Imports in if/try/with blocks count in line order and say where they are."""
    path = script(
        tmp_path,
        """
        import sys
        if sys.platform:
            try:
                import trl
            except ImportError:
                pass
        with open(__file__):
            import unsloth
        """,
    )
    [f] = check_script(path)
    assert f.severity is Severity.ERROR
    assert ev(f)["imported before it"] == "trl (line 4, in if > try)"
    assert ev(f)["patcher"] == "unsloth (line 8, in with)"


def test_script_imports_inside_other_functions_only_warn(tmp_path: Path) -> None:
    """transformers imported only inside a helper def: runs when called, so a WARN, not an ERROR."""
    path = script(
        tmp_path,
        """
        def load():
            from transformers import AutoModel
            return AutoModel

        import unsloth
        """,
    )
    [f] = check_script(path)
    assert f.severity is Severity.WARN
    assert ev(f)["imported before it"] == "transformers (line 2, in def load)"


def test_script_same_function_is_an_error(tmp_path: Path) -> None:
    """Both inside main(): line order is execution order."""
    path = script(
        tmp_path,
        """
        def main():
            import transformers
            import unsloth
        """,
    )
    [f] = check_script(path)
    assert f.severity is Severity.ERROR and ev(f)["patcher"] == "unsloth (line 3, in def main)"


def test_script_missing_file(tmp_path: Path) -> None:
    """A missing file: one-line DoctorError."""
    with pytest.raises(DoctorError, match=r"^cannot read script .*nope\.py: No such file"):
        check_script(str(tmp_path / "nope.py"))


def test_script_directory(tmp_path: Path) -> None:
    """A directory is not a script."""
    with pytest.raises(DoctorError, match=r"^cannot read script "):
        check_script(str(tmp_path))


def test_script_fifo_does_not_block(tmp_path: Path) -> None:
    """A FIFO passed as the script is refused at once instead of blocking on read."""
    fifo = tmp_path / "train.py"
    os.mkfifo(fifo)
    with pytest.raises(DoctorError, match=r"^cannot read script .*: not a regular file$"):
        check_script(str(fifo))


def test_script_not_utf8(tmp_path: Path) -> None:
    """Latin-1 bytes: DoctorError, not a traceback."""
    p = tmp_path / "train.py"
    p.write_bytes(b"# caf\xe9\nimport unsloth\n")
    with pytest.raises(DoctorError, match=r"^cannot read script .*train\.py: not UTF-8"):
        check_script(str(p))


def test_script_utf8_bom_is_fine(tmp_path: Path) -> None:
    """A BOM (Windows editors) is valid Python."""
    p = tmp_path / "train.py"
    p.write_bytes(b"\xef\xbb\xbfimport transformers\nimport unsloth\n")
    assert check_script(str(p))[0].severity is Severity.ERROR


def test_script_syntax_error(tmp_path: Path) -> None:
    """SyntaxError: `cannot parse PATH: line N: ...` on one line."""
    path = script(tmp_path, "import os\n" * 6 + "def broken(:\n    pass\n")
    with pytest.raises(DoctorError) as info:
        check_script(path)
    msg = str(info.value)
    assert msg.startswith(f"cannot parse {path}: line 7: ") and "\n" not in msg


def test_script_null_bytes(tmp_path: Path) -> None:
    """Null bytes: a parse error, not a ValueError traceback."""
    p = tmp_path / "train.py"
    p.write_bytes(b"import os\x00\n")
    with pytest.raises(DoctorError, match=r"^cannot parse "):
        check_script(str(p))



def test_patcher_only_inside_a_function_runs_after_module_level_imports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`def f(): import unsloth` above a module-level `import trl`: trl loads first when the script starts."""
    p = tmp_path / "train.py"
    p.write_text("def f():\n    import unsloth\n\nimport trl\nf()\n")
    [f] = [x for x in check_script(str(p)) if x.id == "imports.script-order"]
    assert f.severity.name == "WARN" and "trl" in f.title and "module level" in f.fix[0].description



def test_script_larger_than_the_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size cap the file is refused with one line, never parsed truncated."""
    from doctor.rules.import_order import script as script_module

    monkeypatch.setattr(script_module, "_MAX_BYTES", 64)
    p = tmp_path / "train.py"
    p.write_text("import transformers\n" * 10)
    with pytest.raises(DoctorError, match=r"^cannot read script .*train\.py: larger than "):
        check_script(str(p))
