"""Output to a pipe, a file or a CI log is never wrapped and has no trailing spaces; a terminal wraps prose only.

A fix command wrapped over two lines runs a partial `pip install` when pasted, so every test here feeds
reports whose fix commands are far longer than the width rich would use (COLUMNS=40 in a pipe, a
60-column terminal) and checks each command arrives on one line.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from doctor.report.console import StripTrailing, console, print_command
from tests.conftest import Env, run_doctor

H100 = "NVIDIA H100 80GB HBM3@9.0@81559"
XFORMERS_FIX = ("pip install xformers==0.0.32.post2 --index-url https://download.pytorch.org/whl/cu126 "
                "--force-reinstall --no-deps")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def mismatch_world(env: Env) -> Dict[str, str]:
    """torch 2.8.0+cu126 with xformers built for cu128 (long fix commands), on a simulated H100: its env vars."""
    cpp = '{"version": {"cuda": 1208, "hip": null, "torch": "2.8.0+cu128", "python": "3.11.9"}, "env": {}}'
    # triton as torch 2.8.0 pins it: the test venv's own triton would otherwise be an error here
    env.torch("2.8.0+cu126", "12.6").wheel("triton", "3.4.0").wheel("xformers", "0.0.32.post2", ["torch==2.8.0"], {"xformers/cpp_lib.json": cpp})
    return {"PYTHONPATH": str(env.site), "DOCTOR_GPUS": H100, "DOCTOR_DRIVER_VERSION": "580.159.04", "COLUMNS": "40"}


def _fix_commands(doc: dict) -> List[str]:
    """Every fix command (or description, for actions without one) of a JSON document's findings."""
    return [a["command"] or a["description"] for f in doc["findings"] if f["severity"] in ("warn", "error") for a in f["fix"]]


def _no_trailing_spaces(text: str) -> None:
    bad = [ln for ln in text.splitlines() if ln != ln.rstrip()]
    assert not bad, bad[:3]


@pytest.mark.parametrize("flags", [[], ["-v"], ["--markdown"]])
def test_check_into_a_pipe_keeps_every_fix_command_on_one_line(mismatch_world: Dict[str, str], flags) -> None:  # type: ignore[no-untyped-def]
    """COLUMNS=40 used to make rich wrap at 40 in a pipe: now nothing is wrapped and no line ends in a space."""
    doc = json.loads(run_doctor("check", "--json", "--no-probes", env=mismatch_world).stdout)
    commands = _fix_commands(doc)
    assert XFORMERS_FIX in commands
    proc = run_doctor("check", "--no-probes", *flags, env=mismatch_world)
    assert proc.returncode == doc["exit_code"] == 1, proc.stderr
    _no_trailing_spaces(proc.stdout)
    lines = proc.stdout.splitlines()
    for cmd in commands:
        assert any(cmd in ln for ln in lines), cmd
    explanation = next(f["explanation"] for f in doc["findings"] if f["id"] == "xformers.binary-mismatch")
    if flags != ["--markdown"]:  # prose is not wrapped in a pipe either
        assert any(explanation in ln for ln in lines)


def test_probe_list_into_a_pipe_is_one_line_per_probe() -> None:
    """`doctor probe --list` in a pipe with COLUMNS=30: each probe's id, title and needs on its own line."""
    from doctor.probes.catalogue import CATALOGUE

    proc = run_doctor("probe", "--list", env={"COLUMNS": "30"})
    assert proc.returncode == 0
    _no_trailing_spaces(proc.stdout)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(CATALOGUE)
    for spec, line in zip(CATALOGUE, lines):
        assert line.startswith(spec.id) and spec.title in line
        assert all(r in line for r in spec.requires)


def test_cache_status_into_a_pipe_keeps_long_fixes_on_one_line(tmp_path: Path) -> None:
    """A cache under a long path: its fixes (which name the path) are whole lines, without trailing spaces."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "inductor"
    (deep / "ab").mkdir(parents=True)
    (deep / "ab" / "x.py").write_bytes(b"")  # an empty artifact: a warning with a quarantine fix
    e = {"TORCHINDUCTOR_CACHE_DIR": str(deep), "DOCTOR_GPUS": "none", "COLUMNS": "40", "HOME": str(tmp_path / "home"),
         "XDG_CACHE_HOME": str(tmp_path / "xdg"), "DOCTOR_CACHE_DIR": str(tmp_path / "doc"),
         "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    doc = json.loads(run_doctor("cache", "status", "--json", "--which", "inductor", env=e).stdout)
    fixes = _fix_commands(doc)
    assert fixes and all(str(deep) in f for f in fixes)
    proc = run_doctor("cache", "status", "--which", "inductor", env=e)
    assert proc.returncode == 1, proc.stderr
    _no_trailing_spaces(proc.stdout)
    for fix in fixes:
        assert any(f"fix: {fix}" in ln for ln in proc.stdout.splitlines()), fix


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_terminal_prose_wraps_and_fix_commands_do_not(mismatch_world: Dict[str, str]) -> None:
    """A real 60-column terminal: explanations wrap to it, a fix command stays one line (the terminal folds it)."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    e = {**os.environ, **mismatch_world, "NO_COLOR": "1"}
    e.pop("COLUMNS")
    proc = subprocess.Popen([sys.executable, "-m", "doctor", "check", "--no-probes"], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=e)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 1
    lines = ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n").splitlines()
    assert any(XFORMERS_FIX in ln for ln in lines)  # one line, longer than the terminal
    prose = [ln for ln in lines if "fix:" not in ln and "build info:" not in ln and "hidden" not in ln]
    assert max(len(ln) for ln in prose) <= 60, max(prose, key=len)
    assert any(ln.strip().startswith("Package metadata can be satisfied") for ln in lines)  # wrapped, not cut


def test_strip_trailing_writer() -> None:
    """Complete lines lose trailing spaces (also before a style reset); a partial line waits for its end or a flush."""
    buf = io.StringIO()
    w = StripTrailing(buf)
    w.write("a  \nb \x1b[0m\nc ")
    assert buf.getvalue() == "a\nb\x1b[0m\n"
    w.write(" d   \n")
    assert buf.getvalue() == "a\nb\x1b[0m\nc  d\n"
    w.write("prompt? ")
    w.flush()
    assert buf.getvalue().endswith("prompt? ") and not w.isatty()


def test_console_for_a_pipe_never_wraps_a_command() -> None:
    """The doctor's console on a non-terminal: a 300-character command is one line (rich alone wraps at 80)."""
    buf = io.StringIO()
    cmd = "pip install " + " ".join(f"pkg{i}==1.0" for i in range(30))
    print_command(console(file=buf), f"fix: {cmd}", 6)
    assert buf.getvalue() == f"      fix: {cmd}\n"
