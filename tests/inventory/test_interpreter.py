"""ask_interpreter: another interpreter's environment, from a real child of that interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.markers import default_environment

from doctor.errors import DoctorError
from doctor.inventory.interpreter import ask_interpreter


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real virtual environment (no pip: fast) with one planted distribution."""
    root = tmp_path_factory.mktemp("target") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    return root


def test_a_real_venv_reports_its_prefix_path_and_markers(venv: Path) -> None:
    """The child's answer is the venv's, not the doctor's own."""
    it = ask_interpreter(str(venv / "bin" / "python"))
    assert os.path.realpath(it.python.prefix) == os.path.realpath(venv)
    assert it.python.prefix != sys.prefix and it.python.base_prefix
    assert it.python.version == "%d.%d.%d" % sys.version_info[:3]
    site = [p for p in it.path if p.endswith("site-packages")]
    assert site and all(os.path.realpath(p).startswith(os.path.realpath(venv)) for p in site)
    assert "" not in it.path and str(venv / "bin") not in it.path  # no script directory


def test_markers_are_those_packaging_computes_for_the_same_interpreter() -> None:
    """The stdlib-only child computes PEP 508's environment exactly as packaging does."""
    it = ask_interpreter(sys.executable)
    assert dict(it.markers) == {k: v for k, v in default_environment().items()}


def test_a_venv_directory_is_accepted_like_uv_does(venv: Path) -> None:
    """`--python .venv` means the venv's interpreter."""
    assert os.path.realpath(ask_interpreter(str(venv)).python.prefix) == os.path.realpath(venv)


def test_a_bare_name_is_looked_up_on_path() -> None:
    """`--python python3` finds the interpreter on PATH."""
    name = os.path.basename(sys.executable)
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    it = ask_interpreter(name, environ=env) if "PATH" in env and _on_path(name, env["PATH"]) else None
    assert it is not None and it.python.version == "%d.%d.%d" % sys.version_info[:3]


def _on_path(name: str, path: str) -> bool:
    import shutil

    return shutil.which(name, path=path) is not None


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "nope"), "no such file"),
    (lambda d: str(d), "a directory without bin/python"),
    (lambda d: "no-such-python-anywhere-3.99", "not found on PATH"),
])
def test_missing_targets_are_one_line_errors(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    """Nothing to run: DoctorError naming the problem."""
    with pytest.raises(DoctorError, match=message):
        ask_interpreter(make(tmp_path))


def _script(tmp_path: Path, body: str, mode: int = 0o755) -> str:
    p = tmp_path / "fakepython"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(mode)
    return str(p)


@pytest.mark.skipif(sys.platform == "win32", reason="shell scripts")
def test_not_executable(tmp_path: Path) -> None:
    """A file without the execute bit."""
    with pytest.raises(DoctorError, match="not executable"):
        ask_interpreter(_script(tmp_path, "exit 0", 0o644))


@pytest.mark.skipif(sys.platform == "win32", reason="shell scripts")
@pytest.mark.parametrize("body, message", [
    ("echo hello; echo '{\"not\": \"ours\"}'", "not a working Python 3 interpreter"),
    ("head -c 200000 /dev/zero | tr '\\0' '['; echo", "not a working Python 3 interpreter"),  # nested too deep
    ("echo 'SyntaxError: invalid syntax' >&2; exit 1", "exit 1: SyntaxError: invalid syntax"),
    ("echo '{\"tune_doctor_interpreter\": 1, \"path\": [], \"markers\": {}}'", "lacks 'version'"),
    ("echo '{\"tune_doctor_interpreter\": 1, \"executable\": \"x\", \"prefix\": \"/\", \"base_prefix\": \"/\", "
     "\"version\": \"3.11.0\", \"implementation\": \"CPython\", \"path\": [1], \"markers\": {}}'", "lacks 'path'"),
])
def test_garbage_answers_are_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    """An 'interpreter' that prints garbage, fails, or answers half: never a traceback."""
    with pytest.raises(DoctorError, match=message):
        ask_interpreter(_script(tmp_path, body))


@pytest.mark.skipif(sys.platform == "win32", reason="shell scripts")
def test_a_hung_interpreter_is_abandoned_in_time(tmp_path: Path) -> None:
    """The child is killed at the timeout."""
    t0 = time.monotonic()
    with pytest.raises(DoctorError, match="no answer within 0.5 s"):
        ask_interpreter(_script(tmp_path, "exec sleep 30"), timeout=0.5)
    assert time.monotonic() - t0 < 5


@pytest.mark.skipif(sys.platform == "win32", reason="shell scripts")
def test_a_wrapper_that_leaves_a_child_behind_is_killed_with_it(tmp_path: Path) -> None:
    """A wrapper script whose background child holds the output pipe: the whole group goes at the timeout."""
    pid_file = tmp_path / "child.pid"
    t0 = time.monotonic()
    with pytest.raises(DoctorError, match="no answer within 0.5 s"):
        ask_interpreter(_script(tmp_path, f"sleep 30 &\necho $! > {pid_file}\nwait"), timeout=0.5)
    assert time.monotonic() - t0 < 5
    child = int(pid_file.read_text())
    for _ in range(100):  # killed with its group; give init a moment to reap it
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the wrapper's child survived the timeout")
