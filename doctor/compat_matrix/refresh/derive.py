"""The matrix rows the refresh re-derives, from the wheels the shipped data names (Linux x86_64).

- [xformers_torch]: each xformers release's Requires-Dist on torch, read from its manylinux x86_64 wheel,
  plus the build its xformers/cpp_lib.json records (wheel_torch "2.5.1+cu121", wheel_cuda "12.1"): a
  Range read of that member, since METADATA cannot hold it.
- [torch_triton]: each torch release's Requires-Dist on triton for Linux x86_64, with markers evaluated
  for the wheel's Python. The CPython 3.11 wheel is read first: the facts file notes that cp312 wheels of
  2.2.1..2.3.1 carry no triton dependency (a `python_version < "3.12"` marker).

Which wheel: the manylinux x86_64 one for CPython 3.11 (cp311, else one that installs there: abi3 or
py3x-none), else the nearest Python. Final releases only (no pre- or dev releases). A release whose
wheel has no requirement on the other package is listed as skipped with the reason, not an error.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from doctor.compat_matrix.refresh.fetch import Fetcher, RefreshFailed
from doctor.compat_matrix.refresh.lazy_wheel import LazyWheel
from doctor.compat_matrix.refresh.metadata import CoreMetadata, check_name, fetch_pep658, parse_metadata
from doctor.compat_matrix.refresh.simple_api import IndexFile, project_files

PYTHON = (3, 11)  # the Python whose wheel is read first (see the module docstring)
CPP_LIB = "xformers/cpp_lib.json"


class Target(NamedTuple):
    """What one package's refresh derives."""

    package: str  # the project read from the index
    table: str  # the matrix table its rows go to
    requires: str  # the project its Requires-Dist is read for
    members: Tuple[str, ...] = ()  # other wheel members read by Range


TARGETS: Dict[str, Target] = {
    "xformers": Target("xformers", "xformers_torch", "torch", (CPP_LIB,)),
    "torch": Target("torch", "torch_triton", "triton"),
}


class Row(NamedTuple):
    """One derived row, with where it came from."""

    table: str  # "xformers_torch" / "torch_triton"
    version: str  # the subject's release, "0.0.28.post3"
    spec: str  # requirement on the other package, "==2.5.1"
    wheel: str  # the file it was read from
    url: str  # that file's URL
    via: str  # "pep658" (the .metadata file) or "range" (the wheel's METADATA by HTTP Range)
    wheel_torch: str = ""  # xformers only: the torch build of cpp_lib.json, "2.5.1+cu121"
    wheel_cuda: str = ""  # xformers only: its CUDA toolkit, "12.1"
    yanked: bool = False

    def to_dict(self) -> Dict[str, object]:
        """The row as the overlay and --json write it."""
        d: Dict[str, object] = {"version": self.version, "spec": self.spec, "wheel": self.wheel, "url": self.url,
                                "via": self.via}
        if self.wheel_torch:
            d["wheel_torch"], d["wheel_cuda"] = self.wheel_torch, self.wheel_cuda
        if self.yanked:
            d["yanked"] = True
        return d


class Skipped(NamedTuple):
    """A release the refresh looked at and derived no row for."""

    package: str
    version: str
    reason: str


class PackageResult(NamedTuple):
    """Everything derived for one package."""

    target: Target
    rows: Tuple[Row, ...]
    skipped: Tuple[Skipped, ...]
    warnings: Tuple[str, ...]
    wheels_total_size: int  # bytes the wheels read would have been, downloaded whole (as the index states)


Progress = Callable[[str, int, int], None]  # (package, done, total)


def derive_package(fetcher: Fetcher, index_url: str, target: Target, progress: Optional[Progress] = None) -> PackageResult:
    """Every row of one target's table from the index: one project page, then one read per release, in parallel."""
    files = project_files(fetcher, index_url, target.package)
    picked, skipped = pick_wheels(target.package, files)
    warnings: List[str] = []
    lock = threading.Lock()
    done = [0]
    if progress is not None:
        progress(target.package, 0, len(picked))

    def one(item: Tuple[str, IndexFile, str]) -> Optional[Row]:
        version, f, python = item
        local: List[str] = []
        try:
            row = _derive_one(fetcher, target, version, f, python, local)
        finally:
            with lock:
                warnings.extend(local)
                done[0] += 1
                if progress is not None:
                    progress(target.package, done[0], len(picked))
        return row

    pool = ThreadPoolExecutor(max_workers=max(1, fetcher.concurrency), thread_name_prefix="refresh")
    try:
        futures = [pool.submit(one, item) for item in picked]
        results = [fut.result() for fut in futures]  # the first failure propagates: the refresh is all or nothing
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure, what has not started never does
    rows = []
    for (version, f, python), row in zip(picked, results):
        if row is None:
            skipped.append(Skipped(target.package, version, f"{f.filename}: no requirement on {target.requires} "
                                                            f"for Linux x86_64, Python {python}"))
        else:
            rows.append(row)
    total = sum(f.size or 0 for _, f, _ in picked)
    return PackageResult(target, tuple(rows), tuple(sorted(skipped, key=lambda s: _vkey(s.version))), tuple(warnings), total)


def _derive_one(fetcher: Fetcher, target: Target, version: str, f: IndexFile, python: str,
                warnings: List[str]) -> Optional[Row]:
    """One release's row from its wheel (None: no requirement on the other package)."""
    lazy: Optional[LazyWheel] = None
    members: Dict[str, bytes] = {}
    if f.core_metadata is not None:
        raw = fetch_pep658(fetcher, f, warnings)
        via = "pep658"
        if target.members:
            lazy = LazyWheel(fetcher, f.url, f.filename)
            members = lazy.members(lambda n: n in target.members, lambda found: set(target.members) <= found)
    else:
        lazy = LazyWheel(fetcher, f.url, f.filename)
        # enough: every member asked for and a METADATA seen; else the whole directory is read (a release
        # without cpp_lib.json is only known to lack it once the whole directory was listed)
        members = lazy.members(lambda n: n in target.members or _is_metadata(n),
                               lambda found: set(target.members) <= found and any(_is_metadata(n) for n in found))
        metas = sorted(n for n in members if _is_metadata(n))
        if not metas:
            raise RefreshFailed(f"{f.filename}: the wheel has no *.dist-info/METADATA (not a wheel, or a broken one)")
        raw = members[_own_metadata(metas, target.package)]
        via = "range"
    meta = parse_metadata(raw, f.filename)
    mismatch = check_name(meta, target.package, version, f.filename)
    if mismatch:
        raise RefreshFailed(mismatch)
    spec = requirement_on(meta, target.requires, python)
    if spec is None:
        return None
    wheel_torch = wheel_cuda = ""
    if CPP_LIB in target.members:
        if CPP_LIB in members:  # releases before 0.0.16 ship none: their row simply has no build
            wheel_torch, wheel_cuda = cpp_lib_build(members[CPP_LIB], f.filename, warnings)
    return Row(target.table, version, spec, f.filename, f.url, via, wheel_torch, wheel_cuda, f.yanked)


def _is_metadata(name: str) -> bool:
    head, _, tail = name.partition("/")
    return tail == "METADATA" and head.endswith(".dist-info")


def _own_metadata(names: Sequence[str], package: str) -> str:
    """The project's own .dist-info/METADATA when a wheel (wrongly) holds several."""
    from packaging.utils import canonicalize_name

    for n in names:
        if canonicalize_name(n.split("/")[0][: -len(".dist-info")].rsplit("-", 1)[0]) == canonicalize_name(package):
            return n
    return names[0]


def marker_env(python: str) -> Dict[str, str]:
    """The marker environment of CPython `python` ("3.11") on Linux x86_64."""
    return {
        "implementation_name": "cpython", "implementation_version": f"{python}.0", "os_name": "posix",
        "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "",
        "platform_system": "Linux", "platform_version": "", "python_full_version": f"{python}.0",
        "python_version": python, "sys_platform": "linux", "extra": "",
    }


def requirement_on(meta: CoreMetadata, project: str, python: str) -> Optional[str]:
    """The specifier of meta's Requires-Dist on `project` that holds on Linux x86_64 for `python`, or None."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    env = marker_env(python)
    specs = []
    for line in meta.requires_dist:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # a line the refresh cannot read is not the one it looks for; pip would reject the wheel
        if canonicalize_name(req.name) != canonicalize_name(project):
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        specs.append(str(req.specifier))
    if not specs:
        return None
    return ",".join(s for s in specs if s)  # "" (any version) when the requirement names none


def cpp_lib_build(raw: bytes, where: str, warnings: List[str]) -> Tuple[str, str]:
    """(torch build, CUDA "X.Y") from cpp_lib.json's version.torch / version.cuda (1208 -> "12.8"); ("", "") else."""
    try:
        doc = json.loads(raw.decode("utf-8"))
        version = doc["version"]
        torch, cuda = str(version["torch"]), int(version["cuda"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        warnings.append(f"{where}: {CPP_LIB} has no version.torch / version.cuda: its build is not recorded")
        return "", ""
    if cuda <= 0 or "+cu" not in torch:
        warnings.append(f"{where}: {CPP_LIB} records a build without CUDA ({torch}): not recorded")
        return "", ""
    return torch, f"{cuda // 100}.{cuda % 100}"


def pick_wheels(package: str, files: Sequence[IndexFile]) -> Tuple[List[Tuple[str, IndexFile, str]], List[Skipped]]:
    """(version, wheel, python) per final release: its manylinux x86_64 wheel nearest CPython 3.11; and the skipped."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    best: Dict[Version, Tuple[Tuple[int, int, int], IndexFile, str, str]] = {}
    seen: Dict[Version, str] = {}
    for f in files:
        if not f.filename.endswith(".whl"):
            continue
        try:
            name, version, build_tag, tags = parse_wheel_filename(f.filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if name != canonicalize_name(package) or version.is_prerelease or version.is_devrelease:
            continue
        public = Version(version.public)  # PyTorch's index: 2.5.1+cu124 and 2.5.1+cu121 are the same release
        seen.setdefault(public, str(public))
        for tag in tags:
            if not (tag.platform.startswith("manylinux") and tag.platform.endswith("_x86_64")):
                continue
            score, python = _python_score(tag.interpreter, tag.abi)
            if score is None:
                continue
            # a re-uploaded wheel (build tag, "torch-2.10.0-3-...") is preferred to the one it replaces
            key = (score, 0 if version.local is None else 1, -(build_tag[0] if build_tag else 0))
            if public not in best or key < best[public][0]:
                best[public] = (key, f, python, str(public))
    picked = [(v_text, f, py) for _, (_, f, py, v_text) in sorted(best.items())]
    skipped = [Skipped(package, seen[v], "no manylinux x86_64 wheel") for v in sorted(seen) if v not in best]
    return picked, skipped


def _python_score(interpreter: str, abi: str) -> Tuple[Optional[int], str]:
    """(rank, python "3.X" the markers are evaluated for) of a wheel tag; lower ranks first, None: not CPython 3."""
    want = PYTHON[1]
    if interpreter.startswith("cp3") and interpreter[3:].isdigit():
        minor = int(interpreter[3:])
        if abi == "abi3":
            return (1, f"3.{want}") if minor <= want else (10 + minor - want, f"3.{minor}")
        if abi.endswith("t"):  # free-threaded builds: last resort
            return 100 + abs(minor - want), f"3.{minor}"
        return (0, f"3.{want}") if minor == want else (10 + abs(minor - want), f"3.{minor}")
    if interpreter.startswith("py3") and abi == "none":
        minor = int(interpreter[3:]) if interpreter[3:].isdigit() else 0
        return (2, f"3.{want}") if minor <= want else (10 + minor - want, f"3.{minor}")
    return None, ""


def _vkey(version: str) -> Tuple[int, object]:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(version))
    except InvalidVersion:
        return (1, version)


class Outcome(NamedTuple):
    """A whole refresh: the rows per package and what it cost."""

    index_url: str
    results: Tuple[PackageResult, ...]
    seconds: float
    bytes_downloaded: int
    requests: int


def derive(packages: Sequence[str], index_url: str, fetcher: Fetcher, progress: Optional[Progress] = None) -> Outcome:
    """Derive the tables of `packages` (keys of TARGETS) from the index; RefreshFailed on the first failure."""
    start = time.monotonic()
    results = tuple(derive_package(fetcher, index_url, TARGETS[p], progress) for p in packages)
    return Outcome(index_url, results, time.monotonic() - start, fetcher.bytes_downloaded, fetcher.requests)
