"""Import order in a live process: sys.modules order (checked in real subprocesses) and explicit mappings."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from doctor.actions import ReorderImports, RestartRuntime
from doctor.findings import Finding, Severity
from doctor.rules.import_order.live import check_imports
from doctor.rules.import_order.patchers import IMPORT_TIME_PATCHERS, NOT_IMPORT_ORDER_SENSITIVE


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
    from doctor.rules.import_order.live import check_imports
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
    assert kinds == [RestartRuntime.kind, ReorderImports.kind]
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

