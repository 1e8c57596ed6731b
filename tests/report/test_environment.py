"""The environment checked is named in the header (text, markdown, JSON facts); an active venv that is not it is a warning."""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO, run_doctor


@pytest.fixture(scope="module")
def real_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real virtual environment (no pip; the doctor and its dependencies come from this interpreter)."""
    root = tmp_path_factory.mktemp("venv") / "trainenv"
    venv.EnvBuilder(with_pip=False, system_site_packages=True, symlinks=os.name != "nt").create(root)
    return root


def _python(root: Path) -> str:
    return str(root / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))


def _env(**extra: str) -> dict:
    """No activated environment unless the test sets one; the checkout and its dependencies importable from any interpreter."""
    # The test venv's base is the system interpreter, not this (possibly virtual) one: rich and
    # the other dependencies come from this interpreter's site-packages.
    deps = sysconfig.get_paths()["purelib"]
    e = {"DOCTOR_GPUS": "none", "VIRTUAL_ENV": "", "CONDA_PREFIX": "",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), deps, os.environ.get("PYTHONPATH", "")]))}
    e.update(extra)
    return e


def test_active_venv_that_is_not_checked_is_a_warning(real_venv: Path) -> None:
    """VIRTUAL_ENV names a venv, the doctor runs in another interpreter: header, JSON facts and a warning say so."""
    proc = run_doctor("check", "--json", "--no-probes", env=_env(VIRTUAL_ENV=str(real_venv)))
    doc = json.loads(proc.stdout)
    facts = doc["facts"]
    assert facts["executable"] == sys.executable and facts["prefix"] == sys.prefix
    assert facts["active_environment"] == {"variable": "VIRTUAL_ENV", "path": str(real_venv), "is_checked": False}
    [f] = [f for f in doc["findings"] if f["id"] == "environment.not-active"]
    assert f["severity"] == "warn" and proc.returncode >= 1
    [fix] = f["fix"]
    assert fix["kind"] == "manual" and f"doctor check --python {_python(real_venv)}" in fix["description"]
    assert f"{_python(real_venv)} -m doctor check" in fix["description"]  # true whether or not --python exists
    text = run_doctor("check", "--no-probes", env=_env(VIRTUAL_ENV=str(real_venv), NO_COLOR="1")).stdout
    header = text.split("\n\n", 1)[0]
    assert f"Environment: {sys.executable} (prefix {sys.prefix}); NOT the active VIRTUAL_ENV={real_venv}" in header
    md = run_doctor("check", "--markdown", "--no-probes", env=_env(VIRTUAL_ENV=str(real_venv))).stdout
    assert f"| Environment checked | `{sys.executable} (prefix {sys.prefix}); NOT the active VIRTUAL_ENV={real_venv}` |" in md


def test_doctor_of_the_active_venv_checks_it(real_venv: Path) -> None:
    """Run by the venv's own interpreter with that venv active: it is the one checked, no warning."""
    proc = run_doctor("check", "--json", "--no-probes", python=_python(real_venv), env=_env(VIRTUAL_ENV=str(real_venv)))
    doc = json.loads(proc.stdout)
    assert doc["facts"]["prefix"] == str(real_venv)
    assert doc["facts"]["active_environment"]["is_checked"] is True
    assert "environment.not-active" not in [f["id"] for f in doc["findings"]]
    text = run_doctor("check", "--no-probes", python=_python(real_venv), env=_env(VIRTUAL_ENV=str(real_venv))).stdout
    assert f"(prefix {real_venv})" in text.split("\n\n", 1)[0] and "NOT the active" not in text


def test_same_environment_through_a_symlink_is_not_a_mismatch(tmp_path: Path) -> None:
    """VIRTUAL_ENV spelled through a symlink to sys.prefix is the same environment."""
    link = tmp_path / "link"
    link.symlink_to(sys.prefix, target_is_directory=True)
    doc = json.loads(run_doctor("check", "--json", "--no-probes", env=_env(VIRTUAL_ENV=str(link))).stdout)
    assert doc["facts"]["active_environment"]["is_checked"] is True
    assert "environment.not-active" not in [f["id"] for f in doc["findings"]]


def test_active_conda_env_is_named_as_such(tmp_path: Path) -> None:
    """CONDA_PREFIX alone (conda activate) names a conda environment; no variable set: nothing is said."""
    other = tmp_path / "envs" / "train"
    other.mkdir(parents=True)
    doc = json.loads(run_doctor("check", "--json", "--no-probes", env=_env(CONDA_PREFIX=str(other))).stdout)
    [f] = [f for f in doc["findings"] if f["id"] == "environment.not-active"]
    assert f"not the active conda environment {other}" in f["title"]
    doc = json.loads(run_doctor("check", "--json", "--no-probes", env=_env()).stdout)
    assert doc["facts"]["active_environment"] is None
