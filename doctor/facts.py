"""Facts: an immutable snapshot of the machine and the Python environment.

Gathered by `doctor.inventory` without importing torch, xformers or triton; read by the
matrix rules. Every field is plain data so a snapshot can be printed, hashed and compared.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple, Optional, Tuple

from packaging.utils import canonicalize_name


# Shared read-only default for mapping fields (records are immutable; a dict default would be shared and mutable).
_EMPTY: Mapping = MappingProxyType({})


class Distribution(NamedTuple):
    """One installed distribution, as importlib.metadata sees it."""

    name: str  # canonical (PEP 503) name, e.g. "unsloth-zoo"
    version: str  # raw version string; may be garbage ("abc"), rules parse it defensively
    location: Optional[str] = None  # the site-packages directory it lives in
    installer: Optional[str] = None  # from INSTALLER (pip, uv, conda, ...)
    direct_url: Optional[Mapping[str, object]] = None  # PEP 610 direct_url.json (git/local installs)
    requires: Tuple[str, ...] = ()  # raw Requires-Dist lines
    display_name: str = ""  # name as written in METADATA
    error: Optional[str] = None  # set when METADATA was unreadable or broken
    shadowed: Tuple[Tuple[str, str], ...] = ()  # (version, location) of later copies on sys.path that this one hides

    @property
    def editable(self) -> bool:
        """True for an editable (develop) install according to direct_url.json."""
        info = (self.direct_url or {}).get("dir_info")
        return bool(isinstance(info, Mapping) and info.get("editable"))


class TorchBuild(NamedTuple):
    """torch's build, read from torch/version.py as a file (never imported)."""

    version: Optional[str]  # "2.11.0+cu130"
    cuda: Optional[str] = None  # "13.0"; None for a CPU or ROCm build
    hip: Optional[str] = None
    git_version: Optional[str] = None
    path: Optional[str] = None  # the version.py that was read
    error: Optional[str] = None  # unreadable / unparseable file


class XformersBuild(NamedTuple):
    """xformers' compiled-extension build info, from xformers/cpp_lib.json read as a file."""

    torch_version: Optional[str]  # torch the extension was built against, "2.10.0+cu128"
    cuda_version: Optional[int] = None  # e.g. 1208 for CUDA 12.8
    hip_version: Optional[str] = None
    python_version: Optional[str] = None  # "3.10.19"
    arch_list: Optional[str] = None  # TORCH_CUDA_ARCH_LIST at build time
    path: Optional[str] = None
    error: Optional[str] = None


class BitsandbytesBuild(NamedTuple):
    """The native libraries a bitsandbytes install ships, listed from its package directory (never imported).

    bitsandbytes loads one of them at import, chosen by torch's CUDA version (libbitsandbytes_cuda121.so
    for CUDA 12.1); which ones a release has differs per release and per wheel.
    """

    libraries: Tuple[str, ...]  # file names, sorted: ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda121.so", ...)
    path: Optional[str] = None  # the bitsandbytes package directory that was listed; None: from the matrix
    error: Optional[str] = None  # the directory could not be listed
    source: str = ""  # where the list came from when not from the files: "compat matrix (WHEEL-FILES)"


class GPU(NamedTuple):
    """One GPU as the driver reports it."""

    index: int  # type: ignore[assignment]  # the driver's GPU index; it shadows tuple.index, which nothing here calls
    name: str
    compute_capability: Optional[Tuple[int, int]] = None  # (8, 0); None when unknown
    memory_mib: Optional[int] = None
    uuid: Optional[str] = None

    @property
    def cc(self) -> str:
        """Compute capability as "8.0", or "?" when unknown."""
        if self.compute_capability is None:
            return "?"
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


class Hardware(NamedTuple):
    """GPUs and the NVIDIA driver, with where the answer came from."""

    gpus: Tuple[GPU, ...] = ()
    driver_version: Optional[str] = None  # "580.159.04"
    cuda_driver_version: Optional[str] = None  # highest CUDA the driver supports, "13.0", if known
    source: str = "none"  # override / nvml / sysfs / procfs / nvidia-smi / none
    notes: Tuple[str, ...] = ()  # what failed on the way (a hung nvidia-smi, a missing library)


class PythonInfo(NamedTuple):
    """The running interpreter."""

    version: str  # "3.11.7"
    implementation: str  # "CPython"
    executable: str
    prefix: str
    base_prefix: str


class PlatformInfo(NamedTuple):
    """Operating system, machine and C library."""

    system: str  # "Linux"
    machine: str  # "x86_64"
    release: str
    libc: Optional[str] = None  # "glibc"
    libc_version: Optional[str] = None  # "2.36"


class Facts(NamedTuple):
    """Everything the matrix rules look at, gathered once."""

    python: PythonInfo
    platform: PlatformInfo
    env_kinds: Tuple[str, ...] = ()  # subset of venv, conda, colab, kaggle, container, wsl
    distributions: Mapping[str, Distribution] = _EMPTY
    torch: Optional[TorchBuild] = None
    xformers: Optional[XformersBuild] = None
    hardware: Hardware = Hardware()
    env: Mapping[str, str] = _EMPTY  # relevant environment variables that are set
    cwd: str = "."
    notes: Tuple[str, ...] = ()  # non-fatal problems met while gathering (broken METADATA, ...)
    markers: Mapping[str, str] = _EMPTY  # PEP 508 marker environment of the checked interpreter; empty: this one
    bitsandbytes: Optional[BitsandbytesBuild] = None  # its native libraries as installed; None: not installed, or not read

    def dist(self, name: str) -> Optional[Distribution]:
        """The installed distribution called `name` (any spelling), or None."""
        return self.distributions.get(canonicalize_name(name))

    def version_of(self, name: str) -> Optional[str]:
        """Raw installed version string of `name`, or None when not installed."""
        d = self.dist(name)
        return d.version if d else None
