"""Typed, validated view of the compatibility matrix data (doctor/compat_matrix/data/*.toml).

Every fact keeps the key of its source; `Matrix.sources` maps source keys to descriptions.
The loader (doctor.compat_matrix.loader) builds these objects and rejects malformed files.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import FrozenSet, Mapping, NamedTuple, Optional, Tuple

from packaging.specifiers import SpecifierSet
from packaging.version import Version


# PyTorch's download index; a variant's index is <url>/<cuXYZ> (torch_cuda.toml [index] overrides it).
TORCH_INDEX_URL = "https://download.pytorch.org/whl"

# Shared read-only default for mapping fields (records are immutable; a dict default would be shared and mutable).
_EMPTY: Mapping = MappingProxyType({})


class Requirement(NamedTuple):
    """`subject` version -> requirement on another package, e.g. xformers 0.0.27 -> torch ==2.3.1."""

    version: str  # the subject's version, exact ("0.0.27") 
    spec: SpecifierSet  # what it requires of the other package
    source: str  # source key
    note: str = ""
    wheel_torch: str = ""  # the default index's wheel: torch build it was compiled against, "2.5.1+cu121" (cpp_lib.json)
    wheel_cuda: str = ""  # the default index's wheel: CUDA toolkit it was compiled with, "12.1"
    wheel_source: str = ""  # source key of wheel_torch / wheel_cuda


class XformersException(NamedTuple):
    """A known-good xformers binary on a torch patch release its exact Requires-Dist pin excludes."""

    xformers: str  # exact xformers release, "0.0.26.post1"
    torch: Version  # the torch release it is known to run on, 2.3.1
    source: str
    evidence: str  # what shows it runs there
    reports: Tuple[str, ...] = ()  # "unslothai/unsloth#1126"
    reports_source: str = ""
    note: str = ""


class StableAbi(NamedTuple):
    """xformers releases built on the PyTorch stable ABI: a binary built for `built_for` loads on any later torch."""

    xformers: SpecifierSet  # xformers releases this holds for
    built_for: SpecifierSet  # torch releases their binaries may be built for
    source: str
    note: str = ""


class OptionalRequirement(NamedTuple):
    """A declared requirement the requirer does not need at run time (it guards the import and falls back)."""

    requirer: str  # canonical name, "unsloth"
    requirement: str  # canonical name of the declared requirement, "xformers"
    why: str  # how the requirer runs without it
    source: str
    requirer_versions: Optional[SpecifierSet] = None  # releases of the requirer it holds for; None: all
    observed: str = ""  # seen on a real machine
    observed_source: str = ""
    note: str = ""


class BnbWheel(NamedTuple):
    """The native libraries in one bitsandbytes Linux x86_64 wheel (the same for every release listed)."""

    versions: Tuple[str, ...]  # exact releases, "0.41.1"
    libraries: Tuple[str, ...]  # file names, "libbitsandbytes_cuda121.so"
    source: str


class BnbLoader(NamedTuple):
    """How a range of bitsandbytes releases picks its CUDA library for torch's CUDA version."""

    versions: SpecifierSet
    picks: str  # "exact" (that CUDA's file or none) | "same-major" (else the nearest of the same major)
    source: str
    nocublaslt_below: Optional[Tuple[int, int]] = None  # GPUs below this cc load the _nocublaslt variant
    note: str = ""


class BnbArchs(NamedTuple):
    """GPU archs compiled into the bitsandbytes libraries of some releases for some CUDA versions (x86_64)."""

    versions: SpecifierSet  # bitsandbytes releases
    cuda: SpecifierSet  # CUDA version of the library ("12.1")
    archs: Tuple[Tuple[int, int], ...]  # cubins
    ptx: Tuple[Tuple[int, int], ...]  # also shipped as PTX
    source: str
    note: str = ""


class RangeRequirement(NamedTuple):
    """A range of subject versions -> requirement, e.g. bitsandbytes >=0.48,<0.49 -> torch >=2.3,<3."""

    versions: SpecifierSet  # subject versions this row covers
    spec: SpecifierSet  # requirement on torch
    source: str
    python: Optional[SpecifierSet] = None  # python requirement of those releases, if any
    note: str = ""


class DriverFloor(NamedTuple):
    """Minimum Linux driver for one CUDA toolkit version."""

    cuda: str  # "12.8"
    toolkit: Version  # full support (CUDA release notes Table 3)
    minor_compat: Version  # minor-version compatibility floor (no PTX JIT)
    source: str
    minor_compat_source: str = ""  # source key of the minor_compat floor (NV-T2) when it differs from `source`
    toolkit_text: str = ""  # as written ("580.65.06"): Version() would print 580.65.6
    minor_compat_text: str = ""


class ArchSet(NamedTuple):
    """Compute capabilities compiled into torch Linux x86_64 wheels for one CUDA variant and torch range."""

    variant: str  # "cu128"
    torch: SpecifierSet  # torch versions (release part, no local tag) this row applies to
    archs: Tuple[Tuple[int, int], ...]  # cubins: ((7, 5), (8, 0), ...)
    ptx: Tuple[Tuple[int, int], ...]  # archs also shipped as PTX (driver can JIT newer)
    source: str


class GpuFeature(NamedTuple):
    """A capability that needs a minimum compute capability."""

    name: str  # "bf16", "flash_attn_2", "triton_mma", "inductor"
    min_cc: Tuple[int, int]
    note: str
    source: str
    max_cc: Optional[Tuple[int, int]] = None  # inclusive upper bound (flash_attn_3 is Hopper-only)
    min_cuda: Optional[str] = None  # CUDA toolkit the feature needs, "12.3"


class KnownIssue(NamedTuple):
    """A documented failure with the versions it hits and the fix, e.g. xformers aten.to.dtype_layout."""

    id: str  # "xformers.dtype-layout"
    package: str  # canonical name of the package it lives in
    affected: SpecifierSet  # versions of `package` that have it
    requires: Mapping[str, SpecifierSet]  # other installed packages that must also match (may be empty)
    title: str
    cause: str
    fix: Tuple[str, ...]  # pip specifiers of known-good choices, preferred first
    reports: Tuple[str, ...]
    source: str
    signature: str = ""  # the error text users see, to match against logs and probe stderr
    note: str = ""  # fixed-in, working combinations, caveats


class GpuName(NamedTuple):
    """GPU product-name pattern -> compute capability (for when only the name is known, e.g. procfs)."""

    pattern: str  # case-insensitive substring, most specific first in the table
    cc: Tuple[int, int]
    source: str


class CacheFallback(NamedTuple):
    """From which unsloth_zoo release an uncreatable compiled-cache directory falls back to a temp directory."""

    since: str  # first unsloth_zoo release with the fixed fallback, "2025.3.8"
    source: str  # source key of the bisection
    random_fallback_since: str = ""  # earlier releases from this one fell back to a random TemporaryDirectory
    error_log_since: str = ""  # first release that logs "Failed to create directory"
    location_env_since: str = ""  # first release that reads UNSLOTH_COMPILE_LOCATION
    fallback_dir: str = ""  # where it falls back to, as the code computes it
    shared_across_users: bool = True  # the fallback directory is the same for every user of the machine
    history_source: str = ""  # source key of the commits that introduced it
    note: str = ""


class Matrix(NamedTuple):
    """All tables of the compatibility matrix."""

    schema: int
    data_version: str  # date-like, e.g. "2026.11.22"
    sources: Mapping[str, str]  # source key -> description
    xformers_torch: Tuple[Requirement, ...] = ()  # xformers version -> torch spec
    torch_triton: Tuple[Requirement, ...] = ()  # torch version -> triton spec (Linux)
    torch_default_cuda: Mapping[str, str] = _EMPTY  # "2.11" -> "13.0"
    torch_cuda_variants: Mapping[str, Tuple[str, ...]] = _EMPTY  # "2.4" -> ("cu118", ...)
    cuda_min_driver: Tuple[DriverFloor, ...] = ()
    torch_cuda_archs: Tuple[ArchSet, ...] = ()
    gpu_features: Tuple[GpuFeature, ...] = ()
    bitsandbytes_torch: Tuple[RangeRequirement, ...] = ()
    torch_xformers_pairs: Mapping[str, str] = _EMPTY  # torch "2.3" -> xformers "0.0.26.post1" (known good)
    known_issues: Tuple[KnownIssue, ...] = ()
    gpu_names: Tuple[GpuName, ...] = ()
    notes: Mapping[str, str] = _EMPTY  # free-text facts by key (flash_attn.prebuilt, unsloth_runtime.*)
    torch_cuda_variants_uncertain: FrozenSet[str] = frozenset()  # torch minors whose variant list is uncertain
    unsloth_requires: Mapping[str, Tuple[Requirement, ...]] = _EMPTY  # package -> (unsloth version -> spec)
    torch_index_url: str = TORCH_INDEX_URL  # PyTorch download index; a variant's index is <url>/<cuXYZ>
    unsloth_cache_fallback: Optional[CacheFallback] = None  # unsloth_zoo's temp-directory fallback (unsloth_runtime.toml)
    xformers_exceptions: Tuple[XformersException, ...] = ()  # known-good pairs off the exact pin (xformers_torch.toml)
    xformers_stable_abi: Tuple[StableAbi, ...] = ()  # releases whose binaries load on later torch (xformers_torch.toml)
    optional_runtime: Tuple[OptionalRequirement, ...] = ()  # declared but optional at run time (optional_runtime.toml)
    bitsandbytes_wheels: Tuple[BnbWheel, ...] = ()  # native libraries per release (bitsandbytes_libs.toml)
    bitsandbytes_loaders: Tuple[BnbLoader, ...] = ()  # how each release picks one
    bitsandbytes_archs: Tuple[BnbArchs, ...] = ()  # archs compiled into them
