"""The notebook face in a real Jupyter kernel: a notebook executed by nbclient in an ipykernel of this
interpreter, whose cells import a patched library before its patcher and then display the doctor's reports.

The kernel is this interpreter's, found through a kernelspec written into a temporary JUPYTER_PATH under a
name of its own: nothing is registered globally, and no network is used (the kernel talks over local ports).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import nbclient  # the test extra installs nbclient, nbformat and ipykernel: CI runs this, never skips it
import nbformat
import pytest

from tests.conftest import REPO

KERNEL = "tune-doctor-test"


def _package(root: Path, name: str, files: Dict[str, str]) -> None:
    """A small real package on disk."""
    (root / name).mkdir(parents=True)
    for rel, body in files.items():
        (root / name / rel).write_text(textwrap.dedent(body))


@pytest.fixture()
def fake_stack(tmp_path: Path) -> Path:
    """peft (imports transformers) and unsloth (a stdlib-only first submodule, then what it patches), as on disk."""
    site = tmp_path / "site"
    _package(site, "transformers", {"__init__.py": "X = 1\n"})
    _package(site, "trl", {"__init__.py": "import transformers\n"})
    _package(site, "peft", {"__init__.py": "import transformers\n"})
    _package(site, "unsloth", {"__init__.py": "from . import fsdp2_launch\nimport transformers, trl, peft\n",
                               "fsdp2_launch.py": "import os\n"})
    return site


@pytest.fixture()
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this interpreter in a temporary JUPYTER_PATH; Jupyter and IPython write under tmp_path."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tune-doctor test (this interpreter)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # the future default; silences jupyter_core's warning
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DOCTOR_GPUS", "none")  # the kernel checks a simulated GPU-less machine: no nvidia-smi
    monkeypatch.setenv("DOCTOR_CACHE_DIR", str(tmp_path / "doctor-cache"))
    return KERNEL


def _outputs(cell: Any) -> List[Dict[str, Any]]:
    """The rich outputs (execute_result / display_data) of one executed cell."""
    return [o for o in cell.get("outputs", []) if o.get("output_type") in ("execute_result", "display_data")]


@pytest.mark.timeout(300)
def test_reports_display_as_html_in_a_real_kernel(tmp_path: Path, fake_stack: Path, kernel_env: str) -> None:
    """peft, then unsloth: check_imports() shows the import-order error as HTML; check() displays as HTML too."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {str(fake_stack)!r})"),
        nbformat.v4.new_code_cell("import peft"),
        nbformat.v4.new_code_cell("import unsloth"),
        nbformat.v4.new_code_cell("import doctor\nr = doctor.check_imports()\nr"),
        nbformat.v4.new_code_cell("print(r.exit_code, [f.id for f in r.findings])"),
        nbformat.v4.new_code_cell("doctor.check(probes=False)"),
    ]
    client = nbclient.NotebookClient(nb, kernel_name=kernel_env, timeout=120, startup_timeout=90,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    imports = _outputs(nb.cells[3])
    assert len(imports) == 1, nb.cells[3]
    data = imports[0]["data"]
    assert "imports.patch-order" in data["text/html"] and data["text/html"].lstrip().startswith("<pre")
    assert "peft, transformers" in data["text/html"] or "transformers, peft" in data["text/html"]
    assert "imports.patch-order" in data["text/plain"] and "<doctor.Report" not in data["text/plain"]

    printed = "".join(o.get("text", "") for o in nb.cells[4].outputs if o.get("output_type") == "stream")
    assert printed.strip() == "2 ['imports.patch-order']"

    full = _outputs(nb.cells[5])
    assert len(full) == 1, nb.cells[5]
    html = full[0]["data"]["text/html"]
    assert "tune-doctor" in html and "imports.patch-order" in html and "(exit 2: errors)" in html
