"""A real virtual environment with real torch and xformers wheels, and the doctor run inside it."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO, run_doctor, torch_cpu_wheel
from tests.wheels import pip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack_venv(tmp_path_factory: pytest.TempPathFactory, real_wheels) -> Path:  # type: ignore[no-untyped-def]
    """venv + tune-doctor (editable) + torch 2.13.0 CPU + xformers 0.0.35 (built for 2.10.0+cu128), all --no-deps."""
    root = tmp_path_factory.mktemp("stackvenv") / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    py = str(root / "bin" / "python")
    pip("install", "-e", str(REPO), python=py)
    pip("install", "--no-deps", torch_cpu_wheel(), str(real_wheels["xformers==0.0.35"]), python=py)
    return root


def test_doctor_in_broken_venv_finds_xformers_abi_and_cpu_torch(stack_venv: Path) -> None:
    """Exit 2; xformers' binary built for another torch; CPU torch on a GPU box; torch never imported."""
    py = str(stack_venv / "bin" / "python")
    proc = run_doctor("check", "--json", python=py,
                      env={"DOCTOR_GPUS": "NVIDIA H100 80GB HBM3@9.0@81559", "DOCTOR_DRIVER_VERSION": "580.159.04"})
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["facts"]["executable"].startswith(str(stack_venv))
    assert "venv" in doc["facts"]["environment"]
    assert doc["facts"]["torch_build"]["version"] == "2.13.0+cpu"
    assert doc["facts"]["xformers_build"]["torch"] == "2.10.0+cu128"
    by_id = {f["id"]: f for f in doc["findings"]}
    assert by_id["xformers.binary-mismatch"]["severity"] == "error"
    assert by_id["xformers.torch-metadata"]["severity"] == "ok"
    assert by_id["torch.cpu-build-on-gpu"]["severity"] == "error"
    # torch 2.13's own requirements were skipped by --no-deps: reported, with the exact install
    missing = [f for f in doc["findings"] if f["id"] == "requires.missing" and f["subject"] == "torch"]
    assert "sympy>=1.13.3" in missing[0]["evidence"]["missing"].split(", ")
    assert missing[0]["fix"][0]["command"].startswith("pip install ")


def test_check_in_venv_leaves_torch_unimported(stack_venv: Path) -> None:
    """torch is installed and importable there, and the check still never imports it."""
    py = str(stack_venv / "bin" / "python")
    code = ("import sys, io, contextlib\nfrom doctor.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['check', '--json'])\n"
            "import importlib.util\n"
            "print(importlib.util.find_spec('torch') is not None, [m for m in ('torch', 'xformers') if m in sys.modules])\n")
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, env={"DOCTOR_GPUS": "none", "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip() == "True []", proc.stdout + proc.stderr
