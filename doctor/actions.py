"""Actions: the typed steps of a fix. Data, never a command line to parse back.

Every Action is a frozen dataclass: its fields say exactly what it changes (requirements, an index
URL, paths inside one cache root, a variable and its value), it renders its own command line for a
person to paste (`command()`), and `to_dict()` gives the one JSON form. Whether the doctor can apply
it (`automatic`) and whether it removes or replaces something that exists (`destructive`) are
properties of the type, not of a string. The planner (doctor.fix) and the cache repairer
(doctor.cache.repair) read the fields; nothing splits an argv.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# Why --no-deps, when a builder does not say: pip would otherwise re-resolve (and may replace) torch.
NO_DEPS_WHY = "--no-deps: pip must not re-resolve the packages this fix keeps (torch above all)"


class Action:
    """Base of every action: a one-line description, a kind name, and how it renders."""

    kind: ClassVar[str] = ""
    applies: ClassVar[bool] = False  # the doctor can apply this kind (see `automatic`)
    removes: ClassVar[bool] = False  # this kind removes or replaces something that exists
    description: str

    @property
    def automatic(self) -> bool:
        """Whether `doctor check --fix` / `doctor cache repair` can apply it (else it is shown, not run)."""
        return self.applies

    @property
    def destructive(self) -> bool:
        """Whether it removes or replaces something that exists (needs confirmation)."""
        return self.removes

    def command(self) -> Optional[str]:
        """The shell command a person can paste, where the action is one."""
        return None

    def packages(self) -> Tuple[str, ...]:
        """Canonical names of the distributions it installs or removes (none for other kinds)."""
        return ()

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form: kind, description, destructive, automatic, command, then the typed fields."""
        fields = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        fields.pop("description", None)
        return {"kind": self.kind, "description": self.description, "destructive": self.destructive,
                "automatic": self.automatic, "command": self.command(), **fields}


def _jsonable(value: Any) -> Any:
    """Tuples (also nested) as lists."""
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _requirement(text: str) -> Requirement:
    """A PEP 508 requirement, or ValueError: a flag or garbage never becomes part of an install."""
    if not text or text.startswith("-"):
        raise ValueError(f"not a requirement: {text!r}")
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"not a requirement: {text!r} ({exc})") from None


@dataclass(frozen=True)
class PipInstall(Action):
    """pip install of exact requirements, from an index URL, with --no-deps / --force-reinstall and why."""

    kind: ClassVar[str] = "pip-install"
    applies: ClassVar[bool] = True
    removes: ClassVar[bool] = True  # it replaces what is installed
    requirements: Tuple[str, ...]  # PEP 508 strings: "xformers==0.0.32.post2", "torch==2.8.0+cu128"
    description: str = ""
    index_url: Optional[str] = None  # e.g. a PyTorch index of one CUDA variant; None: the configured index
    no_deps: bool = False
    no_deps_why: str = ""  # why pip must not resolve dependencies here
    force_reinstall: bool = False
    force_reinstall_why: str = ""  # why the installed version must be replaced by the same one
    constraints: Optional[str] = None  # a constraints file (-c) that keeps what the plan keeps (torch===...)
    only_binary: bool = False  # wheels only, as planned: pip must never build an sdist (flash-attn) here

    def __post_init__(self) -> None:
        if not self.requirements:
            raise ValueError("PipInstall needs at least one requirement")
        for r in self.requirements:
            _requirement(r)
        if self.no_deps and not self.no_deps_why:
            object.__setattr__(self, "no_deps_why", NO_DEPS_WHY)
        if self.force_reinstall and not self.force_reinstall_why:
            object.__setattr__(self, "force_reinstall_why", "the same version is installed but it is the wrong build")
        if not self.description:
            object.__setattr__(self, "description", "install " + " ".join(self.requirements))

    def packages(self) -> Tuple[str, ...]:
        return tuple(canonicalize_name(_requirement(r).name) for r in self.requirements)

    def argv(self) -> Tuple[str, ...]:
        """pip's arguments after `install`, in the order the command shows them."""
        out = list(self.requirements)
        if self.index_url:
            out += ["--index-url", self.index_url]
        if self.constraints:
            out += ["-c", self.constraints]
        if self.only_binary:
            out += ["--only-binary", ":all:"]
        if self.force_reinstall:
            out.append("--force-reinstall")
        if self.no_deps:
            out.append("--no-deps")
        return tuple(out)

    def command(self) -> Optional[str]:
        return "pip install " + " ".join(shlex.quote(a) for a in self.argv())


@dataclass(frozen=True)
class PipUninstall(Action):
    """pip uninstall -y of distributions."""

    kind: ClassVar[str] = "pip-uninstall"
    applies: ClassVar[bool] = True
    removes: ClassVar[bool] = True
    names: Tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("PipUninstall needs at least one name")
        for n in self.names:
            if _requirement(n).specifier or _requirement(n).url:
                raise ValueError(f"uninstall takes names, not {n!r}")
        if not self.description:
            object.__setattr__(self, "description", "uninstall " + " ".join(self.names))

    def packages(self) -> Tuple[str, ...]:
        return tuple(canonicalize_name(n) for n in self.names)

    def argv(self) -> Tuple[str, ...]:
        """pip's arguments after `uninstall`."""
        return ("-y", *self.names)

    def command(self) -> Optional[str]:
        return "pip uninstall " + " ".join(shlex.quote(a) for a in self.argv())


@dataclass(frozen=True)
class SetEnv(Action):
    """Set an environment variable; for a cache location, `directory` makes it a step the doctor can apply
    (the directory is created and this process uses it; persisting it is the user's choice)."""

    kind: ClassVar[str] = "set-env"
    name: str
    value: str
    description: str = ""
    directory: bool = False  # the value is a directory to create (a cache location)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name) or self.name[0].isdigit():
            raise ValueError(f"not an environment variable name: {self.name!r}")
        if not self.description:
            object.__setattr__(self, "description", f"set {self.name}")

    @property
    def automatic(self) -> bool:
        return self.directory

    def command(self) -> Optional[str]:
        return f"export {self.name}={shlex.quote(self.value)}"


@dataclass(frozen=True)
class MoveToQuarantine(Action):
    """Move entries of one cache (or the whole cache) into the quarantine beside it; never a delete."""

    kind: ClassVar[str] = "quarantine"
    applies: ClassVar[bool] = True
    removes: ClassVar[bool] = True
    root: str  # the cache root the entries belong to (absolute)
    paths: Tuple[str, ...] = ()  # absolute paths inside root; empty with whole_root
    description: str = ""
    whole_root: bool = False  # move the whole cache (doctor cache clear)

    def __post_init__(self) -> None:
        if bool(self.paths) == self.whole_root:
            raise ValueError("MoveToQuarantine takes paths, or whole_root without paths")
        if not self.description:
            what = f"the whole cache {self.root}" if self.whole_root else ", ".join(self.paths)
            object.__setattr__(self, "description", f"move {what} to its quarantine")


@dataclass(frozen=True)
class RemoveStaleLock(Action):
    """Remove lock files of one cache that nobody holds."""

    kind: ClassVar[str] = "remove-lock"
    applies: ClassVar[bool] = True
    removes: ClassVar[bool] = True
    root: str
    paths: Tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("RemoveStaleLock needs at least one path")
        if not self.description:
            object.__setattr__(self, "description", "remove stale lock " + ", ".join(self.paths))


@dataclass(frozen=True)
class TightenMode(Action):
    """chmod files of one cache to modes that only remove permissions (the doctor's own files)."""

    kind: ClassVar[str] = "chmod"
    applies: ClassVar[bool] = True
    root: str
    targets: Tuple[Tuple[str, int], ...]  # (absolute path, mode)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("TightenMode needs at least one target")
        if not self.description:
            modes = "/".join(sorted({f"{m:04o}" for _, m in self.targets}))
            object.__setattr__(self, "description", f"chmod {modes} " + ", ".join(p for p, _ in self.targets))


@dataclass(frozen=True)
class RestartRuntime(Action):
    """Restart the Python runtime / notebook kernel (what is imported stays imported until then)."""

    kind: ClassVar[str] = "restart-runtime"
    description: str = "restart the Python runtime/kernel"


@dataclass(frozen=True)
class ReorderImports(Action):
    """Move an import or a patch call in the user's code; the doctor never edits code."""

    kind: ClassVar[str] = "reorder-imports"
    description: str


@dataclass(frozen=True)
class Manual(Action):
    """A step only a person can take (upgrade a driver, change the GPU, pick a version)."""

    kind: ClassVar[str] = "manual"
    description: str


KINDS: Tuple[type, ...] = (PipInstall, PipUninstall, SetEnv, MoveToQuarantine, RemoveStaleLock, TightenMode,
                           RestartRuntime, ReorderImports, Manual)
