"""The request document of `POST /v1/resolve`: what it carries, what it never carries, and its validation.

A plan needs package names, versions and builds, GPU names and compute capability, the driver, Python and the
platform. Nothing else travels: never a path (executable, prefix, a distribution's location, a cache
directory), a hostname (platform_node), a user name or an environment variable's value. The client builds the
document from Facts with only those fields (`request_document`) or strips a facts document down to them
(`sanitize`); the server rejects a document that carries anything else (`parse_request`: RequestError, 422).

    {"schema_version": 1,
     "facts": {"python": {"version": "3.11.7", "implementation": "CPython"},
               "platform": {"system": "Linux", "machine": "x86_64", "release": "6.1.0-28-amd64",
                            "libc": "glibc", "libc_version": "2.36"},
               "environment": ["venv"],
               "markers": {"python_version": "3.11", "sys_platform": "linux", ...},   # PEP 508, no platform_node
               "distributions": [{"name": "torch", "version": "2.4.0+cu121", "requires": ["filelock", ...],
                                  "installer": "pip"}, ...],
               "torch_build": {"version": "2.4.0+cu121", "cuda": "12.1", "hip": null, "git_version": "e4ee3be",
                               "error": false},
               "xformers_build": {"torch": "2.4.0+cu121", "cuda": 1201, "python": "3.11.9", "arch_list": "8.0;9.0",
                                  "error": false},
               "bitsandbytes_build": {"libraries": ["libbitsandbytes_cuda121.so"], "error": false},
               "driver": "550.54.15", "cuda_driver": "12.4",
               "gpus": [{"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0", "memory_mib": 81920}]},
     "packages": ["xformers"],        # optional: what the user wants installed (requirements, no URLs)
     "torch": null, "cuda": null}     # optional: pins for another torch build (doctor pin --torch/--cuda)

Validation is strict and never raises anything but RequestError: names, versions, requirements and
specifiers are parsed with packaging; free-text fields (GPU names, kernel release) match narrow patterns
that admit no path separator; unknown keys are refused by name.
"""

from __future__ import annotations

import functools
import re
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.facts import GPU, BitsandbytesBuild, Distribution, Facts, Hardware, PlatformInfo, PythonInfo, TorchBuild, \
    XformersBuild

SCHEMA_VERSION = 1  # of the request and of the answer; bumped when a field is removed or changes meaning

# Limits: a real environment has a few hundred distributions; these are far above that and far below harm.
MAX_BODY_BYTES = 1 << 20  # 1 MiB: the server answers 413 above it (a 400-package environment is ~100 KiB)
MAX_DISTRIBUTIONS = 2000
MAX_REQUIRES = 400  # Requires-Dist lines of one distribution
MAX_GPUS = 64
MAX_PACKAGES = 64  # packages wanted
MAX_LIBRARIES = 64
MAX_TEXT = 512  # one requirement line

ENV_KINDS = ("venv", "conda", "colab", "kaggle", "container", "wsl")
# PEP 508 marker variables a plan needs. platform_node is the hostname; platform_release / platform_version
# describe the kernel build and no package's marker here needs them: none of the three travels.
MARKERS = ("implementation_name", "implementation_version", "os_name", "platform_machine", "platform_python_implementation",
           "platform_system", "python_full_version", "python_version", "sys_platform")

# Keys a facts document from `doctor check --json` (or a careless caller) may hold that must never travel,
# with what they are: the server names them in its 422, the client drops them.
FORBIDDEN = MappingProxyType({
    "executable": "a path", "prefix": "a path", "base_prefix": "a path", "location": "a path", "path": "a path",
    "paths": "paths", "cwd": "a path", "active_environment": "a path", "direct_url": "a path or URL",
    "shadowed": "paths", "env": "environment values", "environ": "environment values", "hostname": "a hostname",
    "host": "a hostname", "node": "a hostname", "platform_node": "a hostname", "user": "a user name",
    "username": "a user name", "home": "a path", "notes": "free text that may hold paths",
})

# Patterns for the free-text fields: letters, digits and a little punctuation; never / \ @ or a newline.
_NAME = r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]{0,126}[A-Za-z0-9])$"  # PEP 508 project name
_WORD = r"^[A-Za-z0-9_.+-]{1,64}$"
_OPT_WORD = r"^[A-Za-z0-9_.+-]{0,64}$"
_GPU_NAME = r"^[A-Za-z0-9 ._()+,:-]{1,96}$"
_CC = r"^[0-9]{1,2}\.[0-9]{1,2}$"
_DRIVER = r"^[0-9]{1,4}(\.[0-9]{1,4}){0,3}$"
_ARCHES = r"^[A-Za-z0-9 .;+_-]{0,256}$"
_HEX = r"^[0-9a-fA-F]{0,64}$"
_LIBRARY = r"^[A-Za-z0-9_.+-]{1,96}$"
_KIND = r"^[a-z]{1,16}$"
_RE = {p: re.compile(p) for p in (_NAME, _WORD, _OPT_WORD, _GPU_NAME, _CC, _DRIVER, _ARCHES, _HEX, _LIBRARY, _KIND)}


class RequestError(ValueError):
    """A request document that cannot be served: one line saying which field and why (HTTP 422)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}" if where else why)
        self.where = where
        self.why = why


class ServiceRequest(NamedTuple):
    """A validated request: the Facts the rules read (no paths anywhere) and what is asked for."""

    facts: Facts
    packages: Tuple[str, ...] = ()  # requirements wanted, normalised by packaging ("xformers==0.0.28.post1")
    torch: Optional[str] = None  # pins for this torch release instead of the installed one
    cuda: Optional[str] = None  # that build's CUDA ("12.1", "cpu")
    plan: bool = True  # False: findings and pins only; an index-mode server skips its resolver (seconds)


# -- the JSON Schema (OpenAPI): the same limits, so fuzzing explores what validation decides -------------------

def _str(pattern: str, nullable: bool = False) -> Dict[str, Any]:
    s: Dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "pattern": pattern}
    return s


_VERSION_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9_.+!-]{1,64}$"}
_NULLABLE_VERSION = {**_VERSION_SCHEMA, "type": ["string", "null"]}

FACTS_SCHEMA: Dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["python", "platform"],
    "properties": {
        "python": {"type": "object", "additionalProperties": False, "required": ["version"], "properties": {
            "version": _VERSION_SCHEMA, "implementation": _str(_WORD)}},
        "platform": {"type": "object", "additionalProperties": False, "required": ["system", "machine"], "properties": {
            "system": _str(_WORD), "machine": _str(_WORD), "release": _str(_OPT_WORD, True), "libc": _str(_OPT_WORD, True),
            "libc_version": _str(_OPT_WORD, True)}},
        "environment": {"type": "array", "maxItems": len(ENV_KINDS), "items": {"type": "string", "enum": list(ENV_KINDS)}},
        "markers": {"type": "object", "additionalProperties": False,
                    "properties": {k: _str(_OPT_WORD) for k in MARKERS}},
        "distributions": {"type": "array", "maxItems": MAX_DISTRIBUTIONS, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "version"], "properties": {
                "name": _str(_NAME), "version": _VERSION_SCHEMA,
                "requires": {"type": "array", "maxItems": MAX_REQUIRES,
                             "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}},
                "installer": _str(_OPT_WORD, True)}}},
        "torch_build": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "version": _NULLABLE_VERSION, "cuda": _str(_CC, True), "hip": _str(_OPT_WORD, True),
            "git_version": _str(_HEX, True), "error": {"type": "boolean"}}},
        "xformers_build": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "torch": _NULLABLE_VERSION, "cuda": {"type": ["integer", "null"], "minimum": 0, "maximum": 99999},
            "hip": _str(_OPT_WORD, True), "python": _NULLABLE_VERSION, "arch_list": _str(_ARCHES, True),
            "error": {"type": "boolean"}}},
        "bitsandbytes_build": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "libraries": {"type": "array", "maxItems": MAX_LIBRARIES, "items": _str(_LIBRARY)},
            "error": {"type": "boolean"}}},
        "driver": _str(_DRIVER, True), "cuda_driver": _str(_CC, True),
        "gpus": {"type": "array", "maxItems": MAX_GPUS, "items": {
            "type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                "name": _str(_GPU_NAME), "compute_capability": _str(_CC, True),
                "memory_mib": {"type": ["integer", "null"], "minimum": 0, "maximum": 10 ** 8}}}},
    },
}

REQUEST_SCHEMA: Dict[str, Any] = {
    "title": "ResolveRequest", "type": "object", "additionalProperties": False, "required": ["facts"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "facts": FACTS_SCHEMA,
        "packages": {"type": "array", "maxItems": MAX_PACKAGES,
                     "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}},
        "torch": _NULLABLE_VERSION,
        "cuda": _str(r"^(cpu|[0-9]{1,2}\.[0-9]{1,2})$", True),
        "plan": {"type": "boolean"},
    },
}


# -- validation (the server) -----------------------------------------------------------------------------------


def parse_request(doc: Any) -> ServiceRequest:
    """The validated request, or RequestError naming the first field that is wrong (never another exception)."""
    try:
        return _parse(doc)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("", "nested too deeply") from None
    except Exception as exc:  # a validation gap must still be a 422 with a reason, never a 500
        raise RequestError("", f"not a valid request ({type(exc).__name__})") from None


def _parse(doc: Any) -> ServiceRequest:
    top = _object(doc, "", ("schema_version", "facts", "packages", "torch", "cuda", "plan"), ("facts",))
    if "schema_version" in top and (type(top["schema_version"]) is not int or top["schema_version"] != SCHEMA_VERSION):
        raise RequestError("schema_version", f"this service speaks schema {SCHEMA_VERSION}")
    facts = _facts(top["facts"])
    packages = tuple(_requirement(v, f"packages[{i}]") for i, v in enumerate(_array(top.get("packages", []), "packages", MAX_PACKAGES)))
    torch = _version_text(top.get("torch"), "torch", nullable=True)
    cuda = top.get("cuda")
    if cuda is not None and not (isinstance(cuda, str) and re.fullmatch(r"cpu|[0-9]{1,2}\.[0-9]{1,2}", cuda)):
        raise RequestError("cuda", "expected a CUDA version like 12.1, or cpu")
    if cuda is not None and torch is None:
        raise RequestError("cuda", "only applies with torch (the build of that torch release)")
    plan = top.get("plan", True)
    if type(plan) is not bool:
        raise RequestError("plan", "expected true or false")
    return ServiceRequest(facts, packages, torch, cuda, plan)


def _object(value: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    """A JSON object with only `allowed` keys (forbidden ones named as such) and every `required` one."""
    if not isinstance(value, dict):
        raise RequestError(where or "request", "expected an object")
    for key in value:
        here = f"{where}.{key}" if where else str(key)
        if key in FORBIDDEN:
            raise RequestError(here, f"{FORBIDDEN[key]}: the request carries no paths, hostnames, user names or "
                                     "environment values (the client strips them)")
        if key not in allowed:
            raise RequestError(here, "unknown field")
    for key in required:
        if key not in value:
            raise RequestError(f"{where}.{key}" if where else key, "required")
    return value


def _array(value: Any, where: str, limit: int) -> List[Any]:
    if not isinstance(value, list):
        raise RequestError(where, "expected an array")
    if len(value) > limit:
        raise RequestError(where, f"at most {limit} items")
    return value


def _text(value: Any, where: str, pattern: str, nullable: bool = False) -> Optional[str]:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not _RE[pattern].match(value):
        raise RequestError(where, "missing" if value is None else "not allowed here (letters, digits and . _ + - only)")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(where, "expected true or false")
    return value


def _int(value: Any, where: str, low: int, high: int) -> Optional[int]:
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise RequestError(where, f"expected a whole number from {low} to {high}")
    return value


def _version_text(value: Any, where: str, nullable: bool = False) -> Optional[str]:
    """A version string packaging parses (local labels kept: "2.4.0+cu121"), as given."""
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise RequestError(where, "expected a version string")
    if not _parses(value):
        raise RequestError(where, f"not a version: {value[:40]!r}")
    return value


def _requirement(value: Any, where: str) -> str:
    """A PEP 508 requirement without a URL (a direct reference can name a path), normalised by packaging."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise RequestError(where, "expected a requirement string")
    ok, text = _checked_requirement(value)
    if not ok:
        raise RequestError(where, text)
    return text


@functools.lru_cache(maxsize=1 << 16)
def _checked_requirement(value: str) -> Tuple[bool, str]:
    """(True, normalised) or (False, why). Cached: the same Requires-Dist lines arrive in request after request,
    and packaging's parser is the slowest part of validation (~40 us a line, a thousand lines an environment)."""
    if "\n" in value or "\r" in value:
        return False, "one line only"
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        return False, f"not a requirement ({' '.join(str(exc).split())[:120]})"
    if req.url:
        return False, "a direct reference (name @ URL) may name a path: not accepted"
    if any(c in str(req.marker or "") for c in "/\\@"):
        return False, "a marker literal with a path separator or @ is not accepted"
    return True, str(req)


@functools.lru_cache(maxsize=1 << 16)
def _applies(line: str, markers: Tuple[Tuple[str, str], ...]) -> bool:
    """Whether a Requires-Dist line applies under the request's markers, as the requirement rules decide it.

    Only the lines that apply are kept in the Facts the rules read: every reader of Distribution.requires goes
    through rules.requirements.parsed_requires, which keeps exactly these lines in this order, so the answer is
    the same, and the rules never look at the extras' lines (most of a transformers or unsloth METADATA). The
    parse is the rules' own cached one (`line` was validated first).
    """
    from doctor.rules.requirements import marker_applies, parse_line

    req = parse_line(line)
    return req is None or marker_applies(req.marker, dict(markers))


_STR = frozenset((str,))


@functools.lru_cache(maxsize=1 << 13)
def _requires(lines: Tuple[str, ...], markers: Tuple[Tuple[str, str], ...]) -> Tuple[str, ...]:
    """One distribution's Requires-Dist lines checked (RequestError at `[j]`), keeping those that apply.

    Cached per distribution: the same METADATA arrives in request after request, and one lookup of its lines is
    cheaper than a thousand per-line ones (each per-line lookup hashes the marker environment again)."""
    for j, r in enumerate(lines):
        _requirement(r, f"[{j}]")
    return tuple(r for r in lines if _applies(r, markers))


@functools.lru_cache(maxsize=1 << 14)
def _parses(text: str) -> bool:
    """Whether packaging reads `text` as a version (cached like requirements)."""
    try:
        Version(text)
        return True
    except InvalidVersion:
        return False


def _facts(value: Any) -> Facts:
    f = _object(value, "facts", tuple(FACTS_SCHEMA["properties"]), ("python", "platform"))
    py = _object(f["python"], "facts.python", ("version", "implementation"), ("version",))
    pyver = _version_text(py["version"], "facts.python.version") or ""
    impl = _text(py.get("implementation", "CPython"), "facts.python.implementation", _WORD) or "CPython"
    pl = _object(f["platform"], "facts.platform", ("system", "machine", "release", "libc", "libc_version"),
                 ("system", "machine"))
    platform = PlatformInfo(
        system=_text(pl["system"], "facts.platform.system", _WORD) or "",
        machine=_text(pl["machine"], "facts.platform.machine", _WORD) or "",
        release=_text(pl.get("release"), "facts.platform.release", _OPT_WORD, True) or "",
        libc=_text(pl.get("libc"), "facts.platform.libc", _OPT_WORD, True),
        libc_version=_text(pl.get("libc_version"), "facts.platform.libc_version", _OPT_WORD, True))
    kinds = []
    for i, k in enumerate(_array(f.get("environment", []), "facts.environment", len(ENV_KINDS))):
        if k not in ENV_KINDS:
            raise RequestError(f"facts.environment[{i}]", f"one of {', '.join(ENV_KINDS)}")
        kinds.append(k)
    markers = {}
    for key, val in _object(f.get("markers", {}), "facts.markers", MARKERS).items():
        markers[key] = _text(val, f"facts.markers.{key}", _OPT_WORD) or ""
    marker_key = tuple(sorted(markers.items()))
    dists: Dict[str, Distribution] = {}
    for i, d in enumerate(_array(f.get("distributions", []), "facts.distributions", MAX_DISTRIBUTIONS)):
        where = f"facts.distributions[{i}]"
        obj = _object(d, where, ("name", "version", "requires", "installer"), ("name", "version"))
        raw = _text(obj["name"], f"{where}.name", _NAME) or ""
        name = canonicalize_name(raw)
        if name in dists:
            raise RequestError(f"{where}.name", f"{name} listed twice")
        lines = _array(obj.get("requires", []), f"{where}.requires", MAX_REQUIRES)
        if set(map(type, lines)) <= _STR:  # strings only (hashable: the cache's key); C-speed over ~1000 lines
            try:
                requires = _requires(tuple(lines), marker_key)
            except RequestError as exc:
                raise RequestError(f"{where}.requires{exc.where}", exc.why) from None
        else:  # a line that is not a string: named by the per-line check
            for j, r in enumerate(lines):
                _requirement(r, f"{where}.requires[{j}]")
            requires = ()
        dists[name] = Distribution(name, _version_text(obj["version"], f"{where}.version") or "",
                                   installer=_text(obj.get("installer"), f"{where}.installer", _OPT_WORD, True),
                                   requires=requires, display_name=raw)
    return Facts(
        python=PythonInfo(version=pyver, implementation=impl, executable="", prefix="", base_prefix=""),
        platform=platform, env_kinds=tuple(k for k in ENV_KINDS if k in kinds),
        distributions=MappingProxyType(dists), torch=_torch(f.get("torch_build")), xformers=_xformers(f.get("xformers_build")),
        hardware=_hardware(f), markers=MappingProxyType(markers), bitsandbytes=_bnb(f.get("bitsandbytes_build")),
        cwd="")


_UNREADABLE = "unreadable on the client (details stay there)"


def _torch(value: Any) -> Optional[TorchBuild]:
    if value is None:
        return None
    t = _object(value, "facts.torch_build", ("version", "cuda", "hip", "git_version", "error"))
    err = _bool(t.get("error", False), "facts.torch_build.error")
    return TorchBuild(version=_version_text(t.get("version"), "facts.torch_build.version", nullable=True),
                      cuda=_text(t.get("cuda"), "facts.torch_build.cuda", _CC, True),
                      hip=_text(t.get("hip"), "facts.torch_build.hip", _OPT_WORD, True),
                      git_version=_text(t.get("git_version"), "facts.torch_build.git_version", _HEX, True),
                      error=_UNREADABLE if err else None)


def _xformers(value: Any) -> Optional[XformersBuild]:
    if value is None:
        return None
    x = _object(value, "facts.xformers_build", ("torch", "cuda", "hip", "python", "arch_list", "error"))
    err = _bool(x.get("error", False), "facts.xformers_build.error")
    return XformersBuild(torch_version=_version_text(x.get("torch"), "facts.xformers_build.torch", nullable=True),
                         cuda_version=_int(x.get("cuda"), "facts.xformers_build.cuda", 0, 99999),
                         hip_version=_text(x.get("hip"), "facts.xformers_build.hip", _OPT_WORD, True),
                         python_version=_version_text(x.get("python"), "facts.xformers_build.python", nullable=True),
                         arch_list=_text(x.get("arch_list"), "facts.xformers_build.arch_list", _ARCHES, True),
                         error=_UNREADABLE if err else None)


def _bnb(value: Any) -> Optional[BitsandbytesBuild]:
    if value is None:
        return None
    b = _object(value, "facts.bitsandbytes_build", ("libraries", "error"))
    libs = tuple(sorted(_text(v, f"facts.bitsandbytes_build.libraries[{i}]", _LIBRARY) or ""
                        for i, v in enumerate(_array(b.get("libraries", []), "facts.bitsandbytes_build.libraries",
                                                     MAX_LIBRARIES))))
    err = _bool(b.get("error", False), "facts.bitsandbytes_build.error")
    return BitsandbytesBuild(libraries=libs, path="", error=_UNREADABLE if err else None)


def _hardware(f: Mapping[str, Any]) -> Hardware:
    gpus = []
    for i, g in enumerate(_array(f.get("gpus", []), "facts.gpus", MAX_GPUS)):
        where = f"facts.gpus[{i}]"
        obj = _object(g, where, ("name", "compute_capability", "memory_mib"), ("name",))
        cc_text = _text(obj.get("compute_capability"), f"{where}.compute_capability", _CC, True)
        cc = tuple(int(p) for p in cc_text.split(".")) if cc_text else None
        gpus.append(GPU(i, _text(obj["name"], f"{where}.name", _GPU_NAME) or "", cc,  # type: ignore[arg-type]
                        _int(obj.get("memory_mib"), f"{where}.memory_mib", 0, 10 ** 8)))
    return Hardware(gpus=tuple(gpus), driver_version=_text(f.get("driver"), "facts.driver", _DRIVER, True),
                    cuda_driver_version=_text(f.get("cuda_driver"), "facts.cuda_driver", _CC, True),
                    source="service request")


# -- the client's side: only what may travel ---------------------------------------------------------------------


def request_document(facts: Facts, packages: Sequence[str] = (), torch: Optional[str] = None,
                     cuda: Optional[str] = None, plan: bool = True) -> Dict[str, Any]:
    """The request for `facts` with only the fields that may travel, each dropped when it would not validate."""
    dists = []
    for d in sorted(facts.distributions.values(), key=lambda d: d.name):
        if d.error or not _ok_version(d.version) or not _RE[_NAME].match(d.name):
            continue  # unreadable metadata stays a local finding: its details can name paths
        reqs = [r for r in d.requires if _ok_requirement(r)]
        item: Dict[str, Any] = {"name": d.name, "version": d.version, "requires": reqs[:MAX_REQUIRES]}
        if d.installer and _RE[_OPT_WORD].match(d.installer):
            item["installer"] = d.installer
        dists.append(item)
    hw = facts.hardware
    doc: Dict[str, Any] = {
        "python": {"version": facts.python.version, "implementation": facts.python.implementation or "CPython"},
        "platform": {"system": facts.platform.system, "machine": facts.platform.machine,
                     "release": facts.platform.release, "libc": facts.platform.libc,
                     "libc_version": facts.platform.libc_version},
        "environment": [k for k in facts.env_kinds if k in ENV_KINDS],
        "markers": {k: v for k, v in _markers(facts).items() if k in MARKERS},
        "distributions": dists[:MAX_DISTRIBUTIONS],
        "torch_build": None if facts.torch is None else {
            "version": facts.torch.version, "cuda": facts.torch.cuda, "hip": facts.torch.hip,
            "git_version": facts.torch.git_version, "error": bool(facts.torch.error)},
        "xformers_build": None if facts.xformers is None else {
            "torch": facts.xformers.torch_version, "cuda": facts.xformers.cuda_version, "hip": facts.xformers.hip_version,
            "python": facts.xformers.python_version, "arch_list": facts.xformers.arch_list, "error": bool(facts.xformers.error)},
        "bitsandbytes_build": None if facts.bitsandbytes is None else {
            "libraries": list(facts.bitsandbytes.libraries)[:MAX_LIBRARIES], "error": bool(facts.bitsandbytes.error)},
        "driver": hw.driver_version, "cuda_driver": hw.cuda_driver_version,
        "gpus": [{"name": g.name, "compute_capability": None if g.compute_capability is None else g.cc,
                  "memory_mib": g.memory_mib} for g in hw.gpus][:MAX_GPUS],
    }
    out: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "facts": sanitize(doc), "packages": list(packages)}
    if torch is not None:
        out["torch"] = torch
    if cuda is not None:
        out["cuda"] = cuda
    if not plan:
        out["plan"] = False
    return out


def _markers(facts: Facts) -> Mapping[str, str]:
    """The checked interpreter's PEP 508 markers: Facts.markers, or this process's when empty (Facts' "this one").
    Sent so the service evaluates Requires-Dist markers for the client's Python, not its own."""
    if facts.markers:
        return facts.markers
    from packaging.markers import default_environment

    return {k: str(v) for k, v in default_environment().items()}


def _ok_version(text: Any) -> bool:
    return isinstance(text, str) and 0 < len(text) <= 64 and _parses(text)


def _ok_requirement(text: str) -> bool:
    try:
        _requirement(text, "")
        return True
    except RequestError:
        return False


def sanitize(facts_doc: Mapping[str, Any]) -> Dict[str, Any]:
    """The facts document stripped to what may travel: forbidden and unknown keys dropped, and every value that
    would not validate (a path in a free-text field, a garbage version) dropped or set to null.

    Takes this module's facts format or the `facts` of `doctor check --json` (its `packages` map becomes
    distributions without requirements; executable, prefix, env, active_environment are dropped).
    """
    out: Dict[str, Any] = {}
    py = facts_doc.get("python")
    if isinstance(py, str):  # doctor check --json: "python": "3.11.7"
        py = {"version": py}
    if isinstance(py, Mapping):
        out["python"] = {"version": py.get("version") if _ok_version(py.get("version")) else "0"}
        if isinstance(py.get("implementation"), str) and _RE[_WORD].match(py["implementation"]):
            out["python"]["implementation"] = py["implementation"]
    pl = facts_doc.get("platform")
    if isinstance(pl, str):  # doctor check --json: "platform": "Linux x86_64 6.1.0"
        parts = pl.split()
        pl = {"system": parts[0] if parts else "", "machine": parts[1] if len(parts) > 1 else "",
              "release": parts[2] if len(parts) > 2 else None}
    if isinstance(pl, Mapping):
        out["platform"] = {k: _clean(pl.get(k), _WORD if k in ("system", "machine") else _OPT_WORD,
                                     k not in ("system", "machine"))
                           for k in ("system", "machine", "release", "libc", "libc_version")}
        for k in ("system", "machine"):
            out["platform"][k] = out["platform"][k] or "unknown"
    kinds = facts_doc.get("environment")
    if isinstance(kinds, list):
        out["environment"] = [k for k in kinds if k in ENV_KINDS]
    markers = facts_doc.get("markers")
    if isinstance(markers, Mapping):
        out["markers"] = {k: v for k, v in markers.items() if k in MARKERS and isinstance(v, str) and _RE[_OPT_WORD].match(v)}
    dists = facts_doc.get("distributions")
    if not isinstance(dists, list) and isinstance(facts_doc.get("packages"), Mapping):
        dists = [{"name": n, "version": v} for n, v in facts_doc["packages"].items()]
    if isinstance(dists, list):
        out["distributions"] = [
            {"name": d["name"], "version": d["version"],
             "requires": [r for r in d.get("requires", []) if isinstance(r, str) and _ok_requirement(r)][:MAX_REQUIRES],
             **({"installer": d["installer"]} if isinstance(d.get("installer"), str)
                and _RE[_OPT_WORD].match(d["installer"]) else {})}
            for d in dists if isinstance(d, Mapping) and isinstance(d.get("name"), str) and _RE[_NAME].match(d["name"])
            and _ok_version(d.get("version"))][:MAX_DISTRIBUTIONS]
    tb = facts_doc.get("torch_build")
    if isinstance(tb, Mapping):
        out["torch_build"] = {"version": tb.get("version") if _ok_version(tb.get("version")) else None,
                              "cuda": _clean(tb.get("cuda"), _CC), "hip": _clean(tb.get("hip"), _OPT_WORD),
                              "git_version": _clean(tb.get("git_version"), _HEX), "error": bool(tb.get("error"))}
    xb = facts_doc.get("xformers_build")
    if isinstance(xb, Mapping):
        cuda = xb.get("cuda")
        out["xformers_build"] = {"torch": xb.get("torch") if _ok_version(xb.get("torch")) else None,
                                 "cuda": cuda if type(cuda) is int and 0 <= cuda <= 99999 else None,
                                 "hip": _clean(xb.get("hip"), _OPT_WORD),
                                 "python": xb.get("python") if _ok_version(xb.get("python")) else None,
                                 "arch_list": _clean(xb.get("arch_list"), _ARCHES), "error": bool(xb.get("error"))}
    bb = facts_doc.get("bitsandbytes_build")
    if isinstance(bb, Mapping):
        libs: List[Any] = bb["libraries"] if isinstance(bb.get("libraries"), list) else []
        out["bitsandbytes_build"] = {"libraries": [x for x in libs if isinstance(x, str) and _RE[_LIBRARY].match(x)][:MAX_LIBRARIES],
                                     "error": bool(bb.get("error"))}
    out["driver"] = _clean(facts_doc.get("driver"), _DRIVER)
    out["cuda_driver"] = _clean(facts_doc.get("cuda_driver"), _CC)
    gpus = facts_doc.get("gpus")
    if isinstance(gpus, list):
        out["gpus"] = [{"name": _clean(g.get("name"), _GPU_NAME) or "unknown GPU",
                        "compute_capability": _clean(g.get("compute_capability"), _CC),
                        "memory_mib": g.get("memory_mib") if type(g.get("memory_mib")) is int
                        and 0 <= g["memory_mib"] <= 10 ** 8 else None}
                       for g in gpus if isinstance(g, Mapping)][:MAX_GPUS]
    return out


def _clean(value: Any, pattern: str, nullable: bool = True) -> Optional[str]:
    """The value when it matches the field's pattern, else None (dropped, never sent)."""
    return value if isinstance(value, str) and _RE[pattern].match(value) else None
