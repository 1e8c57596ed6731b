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


A100 = "NVIDIA A100-SXM4-80GB@8.0@81920"
LINUX = "platform_system == 'Linux' and platform_machine == 'x86_64'"


def test_healthy_hf_peft_install_on_a100_exits_0(tmp_path: Path) -> None:
    """A default HF + peft install (transformers, peft, accelerate and their dependencies resolved by pip) on a
    CUDA torch on an A100: `doctor check --json --no-probes` finds nothing to act on and exits 0."""
    from tests.conftest import torch_wheel
    from tests.wheels import build_wheel

    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    py = str(root / "bin" / "python")
    pip("install", "-e", str(REPO), python=py)
    # a stand-in CUDA torch with torch 2.11's own requirements (its binaries are not what is checked), and its triton
    torch = torch_wheel(tmp_path / "wheels", "2.11.0+cu130", "13.0",
                        ["filelock", "typing-extensions>=4.10.0", "sympy>=1.13.3", "networkx>=2.5.1", "jinja2",
                         "fsspec>=0.8.5", f"triton==3.6.0; {LINUX}"])
    triton = build_wheel(tmp_path / "wheels", "triton", "3.6.0", [], {"triton/__init__.py": ""})
    pip("install", str(torch), str(triton), "transformers", "peft", "accelerate", python=py)
    proc = run_doctor("check", "--json", "--no-probes", python=py,
                      env={"DOCTOR_GPUS": A100, "DOCTOR_DRIVER_VERSION": "580.159.04", "HOME": str(tmp_path)}, timeout=120)
    doc = json.loads(proc.stdout)
    loud = [(f["id"], f["title"]) for f in doc["findings"] if f["severity"] in ("warn", "error")]
    assert proc.returncode == 0 and not loud, (loud, proc.stderr[-2000:])
    assert {"transformers", "peft", "accelerate", "torch", "triton"} <= set(doc["facts"]["packages"])
    assert {f["id"] for f in doc["findings"] if f["severity"] == "ok"} >= {"driver.cuda-support", "gpu.arch", "torch.build",
                                                                           "triton.torch"}
