"""`doctor run` end to end, as a user runs it (real subprocesses of the CLI), and the launcher's cache pinning.

The scripts import transformers FIRST and still find the runtime's class patches in force: the launcher applies
them before the script's first line. Each script writes what it saw to a JSON file the test reads.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.conftest import run_doctor

HEALTHY = {"DOCTOR_GPUS": "none", "NO_COLOR": "1"}
# A simulated H100 beside this CPU-only torch: `torch.cpu-build-on-gpu`, an error finding (probes never run on
# simulated hardware, so the check stays fast).
BROKEN = {"DOCTOR_GPUS": "NVIDIA H100 80GB HBM3@9.0@81559", "DOCTOR_DRIVER_VERSION": "580.159.04", "NO_COLOR": "1"}

SCRIPT = '''\
import transformers  # first, on purpose: the launcher's patches must already be in force
import json, sys
from transformers import LlamaConfig, LlamaForCausalLM
import doctor.runtime
from doctor.runtime import modules

model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2))
norm_patched = type(model.model.norm).forward is modules.rms_norm_forward
assert doctor.runtime.is_active(), "class patches not in force"
assert norm_patched, "RMSNorm forward is not the runtime's"
seen = {"argv": sys.argv[1:], "name": __name__, "active": doctor.runtime.is_active(), "norm_patched": norm_patched,
        "path0": sys.path[0]}
with open(__file__ + ".seen.json", "w") as f:
    json.dump(seen, f)
mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "code":
    sys.exit(int(sys.argv[2]))
if mode == "message":
    sys.exit("stopped: a message")
if mode == "raise":
    raise ValueError("the script failed on purpose")
print("script stdout")
'''


def _script(tmp_path: Path) -> Path:
    p = tmp_path / "train_tiny.py"
    p.write_text(SCRIPT)
    return p


def _seen(script: Path) -> Dict[str, Any]:
    out: Dict[str, Any] = json.loads(Path(str(script) + ".seen.json").read_text())
    return out


def _doctor_run(*args: str, env: Dict[str, str], cwd: Path) -> "subprocess.CompletedProcess[str]":
    """`python -m doctor run ARGS` in `cwd` (the script's relative path works as a user types it)."""
    e = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "doctor", "run", *args], capture_output=True, text=True, timeout=240,
                          env=e, cwd=str(cwd), stdin=subprocess.DEVNULL)


def test_script_importing_transformers_first_is_patched_and_gets_its_argv(tmp_path: Path) -> None:
    """transformers imported first still gets the class patches; argv (flags included) reaches the script; exit 0."""
    script = _script(tmp_path)
    proc = _doctor_run("train_tiny.py", "--", "--lr", "3", "--force", "--no-probes", "-h", env=HEALTHY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = _seen(script)
    # after SCRIPT everything is the script's, as `python train_tiny.py -- --lr 3 ...` passes it: `--` and the
    # doctor's own flag names included
    assert seen["argv"] == ["--", "--lr", "3", "--force", "--no-probes", "-h"]
    assert seen["name"] == "__main__" and seen["active"] and seen["norm_patched"]
    assert seen["path0"] == str(tmp_path)  # as `python train_tiny.py`: the script's directory first
    assert proc.stdout == "script stdout\n"  # stdout is the script's alone; the doctor writes to stderr
    assert "Imports (train_tiny.py)" in proc.stderr
    assert proc.stderr.index("Imports (train_tiny.py)") < proc.stderr.index("check: ")  # import order shown first
    assert "doctor run: the runtime's class-level patches are in force; starting train_tiny.py" in proc.stderr


@pytest.mark.parametrize("args, code, text", [
    (("code", "3"), 3, None),
    (("message",), 1, "stopped: a message"),
    (("raise",), 1, "ValueError: the script failed on purpose"),
], ids=["sys.exit(3)", "sys.exit(message)", "exception"])
def test_exit_code_is_the_scripts(tmp_path: Path, args, code, text) -> None:  # type: ignore[no-untyped-def]
    """sys.exit(N) -> N; sys.exit("msg") -> msg on stderr and 1; an exception -> its traceback (script frames) and 1."""
    script = _script(tmp_path)
    proc = _doctor_run("--no-probes", str(script), *args, env=HEALTHY, cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert _seen(script)["argv"] == list(args)
    if text is not None:
        assert text in proc.stderr
    if args == ("raise",):
        tb = proc.stderr[proc.stderr.index("Traceback (most recent call last):"):]
        assert f'File "{script}", line' in tb
        assert "runpy" not in tb and "launch.py" not in tb  # the user's frames only, as `python script.py` shows
    else:
        assert "Traceback" not in proc.stderr


def test_errors_refuse_to_start_and_force_starts_anyway(tmp_path: Path) -> None:
    """An error finding: printed, exit 2, the script never runs; --force prints it and starts the script."""
    script = _script(tmp_path)
    refused = _doctor_run(str(script), "--lr", "3", env=BROKEN, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "torch.cpu-build-on-gpu" in refused.stderr and "--force" in refused.stderr
    assert "not starting" in refused.stderr
    assert not Path(str(script) + ".seen.json").exists()
    forced = _doctor_run("--force", str(script), "code", "0", env=BROKEN, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "torch.cpu-build-on-gpu" in forced.stderr and "despite the errors above (--force)" in forced.stderr
    assert _seen(script)["norm_patched"]


def test_import_order_error_of_the_script_refuses(tmp_path: Path) -> None:
    """The script's own import-order error (unsloth after transformers) is shown first and refuses the start."""
    bad = tmp_path / "late_unsloth.py"
    bad.write_text("import transformers\nimport unsloth\n")
    proc = run_doctor("run", str(bad), env=HEALTHY)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Imports (late_unsloth.py)")
    assert "unsloth is imported after transformers" in proc.stderr
    assert "imports.script-order" in proc.stderr


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.py", "no such script: "),
    (lambda d: d, "is a directory"),
    (lambda d: (d / "nb.ipynb").write_text("{}") and d / "nb.ipynb", "is a notebook"),
], ids=["missing", "directory", "notebook"])
def test_unrunnable_script_is_exit_3_in_one_line(tmp_path: Path, make, message) -> None:  # type: ignore[no-untyped-def]
    """A script that cannot be run: one line naming it, exit 3, no traceback, nothing started."""
    path = make(tmp_path)
    proc = run_doctor("run", str(path), env=HEALTHY)
    assert proc.returncode == 3
    assert proc.stderr.startswith("doctor: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_usage_errors(tmp_path: Path) -> None:
    """No script: exit 3 in one line; a bad DOCTOR_BACKEND_<OP> is bad input before anything starts."""
    proc = run_doctor("run", env=HEALTHY)
    assert proc.returncode == 3 and "SCRIPT" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    script = _script(tmp_path)
    proc = run_doctor("run", str(script), env={**HEALTHY, "DOCTOR_BACKEND_RMS_NORM": "nope"})
    assert proc.returncode == 3 and "DOCTOR_BACKEND_RMS_NORM=nope" in proc.stderr
    assert not Path(str(script) + ".seen.json").exists()


def test_help_documents_the_exit_codes() -> None:
    """`doctor run --help`: the usage with SCRIPT [ARGS ...], the doctor's codes and the script's."""
    proc = run_doctor("run", "--help")
    assert proc.returncode == 0
    assert "SCRIPT [ARGS ...]" in proc.stdout and "exit codes:" in proc.stdout
    assert "the exit code is the script's own" in proc.stdout


# --- the launcher's cache pinning, in process -------------------------------------------------------------------

def test_relative_cache_location_is_pinned_where_it_resolves(tmp_path: Path) -> None:
    """A relative TRITON_CACHE_DIR becomes the absolute directory it names from the working directory."""
    from doctor.runtime.launch import pin_caches

    env = {"TRITON_CACHE_DIR": "rel/cache", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = pin_caches(env, cwd=str(tmp_path), kinds=("triton", "inductor"))
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / "rel" / "cache")
    assert [s.var for s in done] == ["TRITON_CACHE_DIR"]  # the usable absolute inductor dir is kept as it is
    assert "relative to the working directory" in done[0].why
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_unusable_cache_moves_to_a_verified_per_user_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache path that is a file, or a directory every user can write, moves to the doctor's suggestion."""
    from doctor.runtime.launch import pin_caches

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # platformdirs' user cache dir: the suggestion
    afile = tmp_path / "a-file"
    afile.write_text("x")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = {"TRITON_CACHE_DIR": str(afile), "TORCHINDUCTOR_CACHE_DIR": str(shared)}
    done = {s.var: s for s in pin_caches(env, cwd=str(tmp_path), kinds=("triton", "inductor"))}
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / "xdg" / "triton")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "xdg" / "torchinductor")
    assert "not a directory" in done["TRITON_CACHE_DIR"].why
    assert "writable by every user" in done["TORCHINDUCTOR_CACHE_DIR"].why
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777  # nothing is changed in place


def test_launcher_without_a_script_is_bad_input() -> None:
    """`python -m doctor.runtime.launch` alone: usage in one line, exit 3; a missing script likewise."""
    from doctor.runtime.launch import main

    assert main([]) == 3
    assert main(["--debug", "--", "/nonexistent/train.py"]) == 3


@pytest.mark.parametrize("body, code, text", [
    ("raise RuntimeError('a broken transformers install')", 4,
     "doctor run: internal error: the runtime could not patch: RuntimeError: a broken transformers install"),
    ("raise ModuleNotFoundError(\"No module named 'transformers'\", name='transformers')", 0,
     "doctor run: the runtime's patches are not applied: No module named 'transformers'"),
], ids=["broken", "missing"])
def test_launcher_when_the_runtime_cannot_patch(tmp_path: Path, body: str, code: int, text: str) -> None:
    """A transformers that fails to import: one line and exit 4, the script never starts (not a silent unpatched
    run); one that is not there: one line saying the patches are not applied, and the script runs."""
    shadow = tmp_path / "shadow" / "transformers"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(body + "\n")
    script = tmp_path / "plain.py"
    script.write_text("import sys\nprint('ran', sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "doctor.runtime.launch", "--", str(script), "-x"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == code, proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ("ran ['-x']\n" if code == 0 else "")
    if code:
        debug = subprocess.run([sys.executable, "-m", "doctor.runtime.launch", "--debug", str(script)],
                               capture_output=True, text=True, timeout=120, env=env)
        assert debug.returncode not in (0, 4) and "Traceback" in debug.stderr and "a broken transformers" in debug.stderr


def test_launcher_with_a_backend_the_runtime_refuses_is_bad_input(tmp_path: Path) -> None:
    """DOCTOR_BACKEND_<OP> naming no op, straight to the launcher: one line, exit 3 (not "internal error", 4)."""
    script = tmp_path / "plain.py"
    script.write_text("print('ran')\n")
    env = {**os.environ, "DOCTOR_BACKEND_RMSNORM": "triton", "DOCTOR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "doctor.runtime.launch", "--", str(script)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "doctor run: error: DOCTOR_BACKEND_RMSNORM=triton: no op called 'rmsnorm'" in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_ctrl_c_in_the_script_is_130_with_its_traceback(tmp_path: Path) -> None:
    """SIGINT inside the script: KeyboardInterrupt's traceback (script frames) and exit 130, as shells report it.
    (transformers is shadowed as missing, so the launcher skips the patches and this stays fast.)"""
    shadow = tmp_path / "shadow" / "transformers"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'transformers'\", name='transformers')\n")
    script = tmp_path / "interrupted.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nimport time\ntime.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "doctor.runtime.launch", str(script)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 130, proc.stderr
    assert "KeyboardInterrupt" in proc.stderr and f'File "{script}", line 2' in proc.stderr
    assert "runpy" not in proc.stderr


def test_no_probes_reaches_the_runtime(tmp_path: Path) -> None:
    """`doctor run --no-probes`: the script's runtime is told not to probe (DOCTOR_RUNTIME_PROBES=0)."""
    script = tmp_path / "show.py"
    script.write_text("import os, sys\nsys.stdout.write(os.environ.get('DOCTOR_RUNTIME_PROBES', 'unset'))\n")
    proc = _doctor_run("--no-probes", str(script), env=HEALTHY, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("0"), proc.stderr
    proc = _doctor_run(str(script), env=HEALTHY, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("unset"), proc.stderr


def test_runtime_with_probes_off_on_a_gpu_machine_uses_references_and_says_so(tmp_path: Path) -> None:
    """A (simulated) GPU, no cached verdicts, DOCTOR_RUNTIME_PROBES=0: no probe runs; the references, one line."""
    import io

    from doctor.runtime.choice import pick

    env = {**os.environ, "DOCTOR_GPUS": "NVIDIA H100 80GB HBM3@9.0", "DOCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "DOCTOR_RUNTIME_PROBES": "0"}
    env = {k: v for k, v in env.items() if not k.startswith("DOCTOR_BACKEND_")}
    out = io.StringIO()
    picks = pick(["rms_norm", "swiglu"], environ=env, out=out)
    assert {c.backend for c in picks.choices.values()} == {"torch"}
    assert out.getvalue().count("\n") == 1 and "probes off: DOCTOR_RUNTIME_PROBES=0" in out.getvalue()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*probes*"))


def test_under_torchrun_only_local_rank_0_checks(tmp_path: Path) -> None:
    """Every rank of a torchrun job runs `doctor run`: a rank other than the node's first leaves the check (and
    its probes) to local rank 0 and starts the script, patched, with one line saying so; rank 0 checks as ever."""
    script = _script(tmp_path)
    other = _doctor_run(str(script), "code", "0", env={**BROKEN, "LOCAL_RANK": "1"}, cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert "doctor run: local rank 1: the check is local rank 0's" in other.stderr
    assert "torch.cpu-build-on-gpu" not in other.stderr  # no check ran here
    assert _seen(script)["norm_patched"]
    first = _doctor_run(str(script), "code", "0", env={**BROKEN, "LOCAL_RANK": "0"}, cwd=tmp_path)
    assert first.returncode == 2 and "torch.cpu-build-on-gpu" in first.stderr, first.stderr
