"""Build info of torch and xformers, read from their files, never by importing them.

torch: `torch/version.py` is parsed with `ast` and only literal assignments are believed
(`__version__ = '2.13.0+cpu'`, `cuda: Optional[str] = '13.0'`). Nothing in it is executed.

xformers: `xformers/cpp_lib.json`, written when the wheel was built, says which torch, CUDA and
Python the C++/CUDA extension was compiled for. Real content (0.0.35 wheel)::

    {"version": {"cuda": 1208, "hip": null, "torch": "2.10.0+cu128", "python": "3.10.19"},
     "env": {"TORCH_CUDA_ARCH_LIST": "7.5 8.0+PTX 8.0 9.0a", ...}}

bitsandbytes: the `libbitsandbytes_*.so` files in its package directory, listed (bitsandbytes picks
one by torch's CUDA version at import; a release that ships none for it falls back to its CPU library).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

from doctor.facts import BitsandbytesBuild, Distribution, TorchBuild, XformersBuild
from doctor._util.files import describe_os_error, read_bytes

_TORCH_FIELDS = ("__version__", "cuda", "hip", "git_version")
# A wrong or unknowable value here changes what the rules conclude (a None cuda reads as a CPU
# build), so it is an error; git_version is informational and just becomes None.
_TORCH_TRUSTED = ("__version__", "cuda", "hip")
_SOURCE_LIMIT = 1024 * 1024


def find_package_file(relative: str, paths: Sequence[str], preferred_location: Optional[str] = None) -> Optional[str]:
    """First existing `<entry>/<relative>`, trying `preferred_location` before the path entries.

    A file this user may not look at counts as there (reading it then says "permission denied", never
    "not found") when its package directory exists, or when it is in `preferred_location`, where the
    dist-info says the package is.
    """
    candidates: List[Tuple[str, bool]] = []
    if preferred_location:
        candidates.append((preferred_location, True))
    candidates.extend((p, False) for p in paths if isinstance(p, str))
    for entry, expected in candidates:
        candidate = os.path.join(entry or ".", relative)
        if _present(candidate, expected):
            return candidate
    return None


def _present(path: str, expected: bool) -> bool:
    """Whether `path` exists; EACCES counts when expected there or when its directory exists (an unreadable
    sys.path entry is not a package that is there)."""
    try:
        os.lstat(path)
        return True
    except PermissionError:
        return expected or os.path.lexists(os.path.dirname(path))
    except (OSError, ValueError):  # ValueError: a NUL in a path entry
        return False


def torch_build(paths: Sequence[str], dist: Optional[Distribution]) -> Optional[TorchBuild]:
    """torch's build from its version.py; None when torch is neither installed nor on `paths`."""
    location = dist.location if dist else None
    path = find_package_file(os.path.join("torch", "version.py"), paths, location)
    if path is None:
        if dist is None:
            return None
        return TorchBuild(version=None, error="torch/version.py not found")
    return read_torch_build(path)


def read_torch_build(path: str) -> TorchBuild:
    """Parse one torch/version.py file; problems go into TorchBuild.error, never raised."""
    try:
        source = read_bytes(path, _SOURCE_LIMIT)
    except OSError as exc:
        return TorchBuild(version=None, path=path, error=f"cannot read {path}: {describe_os_error(exc)}")
    return parse_torch_version_source(source, path)


def parse_torch_version_source(source: Union[bytes, str], path: Optional[str] = None) -> TorchBuild:
    """TorchBuild from the text of a torch/version.py (literal top-level assignments only)."""
    import ast

    try:
        tree = ast.parse(source, filename=path or "<version.py>")
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        return TorchBuild(version=None, path=path, error=f"version.py does not parse: {reason}{where}")
    except (MemoryError, RecursionError):
        return TorchBuild(version=None, path=path, error="version.py does not parse: too deeply nested")

    values: Dict[str, Optional[str]] = {}
    problems: Dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names = [node.target.id]
            value = node.value
        else:
            continue
        names = [n for n in names if n in _TORCH_FIELDS]
        if not names:
            continue
        literal: Optional[str]
        problem: Optional[str]
        try:
            raw = ast.literal_eval(value)
        except Exception:  # ValueError for calls/names; deep nesting raises others
            literal, problem = None, "is not a literal"
        else:
            if raw is None or isinstance(raw, str):
                literal, problem = raw, None
            else:
                literal, problem = None, f"is a {type(raw).__name__}, not a string"
        for name in names:  # the last assignment wins, as it would at run time
            values[name] = literal
            if problem:
                problems[name] = problem
            else:
                problems.pop(name, None)

    errors = [f"{name} {problems[name]}" for name in _TORCH_TRUSTED if name in problems]
    if "__version__" not in values:
        errors.insert(0, "no __version__ in version.py")
    return TorchBuild(
        version=values.get("__version__"),
        cuda=values.get("cuda"),
        hip=values.get("hip"),
        git_version=values.get("git_version"),
        path=path,
        error="; ".join(errors) or None,
    )


def xformers_build(paths: Sequence[str], dist: Optional[Distribution]) -> Optional[XformersBuild]:
    """xformers' extension build from cpp_lib.json; None when xformers is neither installed nor on `paths`."""
    location = dist.location if dist else None
    path = find_package_file(os.path.join("xformers", "cpp_lib.json"), paths, location)
    if path is not None:
        return read_xformers_build(path)
    if dist is None and find_package_file(os.path.join("xformers", "__init__.py"), paths) is None:
        return None
    return XformersBuild(torch_version=None, error="no cpp_lib.json")


def read_xformers_build(path: str) -> XformersBuild:
    """Parse one xformers/cpp_lib.json file; problems go into XformersBuild.error, never raised."""
    try:
        data = read_bytes(path, _SOURCE_LIMIT)
    except OSError as exc:
        return XformersBuild(torch_version=None, path=path, error=f"cannot read {path}: {describe_os_error(exc)}")
    return parse_cpp_lib(data, path)


def parse_cpp_lib(data: Union[bytes, str], path: Optional[str] = None) -> XformersBuild:
    """XformersBuild from the content of a cpp_lib.json; wrong shapes are reported, not raised."""
    import json

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = getattr(exc, "msg", None) or exc.__class__.__name__
        return XformersBuild(torch_version=None, path=path, error=f"cpp_lib.json is not valid JSON ({reason})")
    if not isinstance(doc, dict):
        return XformersBuild(torch_version=None, path=path, error="cpp_lib.json is not a JSON object")
    version = doc.get("version")
    if not isinstance(version, dict):
        return XformersBuild(torch_version=None, path=path, error='cpp_lib.json has no "version" object')

    errors: List[str] = []
    torch_version = _typed(version, "torch", str, errors, required=True)
    cuda = _typed(version, "cuda", int, errors)
    python = _typed(version, "python", str, errors)
    hip = version.get("hip")
    if isinstance(hip, (str, int, float)) and not isinstance(hip, bool):
        hip = str(hip)
    elif hip is not None:
        errors.append(f"version.hip is {_kind(hip)}")
        hip = None
    arch_list = None
    env = doc.get("env")
    if isinstance(env, dict):
        arch_list = _typed(env, "TORCH_CUDA_ARCH_LIST", str, errors, prefix="env")
    elif env is not None:
        errors.append(f"env is {_kind(env)}, expected an object")
    return XformersBuild(
        torch_version=torch_version,
        cuda_version=cuda,
        hip_version=hip,
        python_version=python,
        arch_list=arch_list,
        path=path,
        error="; ".join(f"cpp_lib.json: {e}" for e in errors) or None,
    )


# bitsandbytes' native libraries on Linux (.so), Windows (.dll) and macOS (.dylib), as its loader names them.
_BNB_LIB_PREFIX = "libbitsandbytes_"
_BNB_LIB_SUFFIXES = (".so", ".dll", ".dylib")


def bitsandbytes_build(paths: Sequence[str], dist: Optional[Distribution]) -> Optional[BitsandbytesBuild]:
    """The native libraries in bitsandbytes' package directory; None when bitsandbytes is not installed here."""
    location = dist.location if dist else None
    path = find_package_file("bitsandbytes", paths, location)
    if path is None:
        if dist is None:
            return None
        return BitsandbytesBuild(libraries=(), error="bitsandbytes package directory not found")
    return read_bitsandbytes_build(path)


def read_bitsandbytes_build(directory: str) -> BitsandbytesBuild:
    """List one bitsandbytes package directory; problems go into BitsandbytesBuild.error, never raised."""
    try:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries
                           if e.name.startswith(_BNB_LIB_PREFIX) and e.name.endswith(_BNB_LIB_SUFFIXES))
    except OSError as exc:
        return BitsandbytesBuild(libraries=(), path=directory, error=f"cannot list {directory}: {describe_os_error(exc)}")
    return BitsandbytesBuild(libraries=tuple(names), path=directory)


def _typed(obj: dict, key: str, kind: type, errors: List[str], *, required: bool = False, prefix: str = "version"):  # type: ignore[no-untyped-def]
    value = obj.get(key)
    if value is None:
        if required:
            errors.append(f"{prefix}.{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        errors.append(f"{prefix}.{key} is {_kind(value)}, expected {'an integer' if kind is int else 'a string'}")
        return None
    return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )
