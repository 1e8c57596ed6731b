"""A healthy default unsloth install on a T4, checked as a user would: `doctor check` exits 0 (issue 7).

The world is a real virtual environment whose site-packages holds real dist-infos (torch's with its
torch/version.py) for a compatible stack, with the doctor and its own dependencies linked in (so the
inventory sees exactly this stack, nothing of the machine running the tests). The doctor runs in a child
process from a writable working directory, with a simulated T4 (cc 7.5, no bf16) and driver.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import List, Set

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, torch_version_py
from tests.inventory.builders import write_dist, write_torch

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="venv layout and /proc")

# unsloth 2026.10.9's own requirements (pairs.toml): zoo >= 2026.10.10, transformers <= 5.17.0, trl <= 1.15.0,
# bitsandbytes >= 0.45.5 (!= 0.46.0, 0.48.0), torch >= 2.4, < 2.15; torch 2.6.0+cu124 runs on a 550 driver (12.4).
STACK = {"unsloth": "2026.10.9", "unsloth-zoo": "2026.10.10", "transformers": "5.17.0", "trl": "1.15.0",
         "peft": "0.17.1", "accelerate": "1.10.1", "bitsandbytes": "0.47.0", "triton": "3.2.0"}
TORCH = "2.6.0+cu124"
DOCTOR_REQUIRES = ("packaging", "rich", "httpx", "platformdirs", "filelock")  # pyproject's dependencies


def _closure(names: List[str]) -> Set[str]:
    """The installed distributions these need, transitively (markers evaluated, extras left out)."""
    seen: Set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _link_distribution(name: str, site: Path) -> None:
    """Symlink one installed distribution's top-level packages and its dist-info into site."""
    dist = md.distribution(name)
    for top in sorted({f.parts[0] for f in dist.files or () if f.parts and f.parts[0] not in ("..", "bin")}):
        src = Path(str(dist.locate_file(top)))
        if src.exists() and not (site / top).exists():
            (site / top).symlink_to(src)


@pytest.fixture(scope="module")
def t4_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """venv (no pip) + the doctor (a .pth to this checkout) + its dependencies + the stack's dist-infos."""
    root = tmp_path_factory.mktemp("t4") / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    [site] = (root / "lib").glob("python*/site-packages")
    (site / "tune_doctor_checkout.pth").write_text(str(REPO) + "\n")
    for name in sorted(_closure(list(DOCTOR_REQUIRES))):
        _link_distribution(name, site)
    write_torch(site, torch_version_py(TORCH, "12.4"), TORCH)
    for name, version in STACK.items():
        write_dist(site, name, version)
    return root


def _check(t4_venv: Path, tmp_path: Path, cwd: Path, *more: str) -> "subprocess.CompletedProcess[str]":
    """`doctor check --json --no-probes` in the venv, on a simulated T4 with a 550 driver, started in cwd."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg"), "DOCTOR_GPUS": "Tesla T4@7.5@15360",
           "DOCTOR_DRIVER_VERSION": "550.54.15", "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
    proc = subprocess.run([str(t4_venv / "bin" / "python"), "-m", "doctor", "check", "--json", "--no-probes", *more],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL)
    assert proc.stdout.strip(), proc.stderr
    return proc


@linux_only
def test_healthy_default_unsloth_on_a_t4_exits_0(t4_venv: Path, tmp_path: Path) -> None:
    """Default (cwd-relative) unsloth cache in a writable working directory: exit 0; the cache location is INFO
    with its fix (UNSLOTH_COMPILE_LOCATION=<absolute per-user dir>), never a warning."""
    work = tmp_path / "work"
    work.mkdir()
    proc = _check(t4_venv, tmp_path, work)
    doc = json.loads(proc.stdout)
    assert doc["facts"]["torch_build"]["version"] == TORCH and doc["facts"]["gpus"][0]["compute_capability"] == "7.5"
    assert doc["facts"]["executable"].startswith(str(t4_venv))  # the stack of this venv, not the test machine's
    above_info = [(f["id"], f["severity"], f["title"]) for f in doc["findings"] if f["severity"] in ("warn", "error")]
    assert proc.returncode == 0 and above_info == [], (proc.returncode, above_info)
    [rel] = [f for f in doc["findings"] if f["id"] == "cache.unsloth-relative"]
    assert rel["severity"] == "info" and rel["evidence"]["resolved path"] == str(work / "unsloth_compiled_cache")
    [fix] = rel["fix"]
    want = str(tmp_path / "xdg" / "unsloth_compiled_cache")
    assert fix["kind"] == "set-env" and fix["name"] == "UNSLOTH_COMPILE_LOCATION" and fix["value"] == want
    assert fix["command"] == f"export UNSLOTH_COMPILE_LOCATION={want}"
    assert not (work / "unsloth_compiled_cache").exists()  # looking creates nothing


@linux_only
def test_read_only_working_directory_is_a_warning_not_an_error(t4_venv: Path, tmp_path: Path) -> None:
    """The seed report: unsloth 2026.10 started in a read-only directory falls back to the shared temp dir and
    trains; the doctor says so as warnings (exit 1), not as an error (exit 2). /proc is read-only for root too."""
    proc = _check(t4_venv, tmp_path, Path("/proc"))
    doc = json.loads(proc.stdout)
    sev = {f["id"]: f["severity"] for f in doc["findings"] if f["id"].startswith("cache.unsloth")}
    assert proc.returncode == 1, (proc.returncode, sev)
    assert sev["cache.unsloth-unwritable"] == "warn" and sev["cache.unsloth-relative"] == "warn"
    assert [f["id"] for f in doc["findings"] if f["severity"] == "error"] == []


@linux_only
def test_script_in_another_directory_makes_the_relative_cache_a_warning(t4_venv: Path, tmp_path: Path) -> None:
    """`doctor check --script ../jobs/train.py`: started beside the script, unsloth would compile into another
    cache than from here, so the cwd-relative location becomes a WARN (exit 1) naming both directories."""
    work, jobs = tmp_path / "work", tmp_path / "jobs"
    work.mkdir()
    jobs.mkdir()
    (jobs / "train.py").write_text("import unsloth\nimport transformers\n")
    doc = json.loads(_check(t4_venv, tmp_path, work, "--script", "../jobs/train.py").stdout)
    [rel] = [f for f in doc["findings"] if f["id"] == "cache.unsloth-relative"]
    assert rel["severity"] == "warn" and doc["exit_code"] == 1
    assert rel["evidence"][f"started in {jobs}"] == str(jobs / "unsloth_compiled_cache")
    (work / "train.py").write_text("import unsloth\n")
    proc = _check(t4_venv, tmp_path, work, "--script", "train.py")  # beside the working directory: the same cache
    assert proc.returncode == 0, proc.stdout[-2000:]
