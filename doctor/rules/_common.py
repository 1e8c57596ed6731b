"""Small helpers shared by the rules: defensive version parsing and Facts shortcuts.

What the installed torch is (torch_version, torch_cuda) comes from doctor.remedies, which builds
every torch-coupled fix for it; it is re-exported here for the rules.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from doctor.compat_matrix.lookup import cc_for_gpu_name
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.versions import minor_of, parse_version, release_of
from doctor.facts import GPU
from doctor.remedies import torch_cuda, torch_installed, torch_version  # noqa: F401  (re-exported for the rules)


def version(raw: Optional[str]) -> Optional[Version]:
    """Parse a version string; None for missing or garbage ('abc')."""
    return parse_version(raw)


def release(v: Version) -> Version:
    """The release part only: 2.11.0+cu130 -> 2.11.0 (ABI is per release, not per local tag)."""
    return release_of(v)


def minor(v: Version) -> str:
    """'2.11' for 2.11.0+cu130."""
    return minor_of(v)


def satisfies(v: Version, spec: Union[str, SpecifierSet]) -> bool:
    """Whether a version meets a specifier; pre-releases count, the local label is ignored."""
    try:
        s = spec if isinstance(spec, SpecifierSet) else SpecifierSet(spec)
    except InvalidSpecifier:
        return True  # an unreadable requirement is not evidence of a conflict
    return s.contains(v, prereleases=True)


def cc_of(gpu: GPU, matrix: Optional[Matrix] = None) -> Optional[Tuple[int, int]]:
    """A GPU's compute capability, falling back to the matrix name table when the driver did not say."""
    if gpu.compute_capability is not None:
        return gpu.compute_capability
    if matrix is None:
        return None
    return cc_for_gpu_name(matrix, gpu.name)


def fmt_cc(cc: Optional[Tuple[int, int]]) -> str:
    """'8.6' or '?'."""
    return f"{cc[0]}.{cc[1]}" if cc else "?"


def gpu_label(gpu: GPU) -> str:
    """'GPU 0 (Tesla T4)'."""
    return f"GPU {gpu.index} ({gpu.name})"
