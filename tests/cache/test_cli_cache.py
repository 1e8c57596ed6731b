"""`doctor cache ...` and `doctor check` end to end, as a user runs them: subprocesses, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.cache.conftest import header, module, tree, triton_kernel

REPO = Path(__file__).resolve().parents[2]


class Env:
    """A working directory and every cache root under tmp_path; HOME and XDG too, so nothing touches the real home."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cwd = tmp / "work"
        self.cwd.mkdir()
        self.unsloth = tmp / "uc"
        self.triton, self.inductor, self.doctor = tmp / "triton", tmp / "inductor", tmp / "doctor"
        self.site = tmp / "site"
        self.vars = {"UNSLOTH_COMPILE_LOCATION": str(self.unsloth), "TRITON_CACHE_DIR": str(self.triton),
                     "TORCHINDUCTOR_CACHE_DIR": str(self.inductor), "DOCTOR_CACHE_DIR": str(self.doctor),
                     "HOME": str(tmp / "home"), "XDG_CACHE_HOME": str(tmp / "xdg"), "DOCTOR_GPUS": "none",
                     "NO_COLOR": "1", "COLUMNS": "200"}

    def install_unsloth(self) -> None:
        """A stand-in unsloth + unsloth_zoo (real dist-info METADATA, an importable package) on PYTHONPATH."""
        for name, ver in (("unsloth", "2026.10.9"), ("unsloth_zoo", "2026.10.9"), ("transformers", "5.17.0"),
                          ("trl", "1.15.0")):
            di = self.site / f"{name}-{ver}.dist-info"
            di.mkdir(parents=True)
            (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
            (self.site / name).mkdir()
            (self.site / name / "__init__.py").write_text("")
        self.vars["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), os.environ.get("PYTHONPATH", "")]))

    def run(self, *args: str, extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSLOTH_", "TRITON_", "TORCHINDUCTOR_", "DOCTOR_"))}
        env.update(self.vars)
        env.update(extra or {})
        return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True, timeout=120,
                              env=env, cwd=str(self.cwd), stdin=subprocess.DEVNULL)

    def json(self, *args: str, code: int) -> dict:
        proc = self.run(*args, "--json")
        assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
        doc = json.loads(proc.stdout)
        assert doc["exit_code"] == code and doc["schema_version"] == 2
        return doc


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def sev_ids(doc: dict, *levels: str) -> list:
    return sorted(f["id"] for f in doc["findings"] if f["severity"] in levels)


def test_status_json_on_caches_that_do_not_exist(env: Env) -> None:
    """Nothing created yet: exit 0, every root listed with how it was resolved; nothing gets created."""
    doc = env.json("cache", "status", code=0)
    assert doc["command"] == "cache status"
    kinds = {r["kind"]: r for r in doc["roots"]}
    assert set(kinds) == {"unsloth", "triton", "inductor", "doctor"}
    assert kinds["triton"]["source"] == "TRITON_CACHE_DIR" and kinds["triton"]["status"] == "missing"
    assert kinds["triton"]["writable"] is True and kinds["triton"]["fs_type"]
    assert sorted(p.name for p in env.tmp.iterdir()) == ["work"]


def test_exit_codes_warn_and_error(env: Env) -> None:
    """An empty inductor artifact: 1 (warning). A Triton group that does not parse: 2 (error)."""
    (env.inductor / "ab").mkdir(parents=True)
    (env.inductor / "ab" / "x.py").write_bytes(b"")
    doc = env.json("cache", "status", code=1)
    assert sev_ids(doc, "warn", "error") == ["cache.zero-byte"]
    triton_kernel(env.triton, "KEY", group_text="{")
    doc = env.json("cache", "status", "--which", "triton", code=2)
    assert sev_ids(doc, "warn", "error") == ["cache.triton-broken-group"]
    assert [r["kind"] for r in doc["roots"]] == ["triton"]


@pytest.mark.parametrize("args", [("cache", "status", "--which", "frob"), ("cache", "frobnicate"),
                                  ("cache", "status", "--timeout", "-1"), ("cache", "verify", "--preload", "a b"),
                                  ("cache", "status", "--timeout", "nan")])
def test_bad_input_is_exit_3_one_line(env: Env, args) -> None:  # type: ignore[no-untyped-def]
    """Bad input: exit 3, one line on stderr, no traceback."""
    proc = env.run(*args)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("doctor: error:")


def test_verify_repair_dry_run_repair(env: Env) -> None:
    """verify finds a broken and a stale module; --dry-run changes nothing; repair moves them, re-check is clean."""
    env.install_unsloth()
    env.unsloth.mkdir()
    (env.unsloth / "UnslothSFTTrainer.py").write_text(module("UnslothSFTTrainer"))
    (env.unsloth / "UnslothDPOTrainer.py").write_text(header() + "def f(:\n")
    (env.unsloth / "UnslothKTOTrainer.py").write_text(module("UnslothKTOTrainer", trl="1.13.0"))
    (env.unsloth / "moe_utils.py").write_text("import os\n")
    os.chmod(env.unsloth / "moe_utils.py", 0o666)
    doc = env.json("cache", "verify", "--which", "unsloth", code=2)
    assert sev_ids(doc, "warn", "error") == ["cache.unsloth-broken-module", "cache.unsloth-stale-module",
                                             "cache.world-writable"]
    [broken] = [f for f in doc["findings"] if f["id"] == "cache.unsloth-broken-module"]
    assert broken["evidence"]["result"] == "syntax-error" and broken["subject"].endswith("UnslothDPOTrainer.py")
    before = tree(env.tmp)
    doc = env.json("cache", "repair", "--which", "unsloth", "--dry-run", code=2)
    assert tree(env.tmp) == before and doc["dry_run"] is True
    assert sorted(a["action"]["kind"] for a in doc["applied"]) == ["chmod", "quarantine", "quarantine"]
    assert all(a["ok"] and a["result"].startswith("would ") for a in doc["applied"])
    doc = env.json("cache", "repair", "--which", "unsloth", "--yes", code=0)
    assert all(a["ok"] for a in doc["applied"])
    assert sorted(p.name for p in env.unsloth.iterdir()) == ["UnslothSFTTrainer.py", "moe_utils.py"]
    [stamp] = os.listdir(env.tmp / "uc.quarantine")
    assert sorted(os.listdir(env.tmp / "uc.quarantine" / stamp)) == ["UnslothDPOTrainer.py", "UnslothKTOTrainer.py"]
    assert oct(os.stat(env.unsloth / "moe_utils.py").st_mode & 0o777) == "0o644"
    assert [f["id"] for f in doc["after"] if f["severity"] != "ok"] == []


def test_repair_relative_location_prints_how_to_persist(env: Env) -> None:
    """Default cwd-relative location: repair pins it, prints export/%env/os.environ lines, exits 1 (not persisted)."""
    env.install_unsloth()
    del env.vars["UNSLOTH_COMPILE_LOCATION"]
    (env.cwd / "unsloth_compiled_cache").mkdir()
    proc = env.run("cache", "repair", "--which", "unsloth", "--yes")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    target = env.cwd / "unsloth_compiled_cache"
    assert f"export UNSLOTH_COMPILE_LOCATION={target}" in proc.stdout
    assert f"%env UNSLOTH_COMPILE_LOCATION={target}" in proc.stdout and "os.environ" in proc.stdout


def test_clear_moves_caches_to_quarantine(env: Env) -> None:
    """clear --dry-run changes nothing; clear moves each existing cache aside and leaves an empty one."""
    triton_kernel(env.triton, "KEY")
    (env.inductor / "x").mkdir(parents=True)
    before = tree(env.tmp)
    doc = env.json("cache", "clear", "--which", "triton,inductor", "--dry-run", code=0)
    assert tree(env.tmp) == before and len(doc["applied"]) == 2
    refused = env.run("cache", "clear", "--which", "triton")  # no terminal, no --yes: nothing moves
    assert refused.returncode == 3 and "--yes" in refused.stderr and tree(env.tmp) == before
    env.json("cache", "clear", "--which", "triton", "--yes", code=0)
    assert os.listdir(env.triton) == [] and (env.tmp / "triton.quarantine").is_dir()
    assert (env.inductor / "x").is_dir()


def test_clear_refuses_system_and_top_level_directories() -> None:
    """TRITON_CACHE_DIR=/usr (a typo or a bad guide): never treated as a cache to move."""
    from doctor.cache.roots import protected_reason

    assert protected_reason("/usr") and protected_reason("/usr/local/share") and protected_reason("/data")
    assert protected_reason("/etc/triton") and not protected_reason("/data/cache/triton", cwd="/elsewhere")


def test_text_output(env: Env) -> None:
    """Terminal output names every root and ends with the summary and exit code."""
    (env.inductor / "ab").mkdir(parents=True)
    (env.inductor / "ab" / "x.py").write_bytes(b"")
    proc = env.run("cache", "status")
    assert proc.returncode == 1 and "\x1b[" not in proc.stdout
    for label in ("unsloth compiled cache", "Triton cache", "TorchInductor cache", "tune-doctor cache"):
        assert label in proc.stdout
    assert "(cache.zero-byte)" in proc.stdout and proc.stdout.rstrip().endswith("(exit 1: warnings)")


def test_doctor_check_shows_cache_findings_without_importing_torch(env: Env) -> None:
    """`doctor check` carries the cheap cache findings; torch/triton/unsloth stay out of the doctor process."""
    triton_kernel(env.triton, "KEY", group_text="{")
    code = ("import sys, io, contextlib\nfrom doctor.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    rc = main(['check', '--json'])\n"
            "bad = [m for m in ('torch', 'triton', 'unsloth', 'unsloth_zoo', 'transformers') if m in sys.modules]\n"
            "doc = __import__('json').loads(buf.getvalue())\n"
            "print(rc, bad, sorted(f['id'] for f in doc['findings'] if f['category'] == 'caches'))\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("UNSLOTH_", "TRITON_", "TORCHINDUCTOR_", "DOCTOR_"))}
    e.update(env.vars)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=e, cwd=str(env.cwd))
    rc, rest = proc.stdout.strip().split(" ", 1)
    assert rc == "2" and rest.startswith("[] "), proc.stdout + proc.stderr
    assert "cache.triton-broken-group" in rest


def _broken_unsloth_cache(env: Env) -> None:
    """A cache with one module that does not compile: repair plans one quarantine."""
    env.install_unsloth()
    env.unsloth.mkdir()
    (env.unsloth / "UnslothDPOTrainer.py").write_text(header() + "def f(:\n")


@pytest.mark.parametrize("json_out", [False, True])
def test_repair_without_terminal_or_yes_refuses_and_changes_nothing(env: Env, json_out: bool) -> None:
    """stdin not a terminal and no --yes: one line, exit 3, before any work; nothing moved (--dry-run never asks)."""
    _broken_unsloth_cache(env)
    before = tree(env.tmp)
    proc = env.run("cache", "repair", "--which", "unsloth", *(["--json"] if json_out else []))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stderr.startswith("doctor: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "--yes" in proc.stderr and proc.stdout == "" and tree(env.tmp) == before
    env.json("cache", "repair", "--which", "unsloth", "--dry-run", code=2)  # no terminal needed for the plan
    assert tree(env.tmp) == before


def _on_a_terminal(env: Env, answer: bytes, *args: str) -> subprocess.CompletedProcess:
    """Run the doctor with a pseudo-terminal as stdin and `answer` typed into it (stdout/stderr still captured)."""
    master, slave = os.openpty()
    os.write(master, answer)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("UNSLOTH_", "TRITON_", "TORCHINDUCTOR_", "DOCTOR_"))}
    e.update(env.vars)
    try:
        return subprocess.run([sys.executable, "-m", "doctor", *args], stdin=slave, capture_output=True, text=True,
                              timeout=120, env=e, cwd=str(env.cwd))
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_repair_on_a_terminal_asks_first(env: Env) -> None:
    """A terminal: the findings and the plan, then the question; 'n' changes nothing, 'y' applies it."""
    _broken_unsloth_cache(env)
    before = tree(env.tmp)
    no = _on_a_terminal(env, b"n\n", "cache", "repair", "--which", "unsloth")
    assert no.returncode == 2, no.stdout + no.stderr  # the findings' code: nothing was repaired
    assert "apply this change? [y/N]" in no.stderr and "nothing changed" in no.stderr
    assert "Plan: 1 action" in no.stdout and "would " in no.stdout and tree(env.tmp) == before
    yes = _on_a_terminal(env, b"y\n", "cache", "repair", "--which", "unsloth", "--json")
    assert yes.returncode == 0, yes.stdout + yes.stderr
    doc = json.loads(yes.stdout)  # the plan and the question went to stderr: stdout is one document
    assert [a["ok"] for a in doc["applied"]] == [True] and doc["dry_run"] is False
    assert not (env.unsloth / "UnslothDPOTrainer.py").exists()


def test_a_change_that_fails_is_exit_5_not_2(env: Env) -> None:
    """clear of a cache pointed at a top-level directory is refused: exit 5 ("a change failed"), never 2."""
    env.vars["TRITON_CACHE_DIR"] = "/usr"
    doc = env.json("cache", "clear", "--which", "triton", "--dry-run", code=5)
    assert doc["status"] == "a change failed" and [a["ok"] for a in doc["applied"]] == [False]
    assert doc["applied"][0]["result"].startswith("refused")
    text = env.run("cache", "clear", "--which", "triton", "--dry-run")
    assert text.returncode == 5 and text.stdout.rstrip().endswith("(exit 5: a change failed)")
