"""Index mode: the service plans with pip's resolver against a package index, for a client it cannot see.

The planner (doctor.resolve.planner) runs `pip --python TARGET install --dry-run --report` against the
checked environment. The service has no client environment, so it builds a stand-in for one: a throwaway
venv (no pip, 10 ms) whose site-packages holds one stub `.dist-info` per distribution of the request
(METADATA with its exact version and Requires-Dist lines, nothing else). pip then sees exactly what the
client has installed, keeps what satisfies (its own only-if-needed strategy, the same answer as the local
planner), and the keep-set constraints pin torch and the healthy torch-coupled packages `===` as always.
The client's wheel tags reach pip as PIP_PYTHON_VERSION / PIP_IMPLEMENTATION / PIP_ABI / PIP_PLATFORM
(pip allows them with --dry-run and --only-binary :all:; pip/_internal/cli/cmdoptions.py
check_dist_restriction). The would-be Facts are the request's Facts plus pip's report, and the rules verify.

What pip cannot do here (so index mode declines and the answer is offline-matrix, with the reason):
- environment markers: pip evaluates Requires-Dist markers against the interpreter it runs in, never the
  --python-version/--platform target (pip/_internal/models/installation_report.py, "the resolver uses the
  default environment to evaluate environment markers", pypa/pip#11198). A client whose python_version,
  sys_platform, platform_machine or implementation differs from the server's would get another
  dependency set, so it is not planned here;
- platforms other than Linux glibc: pip expands only the legacy manylinux2014/2010 aliases
  (compatibility_tags._get_custom_platforms), so the perennial manylinux_2_N list is spelled out here.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import venv
from pathlib import Path
from typing import Optional, Tuple

from doctor.facts import Facts

PROBE_TIMEOUT = 3.0  # seconds for the index's root page: an index that cannot answer that is down
_MIN_GLIBC = 17  # manylinux2014 (glibc 2.17) is the oldest perennial tag spelled out


class Decline(Exception):
    """Index mode cannot answer this request (the index is down, the client's markers differ): why, in one line."""


def server_markers() -> Tuple[str, str, str, str]:
    """The marker values pip will use (its own interpreter's): python_version, sys_platform, machine, implementation."""
    return (f"{sys.version_info[0]}.{sys.version_info[1]}", sys.platform, platform.machine(),
            sys.implementation.name)


def client_markers(facts: Facts) -> Tuple[str, str, str, str]:
    """The same four values for the client, from its marker environment (else its python and platform)."""
    m = facts.markers
    parts = facts.python.version.split(".")
    py = m.get("python_version") or ".".join(parts[:2])
    system = (facts.platform.system or "").lower()
    plat = m.get("sys_platform") or {"linux": "linux", "darwin": "darwin", "windows": "win32"}.get(system, system)
    machine = m.get("platform_machine") or facts.platform.machine
    impl = m.get("implementation_name") or (facts.python.implementation or "").lower()
    return (py, plat, machine, impl)


def check_markers(facts: Facts) -> None:
    """Decline when pip (which evaluates markers for its own interpreter) would not see the client's markers."""
    names = ("python_version", "sys_platform", "platform_machine", "implementation_name")
    ours, theirs = server_markers(), client_markers(facts)
    differ = [f"{n} {t!r} (server {o!r})" for n, o, t in zip(names, ours, theirs) if o != t]
    if differ:
        raise Decline("pip evaluates environment markers for the server's own interpreter, not the client's "
                      "(pypa/pip#11198); the client's differ: " + ", ".join(differ))
    if theirs[1] != "linux" or (facts.platform.libc or "glibc") != "glibc":
        raise Decline("index mode plans for Linux glibc clients only")


def pip_tags_env(facts: Facts) -> Tuple[Tuple[str, str], ...]:
    """The client's wheel tags as pip's environment options (for the stand-in's pip run)."""
    py, _, machine, impl = client_markers(facts)
    nodot = py.replace(".", "")
    short = {"cpython": "cp", "pypy": "pp"}.get(impl, impl[:2])
    platforms = []
    glibc = facts.platform.libc_version or ""
    try:
        major, minor = (int(p) for p in glibc.split(".")[:2])
    except ValueError:
        major, minor = 2, _MIN_GLIBC
    if major == 2 and minor >= _MIN_GLIBC:
        platforms += [f"manylinux_2_{m}_{machine}" for m in range(minor, _MIN_GLIBC - 1, -1)]
        platforms += [f"manylinux2014_{machine}"]  # pip adds manylinux2010/1 after it
    platforms.append(f"linux_{machine}")
    return (("PIP_PYTHON_VERSION", py), ("PIP_IMPLEMENTATION", short), ("PIP_ABI", f"{short}{nodot}"),
            ("PIP_PLATFORM", " ".join(platforms)))


def _metadata(name: str, version: str, requires: Tuple[str, ...]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires if "\n" not in r and "\r" not in r]
    return "\n".join(lines) + "\n\n"


def stand_in(facts: Facts, root: Path) -> Path:
    """A venv under `root` whose installed distributions are the request's (stub METADATA only); its python."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    venv.EnvBuilder(with_pip=False, symlinks=sys.platform != "win32").create(root)
    site = root / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    if sys.platform == "win32":  # pragma: no cover - the service plans on Linux
        site = root / "Lib" / "site-packages"
    for d in facts.distributions.values():
        try:
            Version(d.version)
        except InvalidVersion:
            continue  # pip could not read it either; the rules still see it in the Facts
        if d.error or "/" in d.version or "\\" in d.version:
            continue
        dist = canonicalize_name(d.name).replace("-", "_")
        info = site / f"{dist}-{d.version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(_metadata(d.display_name or d.name, d.version, d.requires), encoding="utf-8")
        (info / "INSTALLER").write_text("tune-doctor-service\n", encoding="utf-8")
        (info / "RECORD").write_text("", encoding="utf-8")
    return root / "bin" / "python"


def probe(index_url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Decline when the index does not answer its root page (down, refused, an error status)."""
    import httpx

    try:
        resp = httpx.get(index_url.rstrip("/") + "/", timeout=timeout, follow_redirects=True,
                         headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    except httpx.HTTPError as exc:
        raise Decline(f"the index {index_url} did not answer ({type(exc).__name__})") from None
    if resp.status_code >= 400:
        raise Decline(f"the index {index_url} answered HTTP {resp.status_code}")


def workdir() -> "tempfile.TemporaryDirectory[str]":
    """A private temporary directory for one request's stand-in."""
    return tempfile.TemporaryDirectory(prefix="doctor-serve-")


def public_index(url: Optional[str], default: Optional[str], torch_base: Optional[str], matrix_torch: str) -> Optional[str]:
    """An index URL as the client may see it: None for the server's default index, a torch variant on the
    matrix's PyTorch base (the client only accepts those; it re-derives every plan against its own indexes)."""
    if url is None or (default and url.rstrip("/") == default.rstrip("/")):
        return None
    base = (torch_base or matrix_torch).rstrip("/")
    if url.startswith(base + "/"):
        return matrix_torch.rstrip("/") + url[len(base):]
    return None
