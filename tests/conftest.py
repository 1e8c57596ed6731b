"""Shared fixtures: real wheels (downloaded once, or built small here) installed with pip into test folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import pytest

from tests.wheels import build_wheel, download, install_target

REPO = Path(__file__).resolve().parents[1]
WHEEL_CACHE = REPO / ".cache" / "wheels"


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Skip `gpu` tests when no CUDA GPU is visible (CI has none)."""
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_wheels() -> Dict[str, Path]:
    """Real wheels from the package index, fetched once into .cache/wheels (small ones only)."""
    return download(
        WHEEL_CACHE,
        "xformers==0.0.35",
        "unsloth==2025.3.14",
        "unsloth_zoo==2025.3.9",
        "unsloth_zoo==2025.3.11",
    )


def torch_cpu_wheel() -> str:
    """torch 2.13.0 CPU for this Python: the file on this machine's disk when present, else the index."""
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    local = sorted(Path("/opt/wheels").glob(f"torch-2.13.0+cpu-{tag}-*.whl")) if Path("/opt/wheels").is_dir() else []
    if local:
        return str(local[0])
    if sys.version_info < (3, 10):
        pytest.skip("torch 2.13.0 has no wheel for this Python")
    return "torch==2.13.0"


@pytest.fixture(scope="session")
def torch_cpu_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the real torch 2.13.0 CPU wheel installed (--no-deps), shared by tests that copy nothing into it."""
    return install_target(tmp_path_factory.mktemp("torch_cpu") / "site", [torch_cpu_wheel()])


def torch_version_py(version: str, cuda: Optional[str] = None, hip: Optional[str] = None) -> str:
    """torch/version.py text in the format real wheels ship."""
    return (
        "from typing import Optional\n\n"
        "__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']\n"
        f"__version__ = {version!r}\n"
        "debug = False\n"
        f"cuda: Optional[str] = {cuda!r}\n"
        "git_version = '0123456789abcdef0123456789abcdef01234567'\n"
        f"hip: Optional[str] = {hip!r}\n"
    )


def torch_wheel(out: Path, version: str, cuda: Optional[str], requires: Sequence[str] = ()) -> Path:
    """A small stand-in torch wheel: real dist-info and a real torch/version.py, no binaries."""
    return build_wheel(out, "torch", version, requires, {"torch/__init__.py": "", "torch/version.py": torch_version_py(version, cuda)})


class Env:
    """A site folder filled by pip, and the facts/report the doctor derives from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        self.wheels = root / "wheels"
        self.site.mkdir(parents=True, exist_ok=True)

    def wheel(self, name: str, version: str, requires: Sequence[str] = (), files: Optional[Dict[str, str]] = None) -> "Env":
        """Build and install a small wheel."""
        install_target(self.site, [build_wheel(self.wheels, name, version, requires, files)])
        return self

    def torch(self, version: str, cuda: Optional[str] = None, requires: Sequence[str] = ()) -> "Env":
        """Install a stand-in torch of this version and CUDA."""
        install_target(self.site, [torch_wheel(self.wheels, version, cuda, requires)])
        return self

    def install(self, wheels: Iterable[Path | str]) -> "Env":
        """Install real wheel files with --no-deps."""
        install_target(self.site, list(wheels))
        return self

    def facts(self, gpus: str = "none", driver: Optional[str] = None, env: Optional[Dict[str, str]] = None, paths: Sequence[Path] = ()):  # type: ignore[no-untyped-def]
        """Facts for this folder alone, with simulated hardware."""
        from doctor.inventory import gather

        environ = {"DOCTOR_GPUS": gpus, "PATH": os.environ.get("PATH", "")}
        if driver:
            environ["DOCTOR_DRIVER_VERSION"] = driver
        environ.update(env or {})
        return gather(paths=[str(self.site), *map(str, paths)], environ=environ, cwd=str(self.root))

    def check(self, gpus: str = "none", driver: Optional[str] = None, env: Optional[Dict[str, str]] = None, paths: Sequence[Path] = ()):  # type: ignore[no-untyped-def]
        """Run every rule over this folder's facts (debug: a rule crash fails the test)."""
        from doctor.checkup import run_check

        return run_check(facts=self.facts(gpus, driver, env, paths), debug=True)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """An empty environment folder to install into."""
    return Env(tmp_path)


def ids(report) -> List[str]:  # type: ignore[no-untyped-def]
    """Finding ids of a report."""
    return [f.id for f in report.findings]


def one(report, fid: str):  # type: ignore[no-untyped-def]
    """The single finding with this id (fails with the list of ids otherwise)."""
    hits = [f for f in report.findings if f.id == fid]
    assert len(hits) == 1, f"expected one {fid}, got {len(hits)} in {ids(report)}"
    return hits[0]


def run_doctor(*args: str, env: Optional[Dict[str, str]] = None, python: str = sys.executable, timeout: float = 60):  # type: ignore[no-untyped-def]
    """Run `python -m doctor ARGS` as a user would; returns the CompletedProcess."""
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([python, "-m", "doctor", *args], capture_output=True, text=True, timeout=timeout, env=e, stdin=subprocess.DEVNULL)
