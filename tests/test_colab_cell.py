"""README's notebook first cell, run as written in a real Jupyter kernel (nbclient), and what later cells see.

The kernel runs a fresh venv's python (its own pip, a stand-in torch 2.13.0+cpu), with the project's .venv
site-packages added behind its own by a .pth file (ipykernel and the doctor come from there), so the hook
writes that test venv's pip.conf and nothing of the project's. The cells are read from README.md's
"### The notebook first cell" section; only `%pip install -q tune-doctor` is left out (the doctor is
importable already and CI has no index) and the explain cell's package gets a local find-links folder.
A second notebook is a "Restart session": a new kernel without the first one's variables, where the
site pip.conf alone still makes pip refuse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Dict, List

import nbclient
import nbformat
import pytest

from tests.conftest import REPO, torch_wheel

KERNEL = "tune-doctor-colab-test"
TIMEOUT = 300


def _readme_cells() -> List[str]:
    """The indented code blocks of README's notebook first-cell section: the first cell, then the explain cell."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^### The notebook first cell.*?\n(.*?)(?=^##|\Z)", text, re.M | re.S)
    assert m, "README.md lost its '### The notebook first cell' section"
    blocks: List[List[str]] = []
    prev_code = False
    for line in m.group(1).splitlines():
        code = line.startswith("    ") and bool(line.strip())
        if code:
            if not prev_code:
                blocks.append([])
            blocks[-1].append(line[4:])
        prev_code = code
    return ["\n".join(b) for b in blocks]


@pytest.fixture()
def kernel_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Path]:
    """A venv with its own pip and the stand-in torch, a kernelspec for it, and pip's config neutralised."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    for var in [v for v in os.environ if v.startswith(("PIP_", "UV_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(home / "xdg"))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    py = venv / "bin" / "python"
    links = tmp_path / "links"
    installed = torch_wheel(tmp_path / "installed", "2.13.0+cpu", None)
    torch_wheel(links, "9.9", None)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(installed)], check=True,
                   timeout=TIMEOUT)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    project_site = sysconfig.get_paths()["purelib"]  # the .venv running the tests: ipykernel and the doctor
    (site / "zz_project_site.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")

    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tune-doctor colab cell test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("DOCTOR_GPUS", "none")  # a GPU-less machine: no nvidia-smi, no probes
    monkeypatch.setenv("DOCTOR_CACHE_DIR", str(tmp_path / "doctor-cache"))
    monkeypatch.setenv("PATH", os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]))  # `!pip` is the venv's
    return {"venv": venv, "links": links}


def _run(cells: List[str], cwd: Path) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=TIMEOUT, startup_timeout=120,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _text(cell: Any) -> str:
    """Everything a cell showed, as text (streams, and the plain and HTML faces of displays)."""
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            parts.extend([o["data"].get("text/plain", ""), o["data"].get("text/html", "")])
        elif o.get("output_type") == "error":
            parts.append("\n".join(o.get("traceback", [])))
    return "".join(parts)


@pytest.mark.timeout(600)
def test_readme_first_cell_puts_pins_in_force_for_later_cells_and_after_a_restart(kernel_venv: Dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    venv, links = kernel_venv["venv"], kernel_venv["links"]
    first, explain = _readme_cells()[:2]
    assert first.splitlines()[0] == "%pip install -q tune-doctor"
    assert "doctor.pin(hook=True)" in first and "doctor.check()" in first
    cell = "\n".join(first.splitlines()[1:])  # the doctor is importable already; CI has no index
    assert "!pip install torch==2.99" in explain
    explain = explain.replace("!pip install torch==2.99", f"!pip install --no-index --find-links {links} torch==9.9")

    nb = _run([
        cell,
        f"%pip install --no-index --find-links {links} torch==9.9",
        "import os\nprint('kernel', os.environ.get('PIP_CONSTRAINT'))\n!echo \"shell $PIP_CONSTRAINT $UV_CONSTRAINT\"",
        explain,
        "import importlib.metadata as md\nprint('torch', md.version('torch'))",
    ], tmp_path)

    shown = nb.cells[0].get("outputs", [])
    html = [o["data"]["text/html"] for o in shown if o.get("output_type") in ("execute_result", "display_data")]
    assert len(html) == 2, _text(nb.cells[0])  # the report, then the pins
    assert "tune-doctor" in html[0]
    assert "torch===2.13.0+cpu" in html[1] and "hook installed" in html[1] and str(venv / "pip.conf") in html[1]
    assert "<pre" in html[1] and "set in this kernel for later !pip / %pip / !uv pip cells" in html[1]

    refused = _text(nb.cells[1])
    assert "The user requested (constraint) torch===2.13.0+cpu" in refused, refused

    cfile = str(venv / "etc" / "tune-doctor" / "constraints.txt")
    seen = _text(nb.cells[2])
    assert f"kernel {cfile}" in seen and f"shell {cfile} {cfile}" in seen, seen

    why = _text(nb.cells[3])
    assert "pip refused the install" in why and "torch===2.13.0+cpu" in why and "torch==9.9" in why, why
    assert "torch 2.13.0+cpu" in _text(nb.cells[4])

    # "Restart session": a new kernel, none of the first one's variables; the site pip.conf still holds
    nb2 = _run([
        "import os\nprint('kernel', os.environ.get('PIP_CONSTRAINT'))",
        f"%pip install --no-index --find-links {links} torch==9.9",
        "import doctor\ndoctor.pin().unhook()",
        f"%pip install --dry-run --no-index --find-links {links} torch==9.9",
    ], tmp_path)
    assert "kernel None" in _text(nb2.cells[0])
    assert "The user requested (constraint) torch===2.13.0+cpu" in _text(nb2.cells[1]), _text(nb2.cells[1])
    assert "hook removed" in _text(nb2.cells[2])
    assert "Would install torch-9.9" in _text(nb2.cells[3]), _text(nb2.cells[3])
    assert not (venv / "pip.conf").exists() and not (venv / "etc").exists()
