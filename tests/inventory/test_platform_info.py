"""Interpreter, platform and environment kinds, against fake root trees."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from doctor.inventory.environment import relevant_env
from doctor.inventory.platform_info import env_kinds, libc_info, platform_info, python_info


def kinds(tmp_path: Path, environ=None, *, prefix="/p", base_prefix="/p", dist_names=()):
    return env_kinds(environ or {}, prefix=prefix, base_prefix=base_prefix, root=str(tmp_path), dist_names=dist_names)


def test_python_and_platform_are_plain_data() -> None:
    py = python_info()
    assert py.version == "%d.%d.%d" % sys.version_info[:3]
    assert py.implementation == "CPython" if sys.implementation.name == "cpython" else py.implementation
    assert py.prefix == sys.prefix and py.base_prefix == sys.base_prefix
    plat = platform_info()
    assert plat.system and plat.machine and plat.release is not None
    lib, version = libc_info()
    if sys.platform.startswith("linux") and lib is not None:
        assert lib == "glibc" and version and version[0].isdigit()


def test_nothing_special(tmp_path: Path) -> None:
    assert kinds(tmp_path) == ()


def test_venv_and_conda(tmp_path: Path) -> None:
    assert kinds(tmp_path, prefix="/venv", base_prefix="/usr") == ("venv",)
    assert kinds(tmp_path, {"CONDA_PREFIX": "/opt/conda"}) == ("conda",)
    (tmp_path / "env" / "conda-meta").mkdir(parents=True)
    prefix = str(tmp_path / "env")
    assert kinds(tmp_path, prefix=prefix, base_prefix=prefix) == ("conda",)


def test_colab(tmp_path: Path) -> None:
    assert kinds(tmp_path, {"COLAB_RELEASE_TAG": "release-colab_20261101-060000"}) == ("colab",)
    assert kinds(tmp_path, {"COLAB_GPU": "1"}) == ("colab",)
    (tmp_path / "content").mkdir()
    assert kinds(tmp_path) == ()
    assert kinds(tmp_path, dist_names={"google-colab"}) == ("colab",)


def test_kaggle(tmp_path: Path) -> None:
    assert kinds(tmp_path, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}) == ("kaggle",)
    assert kinds(tmp_path, {"KAGGLE_URL_BASE": "https://www.kaggle.com"}) == ("kaggle",)


@pytest.mark.parametrize(
    "relative, content",
    [
        (".dockerenv", ""),
        ("run/.containerenv", ""),
        ("proc/1/cgroup", "12:pids:/docker/3f2a\n"),
        ("proc/1/cgroup", "0::/kubepods/besteffort/pod1\n"),
        ("proc/1/cgroup", "1:name=systemd:/system.slice/containerd.service\n"),
    ],
)
def test_container(tmp_path: Path, relative: str, content: str) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    assert kinds(tmp_path) == ("container",)


def test_plain_cgroup_v2_is_not_a_container(tmp_path: Path) -> None:
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "cgroup").write_text("0::/init.scope\n")
    assert kinds(tmp_path) == ()


def test_wsl_and_order(tmp_path: Path) -> None:
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text("5.15.167.4-microsoft-standard-WSL2\n")
    (tmp_path / ".dockerenv").write_text("")
    env = {"CONDA_PREFIX": "/c", "KAGGLE_URL_BASE": "x", "COLAB_GPU": "1"}
    assert kinds(tmp_path, env, prefix="/v", base_prefix="/b") == ("venv", "conda", "colab", "kaggle", "container", "wsl")


def test_unreadable_marker_files_do_not_raise(tmp_path: Path) -> None:
    (tmp_path / "proc" / "1" / "cgroup").mkdir(parents=True)  # a folder where a file should be
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").mkdir(parents=True)
    assert kinds(tmp_path) == ()


def test_relevant_env() -> None:
    environ = {
        "CUDA_VISIBLE_DEVICES": "",
        "UNSLOTH_COMPILE_LOCATION": "/tmp/cache",
        "HOME": "/root",
        "DOCTOR_GPUS": "none",
        "DOCTOR_ZZZ": "1",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "PATH": "/usr/bin",
    }
    assert relevant_env(environ) == {
        "CUDA_VISIBLE_DEVICES": "",
        "UNSLOTH_COMPILE_LOCATION": "/tmp/cache",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "DOCTOR_GPUS": "none",
        "DOCTOR_ZZZ": "1",
    }
