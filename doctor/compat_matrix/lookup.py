"""Questions the rules ask of the Matrix, answered from the data only.

Version arguments accept a `Version` or a raw string; garbage ('abc', '', None) never raises here,
it simply matches nothing (None / empty list), because raw versions come from the user's files.
The version helpers of doctor.compat_matrix.versions are re-exported for the rules' convenience.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from packaging.utils import canonicalize_name
from packaging.version import Version

from doctor.compat_matrix.model import (
    ArchSet,
    BnbArchs,
    BnbLoader,
    DriverFloor,
    GpuFeature,
    Matrix,
    OptionalRequirement,
    RangeRequirement,
    Requirement,
    StableAbi,
    XformersException,
)
from doctor.facts import BitsandbytesBuild, XformersBuild
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
    "BnbPick", "arch_verdict", "archs_for", "cubin_serves", "ptx_serves", "bitsandbytes_libs", "bnb_archs", "bnb_library_cuda", "bnb_loader", "bnb_pick", "bnb_requirement",
    "optional_at_runtime", "xformers_build_of", "xformers_exception", "xformers_stable_abi", "xformers_wheel_cuda", "cc_for_gpu_name", "cuda_variants_for", "default_cuda_for", "driver_floor",
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


def cubin_serves(archs: Sequence[CC], cc: CC) -> Optional[CC]:
    """The compiled arch that runs on `cc`: same major, minor <= the GPU's (sm_86 cubin runs on sm_89)."""
    fits = [a for a in archs if a[0] == cc[0] and a[1] <= cc[1]]
    return max(fits) if fits else None


def ptx_serves(ptx: Sequence[CC], cc: CC) -> Optional[CC]:
    """The PTX arch the driver can JIT for `cc` (any PTX at or below it)."""
    fits = [a for a in ptx if a <= cc]
    return max(fits) if fits else None


def arch_verdict(archs: Sequence[CC], ptx: Sequence[CC], cc: CC) -> Tuple[str, Optional[CC]]:
    """('cubin' | 'ptx' | 'none', arch used) for a GPU against one build's arch list."""
    hit = cubin_serves(archs, cc)
    if hit:
        return "cubin", hit
    hit = ptx_serves(ptx, cc)
    if hit:
        return "ptx", hit
    return "none", None


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


# -- xformers binaries -----------------------------------------------------------------------------------


def xformers_exception(m: Matrix, xformers_version: VersionArg, torch_version: VersionArg) -> Optional[XformersException]:
    """The recorded known-good pair of exactly this xformers release and this torch release (local label ignored)."""
    xv, trel = parse_version(xformers_version), _release(torch_version)
    if xv is None or trel is None:
        return None
    return next((e for e in m.xformers_exceptions if Version(e.xformers) == xv and e.torch == trel), None)


def xformers_stable_abi(m: Matrix, xformers_version: VersionArg, built_for: VersionArg) -> Optional[StableAbi]:
    """The stable-ABI row when this xformers release's binary, built for torch `built_for`, loads on later torch."""
    xv, brel = parse_version(xformers_version), _release(built_for)
    if xv is None or brel is None:
        return None
    public = Version(xv.public)
    return next((r for r in m.xformers_stable_abi
                 if r.xformers.contains(public, prereleases=True) and r.built_for.contains(brel, prereleases=True)), None)


def xformers_build_of(m: Matrix, xformers_version: VersionArg, index_variant: Optional[str]) -> Optional[XformersBuild]:
    """What cpp_lib.json would say for this xformers release installed from an index, without the wheel.

    index_variant None (the default index): the recorded build of that index's wheel (its torch build and
    CUDA, read from the real wheel), else its exact torch pin with the index default CUDA of that torch
    minor. A PyTorch CUDA-family index ('cu126'): its exact torch pin (or the recorded build's release,
    where the pin is loose) with that variant's CUDA. None when unknown, or for a non-CUDA variant ('cpu').
    """
    req = torch_requirement_of_xformers(m, xformers_version)
    if req is None:
        return None
    if index_variant is None and req.wheel_torch:
        cuda = _cuda_int(req.wheel_cuda)
        return XformersBuild(torch_version=req.wheel_torch, cuda_version=cuda) if cuda is not None else None
    built = _built_for(req)
    if built is None:
        return None
    cuda_text = m.torch_default_cuda.get(minor_of(built)) if index_variant is None else cuda_from_tag(index_variant)
    cuda = _cuda_int(cuda_text)
    if cuda is None:
        return None
    return XformersBuild(torch_version=f"{built}+cu{cuda // 100}{cuda % 100}", cuda_version=cuda)


def xformers_wheel_cuda(m: Matrix, xformers_version: VersionArg) -> Optional[str]:
    """The CUDA the default index's wheel of this xformers release is built with ('12.1'), if recorded."""
    req = torch_requirement_of_xformers(m, xformers_version)
    return (req.wheel_cuda or None) if req is not None else None


def _cuda_int(cuda: Optional[str]) -> Optional[int]:
    """'12.1' -> 1201, as cpp_lib.json writes it; None for garbage."""
    match = _CUDA_RE.match(cuda) if isinstance(cuda, str) else None
    return int(match.group(1)) * 100 + int(match.group(2)) if match else None


def _built_for(req: Requirement) -> Optional[Version]:
    """The torch release an xformers row's binary is built for: its exact == pin, else the recorded wheel's release."""
    specs = list(req.spec)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        v = parse_version(specs[0].version)
        return release_of(v) if v is not None else None
    wheel = parse_version(req.wheel_torch)
    return release_of(wheel) if wheel is not None else None


# -- optional at run time ----------------------------------------------------------------------------------


def optional_at_runtime(m: Matrix, requirer: str, dep: str, requirer_version: VersionArg = None) -> Optional[OptionalRequirement]:
    """The row saying `requirer` runs without its declared requirement `dep` (any spelling), or None.

    Rows limited to some releases of the requirer (unsloth: its import guard and SDPA fallback) answer
    only when `requirer_version` is given and in range: a requirement is never called optional for an
    unknown release.
    """
    r, d = canonicalize_name(requirer or ""), canonicalize_name(dep or "")
    for row in m.optional_runtime:
        if row.requirer != r or row.requirement != d:
            continue
        if row.requirer_versions is None:
            return row
        v = parse_version(requirer_version)
        if v is not None and row.requirer_versions.contains(Version(v.public), prereleases=True):
            return row
        return None
    return None


# -- bitsandbytes' native libraries ------------------------------------------------------------------------

_BNB_CUDA_LIB_RE = re.compile(r"^libbitsandbytes_cuda(\d{3,})(_nocublaslt)?\.(?:so|dll|dylib)$")


class BnbPick(NamedTuple):
    """The native library bitsandbytes loads for torch's CUDA."""

    library: str  # file name, "libbitsandbytes_cuda121.so"
    cuda: str  # the library's CUDA version, "12.1"
    exact: bool  # built for exactly torch's CUDA (else the loader's same-major fallback)


def bitsandbytes_libs(m: Matrix, bnb_version: VersionArg) -> Optional[BitsandbytesBuild]:
    """The native libraries the Linux x86_64 wheel of exactly this bitsandbytes release ships, or None if unknown."""
    v = parse_version(bnb_version)
    if v is None:
        return None
    public = Version(v.public)
    for w in m.bitsandbytes_wheels:
        if any(Version(x) == public for x in w.versions):
            return BitsandbytesBuild(libraries=w.libraries, source=f"compat matrix ({w.source})")
    return None


def bnb_loader(m: Matrix, bnb_version: VersionArg) -> Optional[BnbLoader]:
    """How this bitsandbytes release picks its CUDA library, or None (releases before 0.41 read the system libcudart)."""
    v = parse_version(bnb_version)
    if v is None:
        return None
    public = Version(v.public)
    return next((r for r in m.bitsandbytes_loaders if r.versions.contains(public, prereleases=True)), None)


def bnb_archs(m: Matrix, bnb_version: VersionArg, library_cuda: Optional[str]) -> Optional[BnbArchs]:
    """GPU archs compiled into this release's library for CUDA `library_cuda` ('12.1'), or None if unknown."""
    v, c = parse_version(bnb_version), parse_version(library_cuda)
    if v is None or c is None:
        return None
    public = Version(v.public)
    return next((r for r in m.bitsandbytes_archs
                 if r.versions.contains(public, prereleases=True) and r.cuda.contains(c, prereleases=True)), None)


def bnb_library_cuda(name: str) -> Optional[Tuple[Tuple[int, int], bool]]:
    """((major, minor), nocublaslt) of a CUDA library file name; None for the CPU/ROCm/XPU ones and garbage.

    The major is always two digits, as bitsandbytes splits it: 'cuda121' -> (12, 1), 'cuda1210' -> (12, 10).
    """
    match = _BNB_CUDA_LIB_RE.match(name) if isinstance(name, str) else None
    if match is None:
        return None
    digits = match.group(1)
    return (int(digits[:2]), int(digits[2:])), bool(match.group(2))


def bnb_pick(libraries: Sequence[str], torch_cuda: Optional[str], loader: BnbLoader,
             highest_cc: Optional[CC] = None) -> Optional[BnbPick]:
    """The library bitsandbytes loads for torch's CUDA ('12.4') by its loader's rule; None when none can load.

    `highest_cc`: the highest compute capability of the GPUs (releases before 0.45 load the _nocublaslt
    variant below 7.5; unknown counts as not below).
    """
    match = _CUDA_RE.match(torch_cuda.strip()) if isinstance(torch_cuda, str) else None
    if match is None:
        return None
    want = (int(match.group(1)), int(match.group(2)))
    nocublaslt = loader.nocublaslt_below is not None and highest_cc is not None and tuple(highest_cc) < loader.nocublaslt_below
    shipped: Dict[Tuple[int, int], str] = {}
    for name in libraries:
        parsed = bnb_library_cuda(name)
        if parsed is not None and parsed[1] == nocublaslt:
            shipped[parsed[0]] = name
    if want in shipped:
        return BnbPick(shipped[want], f"{want[0]}.{want[1]}", True)
    if loader.picks != "same-major":
        return None
    lower = [c for c in shipped if c[0] == want[0] and c < want]
    higher = [c for c in shipped if c[0] == want[0] and c > want]
    chosen = max(lower) if lower else (min(higher) if higher else None)
    if chosen is None:
        return None
    return BnbPick(shipped[chosen], f"{chosen[0]}.{chosen[1]}", False)
