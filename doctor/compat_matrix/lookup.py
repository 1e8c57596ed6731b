"""Questions the rules ask of the Matrix, answered from the data only.

Version arguments accept a `Version` or a raw string; garbage ('abc', '', None) never raises here,
it simply matches nothing (None / empty list), because raw versions come from the user's files.
The version helpers of doctor.compat_matrix.versions are re-exported for the rules' convenience.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple, Union

from packaging.version import Version

from doctor.compat_matrix.model import ArchSet, DriverFloor, GpuFeature, Matrix, RangeRequirement, Requirement
from doctor.compat_matrix.versions import (  # noqa: F401  (re-exported)
    cuda_from_int,
    cuda_from_tag,
    cuda_tag,
    format_cc,
    minor_of,
    parse_cc,
    parse_version,
    release_of,
)

__all__ = [
    "archs_for", "bnb_requirement", "cc_for_gpu_name", "cuda_variants_for", "default_cuda_for", "driver_floor",
    "feature", "feature_supported", "known_good_xformers", "torch_requirement_of_xformers", "triton_pin_for_torch",
    "unsloth_has_cache_fallback", "unsloth_requirement", "xformers_for_torch",
    # re-exported from doctor.compat_matrix.versions
    "cuda_from_int", "cuda_from_tag", "cuda_tag", "format_cc", "minor_of", "parse_cc", "parse_version", "release_of",
]

VersionArg = Union[Version, str, None]
CC = Tuple[int, int]

_CUDA_RE = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)*$")


def _release(v: VersionArg) -> Optional[Version]:
    """Release part of a version argument, or None for garbage."""
    parsed = parse_version(v)
    return release_of(parsed) if parsed is not None else None


def torch_requirement_of_xformers(m: Matrix, xformers_version: VersionArg) -> Optional[Requirement]:
    """The torch requirement of exactly this xformers release (Version equality), or None if unknown."""
    v = parse_version(xformers_version)
    if v is None:
        return None
    # exact: a local build ('0.0.29+git...') is not the index wheel and need not share its pin
    return next((r for r in m.xformers_torch if Version(r.version) == v), None)


def triton_pin_for_torch(m: Matrix, torch_version: VersionArg) -> Optional[Requirement]:
    """The triton pin of this torch release (local label and pre/dev parts ignored), or None."""
    rel = _release(torch_version)
    if rel is None:
        return None
    return next((r for r in m.torch_triton if Version(r.version) == rel), None)


def driver_floor(m: Matrix, cuda: Optional[str]) -> Optional[DriverFloor]:
    """Driver floors for CUDA 'X.Y' (a patch part is ignored); None when that exact minor is not in the table."""
    match = _CUDA_RE.match(cuda.strip()) if isinstance(cuda, str) else None
    if not match:
        return None
    key = f"{int(match.group(1))}.{int(match.group(2))}"
    # no fallback to a neighbouring minor: 12.7 needing 12.6's driver is a guess, not a fact
    return next((f for f in m.cuda_min_driver if f.cuda == key), None)


def archs_for(m: Matrix, torch_version: VersionArg, cuda_tag: Optional[str]) -> Optional[ArchSet]:
    """Compute capabilities in the torch build for this release and CUDA ('cu128' or '12.8'), or None."""
    rel = _release(torch_version)
    if rel is None or not isinstance(cuda_tag, str):
        return None
    try:
        tag = _as_tag(cuda_tag)
    except ValueError:
        return None
    return next((a for a in m.torch_cuda_archs if a.variant == tag and a.torch.contains(rel, prereleases=True)), None)


def _as_tag(cuda: str) -> str:
    """'cu128' stays, '12.8' -> 'cu128' (ValueError for garbage); archs_for's parameter shadows cuda_tag."""
    return cuda_tag(cuda)


def xformers_for_torch(m: Matrix, torch_version: VersionArg) -> List[str]:
    """xformers versions whose torch requirement admits this torch release, newest first (metadata only)."""
    rel = _release(torch_version)
    if rel is None:
        return []
    hits = [r.version for r in m.xformers_torch if r.spec.contains(rel, prereleases=True)]
    return sorted(hits, key=Version, reverse=True)


def known_good_xformers(m: Matrix, torch_version: VersionArg) -> Optional[str]:
    """The known-good xformers for this torch from the pairs table: exact release key first, then the minor."""
    rel = _release(torch_version)
    if rel is None:
        return None
    for key, xformers in m.torch_xformers_pairs.items():
        if Version(key) == rel and len(Version(key).release) >= 3:
            return xformers
    return m.torch_xformers_pairs.get(minor_of(rel))


def default_cuda_for(m: Matrix, torch_version: VersionArg) -> Optional[str]:
    """CUDA of the plain index wheel of this torch minor ('2.11' -> '13.0'), or None."""
    rel = _release(torch_version)
    return m.torch_default_cuda.get(minor_of(rel)) if rel is not None else None


def cuda_variants_for(m: Matrix, torch_version: VersionArg) -> Tuple[str, ...]:
    """CUDA variants on the PyTorch download index for this torch minor, oldest first (may be empty)."""
    rel = _release(torch_version)
    return tuple(m.torch_cuda_variants.get(minor_of(rel), ())) if rel is not None else ()


def bnb_requirement(m: Matrix, bnb_version: VersionArg) -> Optional[RangeRequirement]:
    """The torch (and python) requirement row covering this bitsandbytes version, or None."""
    v = parse_version(bnb_version)
    if v is None:
        return None
    public = Version(v.public)  # a local label does not change which release line it is
    return next((r for r in m.bitsandbytes_torch if r.versions.contains(public, prereleases=True)), None)


def unsloth_requirement(m: Matrix, unsloth_version: VersionArg, package: str) -> Optional[Requirement]:
    """What this exact unsloth release requires of `package` (canonical name), or None if not recorded."""
    v = parse_version(unsloth_version)
    if v is None:
        return None
    return next((r for r in m.unsloth_requires.get(package, ()) if Version(r.version) == v), None)


def cc_for_gpu_name(m: Matrix, name: Optional[str]) -> Optional[CC]:
    """Compute capability from a GPU product name (first matching substring, case-insensitive), or None."""
    if not isinstance(name, str) or not name.strip():
        return None
    lowered = name.lower()
    return next((g.cc for g in m.gpu_names if g.pattern.lower() in lowered), None)


def feature(m: Matrix, name: str) -> GpuFeature:
    """The GPU feature row by name ('bf16', 'flash_attn_2', ...); KeyError for an unknown name (a code bug)."""
    for f in m.gpu_features:
        if f.name == name:
            return f
    raise KeyError(f"unknown GPU feature {name!r}; known: {', '.join(f.name for f in m.gpu_features)}")


def feature_supported(m: Matrix, name: str, cc: CC, cuda: Optional[str] = None) -> bool:
    """Whether a GPU of compute capability `cc` (and CUDA `cuda`, when given) meets a feature's floor/ceiling."""
    f = feature(m, name)
    if tuple(cc) < f.min_cc or (f.max_cc is not None and tuple(cc) > f.max_cc):
        return False
    if cuda is not None and f.min_cuda is not None:
        have, need = parse_version(cuda), parse_version(f.min_cuda)
        if have is None or need is None or have < need:
            return False
    return True


def unsloth_has_cache_fallback(m: Matrix, zoo_version: VersionArg) -> Optional[bool]:
    """Whether this unsloth_zoo falls back to a temp directory when its compiled cache cannot be created.

    None when the version is unknown or garbage, or the matrix has no such fact (a test matrix).
    """
    fact = m.unsloth_cache_fallback
    v = parse_version(zoo_version)
    if fact is None or v is None:
        return None
    return Version(v.public) >= Version(fact.since)  # a local label does not change the release line
