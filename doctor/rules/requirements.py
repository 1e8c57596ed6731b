"""Unmet Requires-Dist among the training stack, read from metadata (our own code, not a `pip check` subprocess)."""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Mapping, Optional, Tuple

from packaging.markers import Marker, UndefinedComparison, UndefinedEnvironmentName, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from doctor.actions import Action, Manual, PipInstall
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.stack import TORCH_COUPLED, TRAINING_STACK
from doctor.facts import Distribution, Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import reinstall, unsloth_zoo_pin, xformers_built_for, xformers_cuda_arg, xformers_install
from doctor.rules._common import satisfies, torch_version, version

CAT = Category.PACKAGES
# Pairs a dedicated rule reports with more evidence; not repeated here.
COVERED = {("xformers", "torch"), ("torch", "triton"), ("torch", "pytorch-triton"), ("bitsandbytes", "torch")}
# Packages that move together: a floor on the partner is a release-day contract, not a loose hint.
LOCKSTEP = {("unsloth", "unsloth-zoo")}
# Built for one torch release: "any version meeting the spec" is the wrong fix for these (torch itself is not).
BUILT_FOR_TORCH = frozenset(TORCH_COUPLED) - {"torch"}


@lru_cache(maxsize=1)
def _env() -> Dict[str, str]:
    """Marker environment of this interpreter, with no extras selected."""
    env: Dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env["extra"] = ""
    return env


def marker_applies(marker: Optional[Marker], markers: Optional[Mapping[str, str]] = None) -> bool:
    """Whether a requirement's marker holds for the checked interpreter (`markers`, Facts.markers; empty: this
    one), extras never selected; unknown markers count as applying."""
    if marker is None:
        return True
    try:
        return bool(marker.evaluate({**markers, "extra": ""} if markers else _env()))
    except (UndefinedComparison, UndefinedEnvironmentName, ValueError, TypeError):
        return True


@lru_cache(maxsize=1 << 15)  # ~1 KB a Requirement: 32 MB at most; an environment has ~1500 distinct lines
def parse_line(line: str) -> Optional[Requirement]:
    """packaging's Requirement for one Requires-Dist line, None when it does not parse.

    Cached: the same lines come back in every rule, every check and every service request (packaging's parser
    costs ~40 us a line, and an environment has a thousand). Callers share the object: never mutate it."""
    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


def extra_only(line: str) -> bool:
    """Whether a Requires-Dist line's whole marker is `extra == "NAME"`: it never applies to an installed
    distribution (markers are evaluated with extra == "", as pip check does), so it needs no parse.

    Most lines of an environment are such (920 lines, 795 of them, in a torch + transformers venv), and
    packaging's parser costs ~40 us a line: skipping them is most of `doctor check`'s requirement rule."""
    semi = line.find(";")
    if semi < 0:
        return False
    m = line[semi + 1:].strip()
    if not m.startswith("extra"):
        return False
    rest = m[5:].lstrip()
    if not rest.startswith("==") or rest.startswith("==="):
        return False
    value = rest[2:].strip()
    return (len(value) > 2 and value[0] == value[-1] and value[0] in "'\""
            and not any(c in value[1:-1] for c in "'\""))


@lru_cache(maxsize=1 << 12)
def _applying(requires: Tuple[str, ...], markers: Tuple[Tuple[str, str], ...]) -> Tuple[Tuple[str, Requirement], ...]:
    """parsed_requires for one distribution's lines under one marker environment (() : this interpreter's)."""
    env = dict(markers) if markers else None
    out = []
    for line in requires:
        if extra_only(line):
            continue
        req = parse_line(line)
        if req is not None and marker_applies(req.marker, env):
            out.append((line, req))
    return tuple(out)


def parsed_requires(dist: Distribution, markers: Optional[Mapping[str, str]] = None) -> List[Tuple[str, Requirement]]:
    """(raw line, Requirement) pairs that apply on this machine; unparseable lines are skipped."""
    key = tuple(sorted(markers.items())) if markers else ()
    return list(_applying(tuple(dist.requires), key))


def requirement_on(dist: Distribution, name: str) -> Optional[str]:
    """The specifier `dist` puts on package `name` here ('' for any version), or None if it has none."""
    target = canonicalize_name(name)
    for _line, req in parsed_requires(dist):
        if canonicalize_name(req.name) == target:
            return str(req.specifier)
    return None


def check_requirements(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Each stack package's requirements against what is installed; unsloth vs unsloth_zoo gets its own id."""
    out: List[Finding] = []
    for name in TRAINING_STACK:
        dist = facts.dist(name)
        if dist is None:
            continue
        if dist.error:
            out.append(finding("package.broken-metadata", Severity.WARN, CAT, f"{dist.display_name or name}: unreadable metadata",
                               {"package": name, "location": dist.location or "?", "error": dist.error},
                               "pip and importlib cannot trust this install; reinstall it.",
                               [reinstall(name, dist.version, matrix.torch_index_url)],
                               subject=name))
            continue
        if version(dist.version) is None and name != "torch":  # torch's: the torch_build rule, beside version.py
            out.append(finding("package.bad-version", Severity.WARN, CAT, f"{name} has an unreadable version '{dist.version}'",
                               {"package": name, "version": dist.version, "location": dist.location or "?"},
                               "Requirements on it cannot be checked; reinstall a released version.", subject=name))
        if dist.shadowed:
            out.append(finding("package.shadowed", Severity.WARN, CAT,
                               f"{name} is installed more than once; {dist.version} hides " + ", ".join(v for v, _ in dist.shadowed),
                               {"used": f"{dist.version} at {dist.location}",
                                **{f"hidden {i + 1}": f"{v} at {loc}" for i, (v, loc) in enumerate(dist.shadowed)}},
                               "Two copies on sys.path (user site vs venv, conda vs pip): what pip reports and what "
                               "imports can differ.", [], subject=name))
        missing: List[Tuple[str, str]] = []  # (canonical name, specifier)
        for line, req in parsed_requires(dist, facts.markers):
            dep = _canonical(req.name)
            if (name, dep) in COVERED:
                continue
            other = facts.distributions.get(dep)  # keyed by canonical name, like Facts.dist
            if other is None:
                if (name, dep) not in LOCKSTEP:
                    missing.append((dep, str(req.specifier)))
                    continue
            elif _met(line, other.version):
                continue  # most lines: nothing to report, answered from the cache
            out.extend(_one(facts, matrix, dist, line, req, dep))
        if missing:
            out.append(_missing(dist, missing, facts, matrix))
    return out


@lru_cache(maxsize=1 << 12)
def _canonical(name: str) -> str:
    """canonicalize_name, cached: a few hundred names, looked up for every line of every check."""
    return canonicalize_name(name)


@lru_cache(maxsize=1 << 15)
def _met(line: str, installed: str) -> bool:
    """Whether `installed` meets the specifier of Requires-Dist `line` as _one decides it (no specifier or an
    unreadable version: met). Cached on both texts: the same pairs come back in check after check."""
    req = parse_line(line)
    ov = version(installed)
    return req is None or ov is None or not str(req.specifier) or satisfies(ov, req.specifier)


def _coupled_fix(facts: Facts, matrix: Matrix, dep: str, spec: str) -> List[Action]:
    """Fix for a torch-coupled requirement: the build for the installed torch, never just 'the newest'."""
    tv = torch_version(facts)
    if dep == "xformers" and tv is not None:
        pick = version(xformers_built_for(matrix, tv))
        install = xformers_install(matrix, tv, facts.version_of("xformers"), xformers_cuda_arg(facts))
        if install is not None and pick is not None and satisfies(pick, spec):
            return [install]
    return [Manual(f"install the {dep} release built for torch {tv or '(not installed)'} that also meets '{dep}{spec}' "
                   f"(its release notes pair it with a torch version)")]


def _missing(dist: Distribution, missing: List[Tuple[str, str]], facts: Facts, matrix: Matrix) -> Finding:
    """One finding listing every requirement of `dist` that is not installed, with one install command."""
    plain = tuple(f"{dep}{spec}" for dep, spec in missing if dep not in BUILT_FOR_TORCH)
    # --no-deps: add exactly what is missing without letting pip re-resolve torch
    fix: List[Action] = [PipInstall(plain, description="install the missing requirements", no_deps=True)] if plain else []
    for dep, spec in missing:
        if dep in BUILT_FOR_TORCH:
            fix.extend(_coupled_fix(facts, matrix, dep, spec))
    return finding(
        "requires.missing", Severity.WARN, CAT,
        f"{dist.name} {dist.version}: {len(missing)} required package{'s' if len(missing) != 1 else ''} not installed",
        {"missing": ", ".join(dep + spec for dep, spec in missing), "location": dist.location or "?"},
        "Something was installed with --no-deps or uninstalled later; importing it fails or loses features.",
        fix, subject=dist.name)


def _one(facts: Facts, matrix: Matrix, dist: Distribution, line: str, req: Requirement, dep: str) -> List[Finding]:
    """Findings for one requirement line of one installed stack package."""
    other = facts.dist(dep)
    spec = str(req.specifier)
    ev = {dist.name: dist.version, "requires": line.split(";")[0].strip(), "installed": f"{dep} {other.version}" if other else "not installed"}
    lockstep = (dist.name, dep) in LOCKSTEP
    if other is None:
        sev = Severity.ERROR if lockstep else Severity.WARN
        return [finding("requires.missing", sev, CAT, f"{dist.name} {dist.version} requires {dep}{spec}, which is not installed",
                        ev, "Something was installed with --no-deps or uninstalled later; the import fails or loses features.",
                        _coupled_fix(facts, matrix, dep, spec) if dep in BUILT_FOR_TORCH else [_install(dep, spec)],
        subject=f"{dist.name}->{dep}")]
    ov = version(other.version)
    if ov is None or not spec or satisfies(ov, req.specifier):
        return []
    if lockstep:
        return [finding(
            "unsloth.zoo-skew", Severity.ERROR, CAT,
            f"unsloth {dist.version} needs unsloth_zoo{spec}, {other.version} is installed", ev,
            "unsloth and unsloth_zoo release together: a newer unsloth reads patch tables that only the matching zoo "
            "has, so `from unsloth import ...` dies with errors like KeyError: 'grpo_compute_loss_slow' (unsloth "
            "#2015, after installing unsloth from git with --no-deps).",
            [unsloth_zoo_pin(spec)],
            subject=f"{dist.name}->{dep}")]
    return [finding(
        "requires.unmet", Severity.ERROR, CAT,
        f"{dist.name} {dist.version} requires {dep}{spec}, {other.version} is installed", ev,
        "pip accepted this state (a later install, --no-deps, or a forced pin) but the package declares it does not "
        "work with this version: expect import errors or wrong behaviour.",
        _coupled_fix(facts, matrix, dep, spec) if dep in BUILT_FOR_TORCH else [_install(dep, spec)],
        subject=f"{dist.name}->{dep}")]


def _install(dep: str, spec: str) -> PipInstall:
    """pip install of one requirement as it is declared, --no-deps so pip does not re-resolve torch."""
    return PipInstall((f"{dep}{spec}",), no_deps=True)
