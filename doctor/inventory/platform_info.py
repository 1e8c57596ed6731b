"""The interpreter, the operating system, the C library and the kind of environment we run in."""

from __future__ import annotations

import os
import sys
from typing import Collection, Mapping, Optional, Tuple

from doctor import envvars as E
from doctor._util.files import read_text
from doctor.facts import PlatformInfo, PythonInfo

# Reported in this order, so the tuple reads the same on every run.
ENV_KINDS = ("venv", "conda", "colab", "kaggle", "container", "wsl")

# The spelling platform.python_implementation() uses, without importing platform.
_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy", "graalpy": "GraalVM", "ironpython": "IronPython"}


def python_info() -> PythonInfo:
    """The running interpreter."""
    return PythonInfo(
        version="%d.%d.%d" % sys.version_info[:3],
        implementation=_IMPLEMENTATIONS.get(sys.implementation.name, sys.implementation.name),
        executable=sys.executable or "",
        prefix=sys.prefix,
        base_prefix=getattr(sys, "base_prefix", sys.prefix),
    )


def platform_info() -> PlatformInfo:
    """Operating system, machine and C library of this process."""
    try:
        # os.uname is a syscall; platform.uname() may spawn `uname -p` on some Pythons.
        u = os.uname()
        system, release, machine = u.sysname, u.release, u.machine
    except AttributeError:  # Windows
        import platform

        system, release, machine = platform.system(), platform.release(), platform.machine()
    libc, libc_version = libc_info()
    return PlatformInfo(system=system, machine=machine, release=release, libc=libc, libc_version=libc_version)


def libc_info() -> Tuple[Optional[str], Optional[str]]:
    """("glibc", "2.36") from confstr, else platform.libc_ver(); (None, None) when unknown (musl, macOS)."""
    try:
        parts = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        if len(parts) == 2:
            return parts[0], parts[1]
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import platform

        lib, version = platform.libc_ver()
    except Exception:  # it scans the executable: any I/O oddity is simply "unknown"
        return None, None
    return (lib or None), (version or None)


def env_kinds(
    environ: Mapping[str, str],
    *,
    prefix: Optional[str] = None,
    base_prefix: Optional[str] = None,
    root: str = "/",
    dist_names: Collection[str] = (),
) -> Tuple[str, ...]:
    """Which of venv, conda, colab, kaggle, container, wsl apply; `root` and `dist_names` let tests fake the machine."""
    prefix = sys.prefix if prefix is None else prefix
    base_prefix = getattr(sys, "base_prefix", sys.prefix) if base_prefix is None else base_prefix
    found = set()
    if prefix != base_prefix:
        found.add("venv")
    if environ.get(E.CONDA_PREFIX) or os.path.isdir(os.path.join(prefix, "conda-meta")):
        found.add("conda")
    if is_colab(environ, root=root, dist_names=dist_names):
        found.add("colab")
    if environ.get(E.KAGGLE_KERNEL_RUN_TYPE) or environ.get(E.KAGGLE_URL_BASE):
        found.add("kaggle")
    if is_container(environ, root=root):
        found.add("container")
    if is_wsl(root=root):
        found.add("wsl")
    return tuple(kind for kind in ENV_KINDS if kind in found)


def is_colab(environ: Mapping[str, str], *, root: str = "/", dist_names: Collection[str] = ()) -> bool:
    """Google Colab: its env markers, or a /content folder together with the google-colab distribution."""
    if environ.get(E.COLAB_RELEASE_TAG) or environ.get(E.COLAB_GPU):
        return True
    return "google-colab" in dist_names and os.path.isdir(os.path.join(root, "content"))


def is_container(environ: Mapping[str, str], *, root: str = "/") -> bool:
    """Docker/Podman/Kubernetes: marker files, PID 1's cgroup, or the Kubernetes service env."""
    if os.path.exists(os.path.join(root, ".dockerenv")) or os.path.exists(os.path.join(root, "run", ".containerenv")):
        return True
    if environ.get(E.KUBERNETES_SERVICE_HOST):
        return True
    text = _read_small(os.path.join(root, "proc", "1", "cgroup"))
    return any(word in text for word in ("docker", "containerd", "kubepods"))


def is_wsl(*, root: str = "/") -> bool:
    """Windows Subsystem for Linux: its kernels carry "microsoft" in the release string."""
    return "microsoft" in _read_small(os.path.join(root, "proc", "sys", "kernel", "osrelease")).lower()


def _read_small(path: str) -> str:
    text, _ = read_text(path, limit=64 * 1024)
    return text or ""
