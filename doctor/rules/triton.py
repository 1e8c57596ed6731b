"""triton vs the pin of the installed torch."""

from __future__ import annotations

from typing import List, Optional, Tuple

from doctor.actions import PipInstall
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.rules._common import release, satisfies, torch_version, version
from doctor.rules.requirements import requirement_on

CAT = Category.KERNELS
# Nightly/index builds of torch depend on pytorch-triton instead of triton.
TRITON_NAMES = ("triton", "pytorch-triton")


def triton_pin(facts: Facts, matrix: Matrix) -> Tuple[Optional[str], str, str]:
    """(specifier, package name, where it came from): torch's own Requires-Dist first, then the matrix."""
    torch = facts.dist("torch")
    if torch is not None:
        for name in TRITON_NAMES:
            spec = requirement_on(torch, name)
            if spec is not None:
                return spec, name, "torch METADATA Requires-Dist"
    tv = torch_version(facts)
    if tv is not None and facts.platform.system == "Linux" and facts.torch and facts.torch.cuda:
        req = lookup.triton_pin_for_torch(matrix, tv)
        if req is not None:
            return str(req.spec), "triton", f"compat matrix ({req.source})"
    return None, "triton", ""


def check_triton(facts: Facts, matrix: Matrix) -> List[Finding]:
    """The installed triton must be the one torch pins (Inductor and every Triton kernel compile with it)."""
    tv = torch_version(facts)
    if tv is None:
        return []
    spec, name, src = triton_pin(facts, matrix)
    installed = next((facts.dist(n) for n in TRITON_NAMES if facts.dist(n)), None)
    if spec is None:
        return []
    ev = {"torch": str(tv), f"torch requires {name}": spec, "from": src,
          "installed": f"{installed.name} {installed.version}" if installed else "none"}
    fix = [PipInstall((f"{name}{spec}",), description=f"the {name} torch {release(tv)} was released with", no_deps=True)]
    if installed is None:
        return [finding("triton.missing", Severity.WARN, CAT, f"torch {tv} needs {name}{spec}, which is not installed", ev,
                        "torch.compile, Unsloth and Liger kernels need Triton.", fix)]
    iv = version(installed.version)
    if iv is None:
        return [finding("triton.bad-version", Severity.WARN, CAT, f"{installed.name} has an unreadable version '{installed.version}'", ev)]
    if not satisfies(iv, spec):
        return [finding(
            "triton.torch-mismatch", Severity.ERROR, CAT,
            f"{installed.name} {installed.version} does not match torch {release(tv)}'s pin {name}{spec}", ev,
            "Inductor's generated code and Triton kernels target the Triton torch was built with; another version fails "
            "at compile time (AttributeError/ImportError inside torch._inductor or triton.compiler) or miscompiles.",
            fix)]
    return [finding("triton.torch", Severity.OK, CAT, f"{installed.name} {installed.version} matches torch {release(tv)}", ev)]
