"""`doctor check --python PATH`: another interpreter's environment, without installing the doctor there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _venv(root: Path) -> Path:
    """A real venv (no pip, no doctor) holding an xformers whose torch is missing."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python*/site-packages"))
    info = site / "xformers-0.0.35.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xformers\nVersion: 0.0.35\nRequires-Dist: torch>=2.10\n")
    (info / "RECORD").write_text("xformers-0.0.35.dist-info/METADATA,,\nxformers-0.0.35.dist-info/RECORD,,\n")
    return root


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shared target for the read-only tests."""
    return _venv(tmp_path_factory.mktemp("py") / "venv")


def _doctor(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = {**os.environ, "DOCTOR_GPUS": "none", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)


def test_the_other_environment_is_the_one_checked(target: Path) -> None:
    """Its interpreter and prefix in the facts, its packages in the findings; not the doctor's own."""
    proc = _doctor("check", "--python", str(target), "--json", "--no-probes")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2, proc.stderr
    assert doc["facts"]["executable"] == str(target / "bin" / "python")
    assert os.path.realpath(doc["facts"]["prefix"]) == os.path.realpath(target)
    assert "xformers.no-torch" in [f["id"] for f in doc["findings"]]
    assert doc["facts"]["packages"].get("torch") is None  # the doctor's own torch is not the target's


def test_fix_targets_that_interpreter(tmp_path: Path) -> None:
    """--fix runs pip aimed at the checked interpreter (pip --python), never at the doctor's: the target loses its
    broken xformers (a venv without pip of its own), and the re-check of that environment is clean of it."""
    venv = _venv(tmp_path / "venv")
    proc = _doctor("check", "--python", str(venv), "--no-probes", "--fix", "--yes")
    assert f"pip --python {venv / 'bin' / 'python'} uninstall -y xformers" in proc.stdout, proc.stdout + proc.stderr
    assert not list(venv.glob("lib/python*/site-packages/xformers-*.dist-info"))
    assert proc.returncode == 0, proc.stdout[-2000:]


@pytest.mark.parametrize("arg, message", [("/no/such/python", "no such file"), ("no-such-python-9", "not found on PATH")])
def test_a_bad_interpreter_is_bad_input(arg: str, message: str) -> None:
    """Exit 3 with one line, no traceback."""
    proc = _doctor("check", "--python", arg, "--no-probes")
    assert proc.returncode == 3 and message in proc.stderr and "Traceback" not in proc.stderr


def test_probes_run_with_the_checked_interpreter(target: Path) -> None:
    """The probe session hands the runner the other interpreter, with this doctor on PYTHONPATH."""
    from doctor.inventory import gather
    from doctor.probes.session import _interpreter

    facts = gather(python=str(target), environ={"DOCTOR_GPUS": "none", "PATH": os.environ.get("PATH", "")})
    env: dict = {}
    assert _interpreter(facts, env) == str(target / "bin" / "python")
    assert str(REPO) in env["PYTHONPATH"].split(os.pathsep)
    assert _interpreter(gather(environ={"DOCTOR_GPUS": "none"}), {}) is None  # this interpreter: nothing to hand over
