"""Small, defensive helpers for versions, CUDA tags and compute capabilities.

Installed versions come from files we do not control (METADATA, torch/version.py, cpp_lib.json),
so `parse_version` never raises; the helpers that take an already-parsed value raise ValueError
on input that cannot mean anything (documented per function).
"""

from __future__ import annotations

import re
from typing import Optional, Tuple, Union

from packaging.version import InvalidVersion, Version

VersionLike = Union[Version, str]

_CC_RE = re.compile(r"^(\d+)\.(\d+)$")
_CUDA_RE = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)*$")
_TAG_RE = re.compile(r"^cu(\d+)$")
# Local labels of PyTorch's own wheels, each the name of its index variant: +cu128, +cpu, +rocm6.2, +xpu,
# and the old +cpu.cxx11.abi (index 'cpu-cxx11-abi').
_TORCH_VARIANT_RE = re.compile(r"^(cu\d{2,4}|cpu|cpu\.cxx11\.abi|rocm\d+(\.\d+)*|xpu)$")
# A label that starts like a variant claims to be one ('cu121.post3' is not): anything else is a
# source or vendor build (+git1234, NGC's +40ec155e58.nv24.03) and is read as its release.
_VARIANT_LIKE_RE = re.compile(r"^(cu\d|cpu|rocm|xpu)")


def parse_version(raw: object) -> Optional[Version]:
    """PEP 440 version, or None for missing or garbage input ('abc', '', None)."""
    if isinstance(raw, Version):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        # '2.3.1+cu121.post3' is valid: release 2.3.1, local label 'cu121.post3'
        return Version(raw.strip())
    except InvalidVersion:
        return None


def parse_torch_version(raw: object) -> Optional[Version]:
    """A torch version the rules can use: PEP 440, and a local label that is a PyTorch variant or not
    variant-shaped at all; None for garbage ('abc') and for a label posing as a variant ('2.3.1+cu121.post3')."""
    v = parse_version(raw)
    if v is None or (v.local and _VARIANT_LIKE_RE.match(v.local) and not _TORCH_VARIANT_RE.match(v.local)):
        return None
    return v


def torch_variant(v: object) -> Optional[str]:
    """The PyTorch index variant a torch version's local label names ('cu128', 'cpu', 'rocm6.2'), else None."""
    parsed = parse_torch_version(v)
    local = parsed.local if parsed is not None else None
    if not local or not _TORCH_VARIANT_RE.match(local):
        return None
    return local.replace(".", "-") if local.startswith("cpu.") else local


def _as_version(v: VersionLike) -> Version:
    """Version from a Version or a string; ValueError for garbage."""
    parsed = parse_version(v)
    if parsed is None:
        raise ValueError(f"invalid version {v!r}")
    return parsed


def release_of(v: VersionLike) -> Version:
    """Base release only (epoch kept): 2.11.0+cu130 -> 2.11.0, 2.12.0.dev20260101 -> 2.12.0."""
    parsed = _as_version(v)
    # ABI and pins are per release: local labels, pre/post/dev parts do not change which row applies
    base = ".".join(str(p) for p in parsed.release)
    return Version(f"{parsed.epoch}!{base}" if parsed.epoch else base)


def minor_of(v: VersionLike) -> str:
    """Major.minor as a string: 2.11.0+cu130 -> '2.11' (a bare '2' gives '2.0')."""
    parts = tuple(_as_version(v).release) + (0,)
    return f"{parts[0]}.{parts[1]}"


def cuda_tag(cuda: str) -> str:
    """PyTorch index tag of a CUDA version: '13.0' -> 'cu130', '12.8.1' -> 'cu128'; ValueError for garbage."""
    raw = cuda.strip() if isinstance(cuda, str) else ""
    if _TAG_RE.match(raw):
        return raw  # already a tag
    m = _CUDA_RE.match(raw)
    if not m:
        raise ValueError(f"invalid CUDA version {cuda!r}")
    return f"cu{int(m.group(1))}{int(m.group(2))}"


def cuda_from_tag(tag: str) -> Optional[str]:
    """CUDA version of a PyTorch index tag: 'cu128' -> '12.8', 'cu1210' -> '12.10'; None for 'cpu'/garbage."""
    m = _TAG_RE.match(tag.strip()) if isinstance(tag, str) else None
    if not m or len(m.group(1)) < 3:
        return None
    digits = m.group(1)
    # the major is always two digits for the CUDA versions torch ships (11.x, 12.x, 13.x)
    return f"{int(digits[:2])}.{int(digits[2:])}"


def cuda_from_int(value: Union[int, str]) -> str:
    """CUDA version from a build integer: 1208 -> '12.8' (major*100+minor, cpp_lib.json), 12080 -> '12.8' (CUDA_VERSION)."""
    if isinstance(value, bool):  # bool is an int subclass; True is not a CUDA version
        raise ValueError(f"invalid CUDA build number {value!r}")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(f"invalid CUDA build number {value!r}")
        value = int(value.strip())
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"invalid CUDA build number {value!r}")
    if value >= 10000:  # CUDA_VERSION / torch._C._cuda_getCompiledVersion(): major*1000 + minor*10
        return f"{value // 1000}.{(value % 1000) // 10}"
    return f"{value // 100}.{value % 100}"


def parse_cc(raw: str) -> Tuple[int, int]:
    """Compute capability 'X.Y' -> (X, Y): '8.6' -> (8, 6); ValueError for anything else ('9', 'sm_86')."""
    m = _CC_RE.match(raw.strip()) if isinstance(raw, str) else None
    if not m:
        raise ValueError(f"invalid compute capability {raw!r} (expected 'X.Y')")
    return int(m.group(1)), int(m.group(2))


def format_cc(cc: Tuple[int, int]) -> str:
    """(8, 6) -> '8.6'."""
    return f"{cc[0]}.{cc[1]}"
