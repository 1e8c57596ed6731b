"""Import-order rule: live sys.modules order (checked in real subprocesses) and static scripts/notebooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from doctor.rules.imports import (
    IMPORT_TIME_PATCHERS,
    NOT_IMPORT_ORDER_SENSITIVE,
    check_imports,
    check_script,
)
from doctor.errors import DoctorError
from doctor.findings import ActionKind, Finding, Severity


def ev(f: Finding) -> Dict[str, str]:
    """Evidence as a dict."""
    return dict(f.evidence)


def write_pkg(root: Path, name: str, init: str, submodules: Optional[Dict[str, str]] = None) -> None:
    """A tiny real package on disk."""
    d = root / name
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(textwrap.dedent(init))
    for sub, body in (submodules or {}).items():
        (d / f"{sub}.py").write_text(body)


def run_child(root: Path, code: str) -> str:
    """Run code in a fresh interpreter with `root` first on sys.path; its stdout."""
    prog = f"import sys; sys.path.insert(0, {str(root)!r})\n" + textwrap.dedent(code)
    res = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


# ----------------------------------------------------------------------------- the sys.modules experiment


def test_sys_modules_order_is_import_completion_order(tmp_path: Path) -> None:
    """A package that imports another inside its __init__ lands AFTER it in sys.modules key order."""
    write_pkg(tmp_path, "patcher", "import patched\n")
    write_pkg(tmp_path, "patched", "X = 1\n")
    code = """
        import {first}
        keys = list(sys.modules)
        print(keys.index("patcher") - keys.index("patched"))
    """
    # Importing only the patcher (which imports `patched` itself) ...
    after_alone = int(run_child(tmp_path, code.format(first="patcher")))
    # ... gives the same relative order as importing `patched` first: the order imports FINISHED.
    after_both = int(run_child(tmp_path, code.format(first="patched, patcher")))
    assert after_alone > 0 and after_both > 0


def test_first_submodule_marks_when_the_patcher_started(tmp_path: Path) -> None:
    """A plain submodule imported first by the patcher finishes before the patched package only if the
    patched package was not imported earlier: the basis check_imports uses."""
    write_pkg(tmp_path, "patcher", "from . import _early\nimport patched\n", {"_early": "Y = 2\n"})
    write_pkg(tmp_path, "patched", "X = 1\n")
    code = """
        import {first}
        keys = list(sys.modules)
        print(keys.index("patcher._early") - keys.index("patched"))
    """
    assert int(run_child(tmp_path, code.format(first="patcher"))) < 0  # marker first: patcher started first
    assert int(run_child(tmp_path, code.format(first="patched, patcher"))) > 0  # patched finished earlier


@pytest.fixture()
def fake_stack(tmp_path: Path) -> Path:
    """Fake unsloth (patcher with a plain first submodule, like the real one), transformers, trl, peft."""
    write_pkg(
        tmp_path,
        "unsloth",
        """
        from . import fsdp2_launch  # stdlib-only first submodule, as in unsloth 2026.10.9
        import transformers, trl, peft
        from . import models
        """,
        {"fsdp2_launch": "import os\n", "models": "import transformers\n"},
    )
    write_pkg(tmp_path, "unsloth_zoo", "import transformers\n")
    write_pkg(tmp_path, "transformers", "X = 1\n", {"modeling_utils": "Y = 1\n"})
    write_pkg(tmp_path, "trl", "import transformers\n")
    write_pkg(tmp_path, "peft", "import transformers\n")
    write_pkg(tmp_path, "liger_kernel", "import transformers\n")
    return tmp_path


CHECK = """
    import json
    from doctor.rules.imports import check_imports
    print(json.dumps([f.to_dict() for f in check_imports()]))
"""


def live(root: Path, imports: str) -> List[dict]:
    """check_imports() in a child that ran `imports` first."""
    return json.loads(run_child(root, imports + "\n" + textwrap.dedent(CHECK)).strip().splitlines()[-1])


def test_live_patcher_first_is_ok(fake_stack: Path) -> None:
    """`import unsloth` then the others: fine, although unsloth imported transformers itself."""
    out = live(fake_stack, "import unsloth\nimport transformers, trl, peft")
    assert [f["id"] for f in out] == ["imports.order"] and out[0]["severity"] == "ok"


def test_live_transformers_first_is_error(fake_stack: Path) -> None:
    """`import transformers` before `import unsloth`: ERROR with restart + reorder fixes."""
    out = live(fake_stack, "import transformers\nimport unsloth")
    assert len(out) == 1
    f = out[0]
    assert f["id"] == "imports.patch-order" and f["severity"] == "error" and f["category"] == "imports"
    assert f["evidence"]["loaded before it"].startswith("transformers (#")
    assert "trl" not in f["evidence"]["loaded before it"]  # imported by unsloth itself
    assert f["evidence"]["patcher"].startswith("unsloth (sys.modules #")
    assert "unsloth.fsdp2_launch" in f["evidence"]["order basis"]
    kinds = [a["kind"] for a in f["fix"]]
    assert kinds == [ActionKind.RESTART.value, ActionKind.REORDER_IMPORTS.value]
    assert "restart" in f["explanation"]


def test_live_submodule_import_counts(fake_stack: Path) -> None:
    """`from trl import x` / `import transformers.modeling_utils` load the top-level package too."""
    out = live(fake_stack, "import transformers.modeling_utils\nimport peft\nimport unsloth")
    assert out[0]["id"] == "imports.patch-order"
    assert out[0]["evidence"]["loaded before it"].split(", ")[0].startswith("transformers")
    assert "peft" in out[0]["evidence"]["loaded before it"]


def test_live_liger_before_transformers_is_not_flagged(fake_stack: Path) -> None:
    """liger_kernel patches when apply_* is called, so its import order is never a finding."""
    out = live(fake_stack, "import liger_kernel\nimport unsloth")
    assert out[0]["id"] == "imports.patch-order"  # liger imported transformers before unsloth: that is the error
    assert "liger" not in json.dumps(out[0]["evidence"])
    out = live(fake_stack, "import transformers\nimport liger_kernel")
    assert [f["id"] for f in out] == ["imports.order"]
    assert "liger_kernel" in NOT_IMPORT_ORDER_SENSITIVE
    assert all(p.name != "liger_kernel" for p in IMPORT_TIME_PATCHERS)


def test_check_imports_mapping_without_patcher() -> None:
    """No patcher loaded: one OK finding that says so."""
    out = check_imports({"os": 1, "transformers": 2})
    assert len(out) == 1 and out[0].severity is Severity.OK and out[0].id == "imports.order"
    assert ev(out[0])["patched libraries loaded"] == "transformers"


def test_check_imports_mapping_uses_marker() -> None:
    """Order in an explicit mapping: the first unsloth submodule is the basis."""
    good = dict.fromkeys(["os", "unsloth.import_fixes", "transformers", "trl", "unsloth.models", "unsloth"])
    assert check_imports(good)[0].severity is Severity.OK
    bad = dict.fromkeys(["trl", "transformers", "unsloth.import_fixes", "unsloth"])
    f = check_imports(bad)[0]
    assert f.severity is Severity.ERROR and ev(f)["loaded before it"] == "transformers (#1), trl (#0)"


def test_check_imports_without_marker_is_only_a_warning() -> None:
    """Without any unsloth submodule the order is approximate: WARN, and the evidence says why."""
    f = check_imports(dict.fromkeys(["transformers", "unsloth"]))[0]
    assert f.severity is Severity.WARN and "approximate" in ev(f)["order basis"]


def test_check_imports_default_is_this_process() -> None:
    """Default: this test process, where no unsloth is imported."""
    assert check_imports()[0].id == "imports.order"


# ----------------------------------------------------------------------------- scripts


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
    assert [a.kind for a in f.fix] == [ActionKind.REORDER_IMPORTS]
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


# ----------------------------------------------------------------------------- notebooks


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
    kinds = [a.kind for a in f.fix]
    assert kinds == [ActionKind.REORDER_IMPORTS, ActionKind.RESTART]
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


def test_patcher_only_inside_a_function_runs_after_module_level_imports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`def f(): import unsloth` above a module-level `import trl`: trl loads first when the script starts."""
    from doctor.rules.imports import check_script

    p = tmp_path / "train.py"
    p.write_text("def f():\n    import unsloth\n\nimport trl\nf()\n")
    [f] = [x for x in check_script(str(p)) if x.id == "imports.script-order"]
    assert f.severity.name == "WARN" and "trl" in f.title and "module level" in f.fix[0].description


def test_liger_applied_after_the_model_is_flagged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Liger patches classes when apply_* runs: after from_pretrained the model is unpatched; model= fixes it."""
    from doctor.rules.imports import check_script

    late = tmp_path / "late.py"
    late.write_text("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                    "from liger_kernel.transformers import apply_liger_kernel_to_llama\n"
                    "tok = AutoTokenizer.from_pretrained('m')\n"
                    "model = AutoModelForCausalLM.from_pretrained('m')\n"
                    "apply_liger_kernel_to_llama()\n")
    [f] = [x for x in check_script(str(late)) if x.id == "imports.liger-order"]
    assert f.severity.name == "WARN" and dict(f.evidence)["model created"] == "line 4"
    ok = tmp_path / "ok.py"
    ok.write_text(late.read_text().replace("apply_liger_kernel_to_llama()", "apply_liger_kernel_to_llama(model=model)"))
    assert not [x for x in check_script(str(ok)) if x.id == "imports.liger-order"]
    early = tmp_path / "early.py"
    early.write_text("from liger_kernel.transformers import apply_liger_kernel_to_llama\napply_liger_kernel_to_llama()\n"
                     "from transformers import AutoModelForCausalLM\nm = AutoModelForCausalLM.from_pretrained('m')\n")
    assert not [x for x in check_script(str(early)) if x.id == "imports.liger-order"]
