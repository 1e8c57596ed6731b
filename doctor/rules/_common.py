"""Small helpers shared by the rules: defensive version parsing and Facts shortcuts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from doctor.compat_matrix.versions import minor_of, parse_version, release_of

from doctor.facts import GPU, Facts

if TYPE_CHECKING:
    from doctor.findings import Action


def version(raw: Optional[str]) -> Optional[Version]:
    """Parse a version string; None for missing or garbage ('abc')."""
    return parse_version(raw)


def release(v: Version) -> Version:
    """The release part only: 2.11.0+cu130 -> 2.11.0 (ABI is per release, not per local tag)."""
    return release_of(v)


def minor(v: Version) -> str:
    """'2.11' for 2.11.0+cu130."""
    return minor_of(v)


def satisfies(v: Version, spec: str | SpecifierSet) -> bool:
    """Whether a version meets a specifier; pre-releases count, the local label is ignored."""
    try:
        s = spec if isinstance(spec, SpecifierSet) else SpecifierSet(spec)
    except InvalidSpecifier:
        return True  # an unreadable requirement is not evidence of a conflict
    return s.contains(v, prereleases=True)


def cc_of(gpu: GPU, matrix: object = None) -> Optional[Tuple[int, int]]:
    """A GPU's compute capability, falling back to the matrix name table when the driver did not say."""
    if gpu.compute_capability is not None:
        return gpu.compute_capability
    if matrix is None:
        return None
    from doctor.compat_matrix.lookup import cc_for_gpu_name

    return cc_for_gpu_name(matrix, gpu.name)  # type: ignore[arg-type]


def fmt_cc(cc: Optional[Tuple[int, int]]) -> str:
    """'8.6' or '?'."""
    return f"{cc[0]}.{cc[1]}" if cc else "?"


def torch_version(facts: Facts) -> Optional[Version]:
    """Installed torch version: the build file first (it has the local tag), then the distribution."""
    if facts.torch and facts.torch.version:
        v = version(facts.torch.version)
        if v:
            return v
    return version(facts.version_of("torch"))


def gpu_label(gpu: GPU) -> str:
    """'GPU 0 (Tesla T4)'."""
    return f"GPU {gpu.index} ({gpu.name})"


_CU_LOCAL = re.compile(r"\+cu(\d{2,3})\b")


def torch_cuda(facts: Facts) -> Tuple[Optional[str], bool]:
    """(CUDA version of the torch build, whether it is known).

    version.py's `cuda` is the truth; when that file could not be read literally, the wheel's local
    label (+cu128) still tells; otherwise the build is unknown, which is never the same as a CPU build.
    """
    t = facts.torch
    if t is None:
        return None, False
    if t.cuda:
        return t.cuda, True
    if t.error:
        m = _CU_LOCAL.search(t.version or facts.version_of("torch") or "")
        if m:
            digits = m.group(1)
            return f"{digits[:-1]}.{digits[-1]}", True
        return None, False
    return None, True


def torch_build_action(index_url: str, v: Version, tag: str, why: str) -> "Action":
    """pip install of the same torch release built for `tag`, from that variant's PyTorch index.

    The local label ('torch==2.8.0+cu128') makes pip replace a 2.8.0+cpu/+cu129 it would call satisfied.
    """
    from doctor.findings import pip_install

    return pip_install(f"torch=={release(v)}+{tag}", "--index-url", f"{index_url}/{tag}", why=why)


def reinstall(name: str, raw_version: Optional[str], index_url: str) -> "Action":
    """The exact reinstall of what is there: same version, same build (a +cuXYZ/+cpu torch from its PyTorch index).

    An unreadable version gets no pip command: an unpinned reinstall would pull the newest release,
    built for another torch.
    """
    from doctor.findings import manual, pip_install

    v = version(raw_version)
    if v is None:
        return manual(f"reinstall {name} at the version you meant to have (its version '{raw_version}' is unreadable)")
    args = ["--force-reinstall", "--no-deps", f"{name}=={v}"]
    local = v.local or ""
    if name in ("torch", "torchvision", "torchaudio") and (local.startswith("cu") or local == "cpu" or local.startswith("rocm")):
        args += ["--index-url", f"{index_url}/{local}"]  # local builds live only on the PyTorch index
    return pip_install(*args, why=f"reinstall {name} {v} in place")
