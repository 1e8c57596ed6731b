"""`doctor check` end to end, as a user runs it: subprocesses, exit codes, output formats, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_doctor

DATA = REPO / "doctor" / "compat_matrix" / "data"
H100 = "NVIDIA H100 80GB HBM3@9.0@81559"


def no_traceback(proc) -> None:  # type: ignore[no-untyped-def]
    """Bad input must give one line, never a traceback."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_json_report_has_schema_and_exit_code() -> None:
    """--json is valid JSON with a schema version, facts and findings; exit code matches the status."""
    proc = run_doctor("check", "--json", env={"DOCTOR_GPUS": "none"})
    assert proc.returncode in (0, 1, 2), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 2 and doc["exit_code"] == proc.returncode
    assert {"facts", "findings", "summary", "matrix_version", "doctor_version"} <= set(doc)
    assert doc["facts"]["python"] == ".".join(map(str, sys.version_info[:3]))
    for f in doc["findings"]:
        assert {"id", "severity", "category", "title", "evidence", "fix"} <= set(f)


def test_json_check_never_imports_torch(tmp_path: Path) -> None:
    """The fast path keeps torch, xformers and triton out of sys.modules, even when a script is checked."""
    script = tmp_path / "train.py"
    script.write_text("import unsloth\nimport transformers\n")
    code = (
        "import sys, io, contextlib\n"
        "from doctor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main(['check', '--json', '--script', {str(script)!r}])\n"
        "bad = [m for m in ('torch', 'xformers', 'triton', 'transformers', 'httpx') if m in sys.modules]\n"
        "print(rc, bad)\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("[]"), proc.stdout + proc.stderr


def test_text_report_groups_and_summary() -> None:
    """Terminal output: section headers, a summary line with the exit code; NO_COLOR gives no escapes."""
    proc = run_doctor("check", env={"DOCTOR_GPUS": H100, "DOCTOR_DRIVER_VERSION": "580.159.04", "NO_COLOR": "1"})
    assert proc.returncode in (0, 1, 2)
    assert "\x1b[" not in proc.stdout
    assert "GPU & driver" in proc.stdout
    assert f"(exit {proc.returncode}:" in proc.stdout.strip().splitlines()[-1]


def test_markdown_report() -> None:
    """--markdown has the facts table and sections."""
    proc = run_doctor("check", "--markdown", env={"DOCTOR_GPUS": H100, "DOCTOR_DRIVER_VERSION": "580.159.04"})
    assert proc.stdout.startswith("## tune-doctor")
    assert "| fact | value |" in proc.stdout and "### GPU & driver" in proc.stdout


def test_help_documents_exit_codes() -> None:
    """`doctor --help` and `doctor check --help` list the exit codes."""
    for args in (["--help"], ["check", "--help"]):
        proc = run_doctor(*args)
        assert proc.returncode == 0 and "3  the doctor itself could not run" in proc.stdout


def test_malformed_matrix_is_exit_3_one_line(tmp_path: Path) -> None:
    """A broken data file names the file; no traceback."""
    bad = tmp_path / "data"
    shutil.copytree(DATA, bad)
    (bad / "torch_triton.toml").write_text("[meta\nschema = 1\n")
    proc = run_doctor("check", env={"DOCTOR_MATRIX_DIR": str(bad), "DOCTOR_GPUS": "none"})
    assert proc.returncode == 3
    no_traceback(proc)
    assert "torch_triton.toml" in proc.stderr


def test_missing_matrix_dir_is_exit_3(tmp_path: Path) -> None:
    """A matrix dir that does not exist."""
    proc = run_doctor("check", "--json", env={"DOCTOR_MATRIX_DIR": str(tmp_path / "nope"), "DOCTOR_GPUS": "none"})
    assert proc.returncode == 3
    no_traceback(proc)


def test_bad_gpu_override_is_exit_3() -> None:
    """A malformed DOCTOR_GPUS names the variable."""
    proc = run_doctor("check", env={"DOCTOR_GPUS": "H100@nine"})
    assert proc.returncode == 3
    no_traceback(proc)
    assert "DOCTOR_GPUS" in proc.stderr


@pytest.mark.parametrize("content", [None, b"\xff\xfe\x00garbage", b"def broken(:\n"])
def test_unreadable_script_is_exit_3(tmp_path: Path, content) -> None:  # type: ignore[no-untyped-def]
    """--script on a missing, binary or unparseable file."""
    p = tmp_path / "train.py"
    if content is not None:
        p.write_bytes(content)
    proc = run_doctor("check", "--script", str(p), env={"DOCTOR_GPUS": "none"})
    assert proc.returncode == 3
    no_traceback(proc)


def test_script_import_order_is_reported(tmp_path: Path) -> None:
    """A patching import after transformers is an error with line numbers."""
    p = tmp_path / "train.py"
    p.write_text("import os\nfrom transformers import AutoModel\nfrom unsloth import FastLanguageModel\n")
    proc = run_doctor("check", "--json", "--script", str(p), env={"DOCTOR_GPUS": "none"})
    doc = json.loads(proc.stdout)
    hits = [f for f in doc["findings"] if f["id"] == "imports.script-order" and f["severity"] == "error"]
    assert hits and "line 3" in json.dumps(hits[0]["evidence"]) and proc.returncode == 2


def _fake_nvidia_smi(bin_dir: Path, body: str) -> dict:
    """Put an executable nvidia-smi first on PATH; no NVML library exists on CI machines."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_hung_nvidia_smi_still_finishes_within_5s(tmp_path: Path) -> None:
    """An nvidia-smi that never answers: the check ends within 5 s and says what happened."""
    env = _fake_nvidia_smi(tmp_path / "bin", "sleep 60")
    t0 = time.monotonic()
    proc = run_doctor("check", "--json", env=env, timeout=30)
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, elapsed
    assert proc.returncode in (0, 1, 2), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["facts"]["gpus"] == [] or doc["facts"]["gpu_source"] != "nvidia-smi"


def test_garbage_nvidia_smi_output(tmp_path: Path) -> None:
    """nvidia-smi printing nonsense is a note, not a crash."""
    env = _fake_nvidia_smi(tmp_path / "bin", "echo 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate'; exit 9")
    proc = run_doctor("check", "--json", env=env)
    assert proc.returncode in (0, 1, 2), proc.stderr
    json.loads(proc.stdout)


def test_nvidia_smi_real_format_is_read(tmp_path: Path) -> None:
    """The real CSV format of an H100 machine gives a GPU with cc 9.0 and the driver."""
    env = _fake_nvidia_smi(tmp_path / "bin", "echo '0, NVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.04, GPU-1234'")
    proc = run_doctor("check", "--json", env=env)
    doc = json.loads(proc.stdout)
    if doc["facts"]["gpu_source"] in ("nvml", "sysfs", "procfs") and Path("/proc/driver/nvidia/version").exists():
        pytest.skip("a real driver answered first")
    assert doc["facts"]["driver"] == "580.159.04"
    assert doc["facts"]["gpus"][0]["compute_capability"] == "9.0"


@pytest.mark.parametrize("args", [["--timeout", "-5"], ["--timeout", "nan"], ["--jobs", "0"], ["--only", "no-such-probe"]])
def test_probe_bad_options_are_exit_3(args) -> None:  # type: ignore[no-untyped-def]
    """Nonsense probe options are refused in one line."""
    proc = run_doctor("probe", *args, env={"DOCTOR_GPUS": "none"})
    assert proc.returncode == 3
    no_traceback(proc)


def test_probe_unknown_gpu_index_is_exit_3() -> None:
    """--gpu names a GPU that is not there."""
    proc = run_doctor("probe", "--gpu", "7", env={"DOCTOR_GPUS": "NVIDIA H100 80GB HBM3@9.0"})
    assert proc.returncode == 3 and "no such GPU" in proc.stderr


def test_closed_stdout_is_not_an_error() -> None:
    """`doctor check --json | head -c0`: the reader left early; no 'internal error'."""
    import subprocess

    p = subprocess.Popen([sys.executable, "-m", "doctor", "check", "--json", "--no-probes"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "DOCTOR_GPUS": "none"})
    p.stdout.close()  # type: ignore[union-attr]
    err = p.stderr.read().decode()  # type: ignore[union-attr]
    assert p.wait(timeout=60) in (0, 1, 2) and "internal error" not in err, err


# --- exit codes: usage errors are bad input (3), a bug is 4, each command documents its codes ---------

USAGE_ERRORS = [
    ["--frob"],  # unknown flag of the top-level parser
    ["frobnicate"],  # unknown command
    ["check", "--frob"],  # unknown flag of a subcommand
    ["check", "--json", "--markdown"],  # conflicting flags
    ["check", "--probe-timeout", "abc"],  # not a number
    ["check", "--probe-timeout", "-1"],
    ["check", "--probe-timeout", "nan"],
    ["check", "--probe-timeout", "0"],
    ["check", "--probe-timeout", "inf"],
    ["check", "--probe-timeout"],  # missing value
    ["check", "--gpu-timeout", "-1"],
    ["check", "--dry-run"],  # only with --fix
    ["check", "--yes"],
    ["check", "--yes", "--dry-run", "--json"],
    ["probe", "--jobs", "two"],
    ["probe", "--gpu", "-1"],
    ["probe", "--timeout", "0"],
    ["cache", "status", "--yes"],  # --yes/--dry-run are for repair and clear
    ["cache", "verify", "--dry-run"],
    ["cache", "status", "--import-timeout", "abc"],
    ["cache", "status", "--lock-age", "-3"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_usage_errors_exit_3_in_one_line(args) -> None:  # type: ignore[no-untyped-def]
    """argparse's exit 2 would read as "errors found" in CI: every usage error is bad input, exit 3, one line."""
    proc = run_doctor(*args, env={"DOCTOR_GPUS": "none"})
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    no_traceback(proc)
    assert proc.stderr.startswith("doctor: error:") and proc.stdout == ""


@pytest.mark.parametrize("command", [["check", "--json", "--no-probes"], ["probe", "--json"]])
@pytest.mark.parametrize("var,value,named", [
    ("DOCTOR_BACKEND_FOO", "sdpa-flash", "DOCTOR_BACKEND_FOO"),  # no op called foo
    ("DOCTOR_BACKEND_ATTENTION", "flashy", "flashy"),  # no such backend for attention
    ("DOCTOR_BACKEND_RMS_NORM", "sdpa-flash", "rms_norm"),  # a backend of another op
])
def test_backend_override_is_validated_by_check_and_probe(command, var, value, named) -> None:  # type: ignore[no-untyped-def]
    """DOCTOR_BACKEND_* naming no op or no backend: exit 3 and one line, in both commands, before any output."""
    proc = run_doctor(*command, env={"DOCTOR_GPUS": "none", var: value})
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    no_traceback(proc)
    assert named in proc.stderr and proc.stdout == ""


def test_valid_backend_override_is_accepted() -> None:
    """A backend the op has is not bad input (whether it passed its probe is known only after probing)."""
    proc = run_doctor("check", "--json", "--no-probes", env={"DOCTOR_GPUS": "none", "DOCTOR_BACKEND_ATTENTION": "sdpa-flash",
                                                             "DOCTOR_BACKEND_ROPE": ""})
    assert proc.returncode in (0, 1, 2), proc.stderr
    json.loads(proc.stdout)


def test_internal_error_is_exit_4_not_bad_input() -> None:
    """A bug (an unexpected exception) exits 4 in one line, distinct from bad input; --debug shows the traceback."""
    import subprocess

    plant = ("import sys, doctor.commands.check as c\n"
             "def _bug(args):\n    raise ZeroDivisionError('planted\\nbug')\n"
             "c._run = _bug\nfrom doctor.cli import main\nraise SystemExit(main(sys.argv[1:]))\n")
    e = {**os.environ, "DOCTOR_GPUS": "none"}
    proc = subprocess.run([sys.executable, "-c", plant, "check"], capture_output=True, text=True, timeout=60, env=e)
    assert proc.returncode == 4, proc.stderr
    no_traceback(proc)
    assert proc.stderr.startswith("doctor: internal error: ZeroDivisionError: planted bug")
    debug = subprocess.run([sys.executable, "-c", plant, "--debug", "check"], capture_output=True, text=True, timeout=60, env=e)
    assert "Traceback" in debug.stderr and debug.returncode not in (0, 3, 4)


@pytest.mark.parametrize("command", [[], ["check"], ["probe"], ["cache"], ["install"]])
def test_every_command_documents_its_exit_codes(command) -> None:  # type: ignore[no-untyped-def]
    """Each --help lists its codes from doctor.exits, each code once; commands that change things add 5, plans add 6."""
    from doctor.exits import ExitCode

    proc = run_doctor(*command, "--help")
    assert proc.returncode == 0
    block = proc.stdout.split("exit codes:\n", 1)[1]
    # a code's row is the number, two spaces, its meaning; notes below the table ('3 also: ...') are not rows
    codes = [int(m.group(1)) for m in re.finditer(r"^ *(\d+)  \S", block, re.M)]
    assert len(codes) == len(set(codes)), codes
    for code in (ExitCode.HEALTHY, ExitCode.WARNINGS, ExitCode.ERRORS, ExitCode.BAD_INPUT, ExitCode.INTERNAL):
        assert f"{int(code)}  {code.meaning}" in block
    assert (ExitCode.CHANGE_FAILED in codes) == (command in ([], ["check"], ["cache"], ["install"]))
    assert (ExitCode.PLAN_DEFECT in codes) == (command in ([], ["check"], ["install"]))


def test_readme_exit_code_table_matches_the_code() -> None:
    """README's exit-code table has one row per ExitCode, with its meaning."""
    from doctor.exits import ExitCode

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"| {int(code)} | {code.meaning} |" in readme, code


@pytest.mark.parametrize("args,help_of", [
    (["--frob"], "doctor --help"),
    (["check", "--frob"], "doctor check --help"),
    (["cache", "status", "--frob"], "doctor cache --help"),
    (["train", "x.toml", "--frob"], "doctor train --help"),
])
def test_unknown_option_points_at_the_subcommands_help(args, help_of) -> None:  # type: ignore[no-untyped-def]
    """An unknown option names the help of the command it was given to, not the top level's."""
    proc = run_doctor(*args, env={"DOCTOR_GPUS": "none"})
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert f"unrecognized arguments: --frob (see `{help_of}`)" in proc.stderr, proc.stderr
