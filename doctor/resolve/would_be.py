"""The would-be environment: the checked Facts with a plan's changes applied, before anything is installed.

Installed distributions with pip's report applied (versions and Requires-Dist from the candidates' own
metadata), removals dropped, and the binary facts metadata cannot give (which CUDA a torch build uses,
which torch an xformers binary was compiled for) from the build's index and the matrix. The rules then
run on it exactly as on a real environment.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, NamedTuple, Optional, Sequence

from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.versions import cuda_from_tag
from doctor.facts import Distribution, Facts, TorchBuild, XformersBuild
from doctor.resolve.pip_report import Resolved

_VARIANT = re.compile(r"/(cu\d{2,3}|cpu|rocm[\d.]+)/?$")
_CU = re.compile(r"^cu(\d{2,3})$")


class Install(NamedTuple):
    """One distribution the plan installs, and the index its build comes from."""

    resolved: Resolved
    index_url: Optional[str] = None  # None: the default index


def variant_of(index_url: Optional[str]) -> Optional[str]:
    """The PyTorch variant an index serves ("cu121", "cpu"), from its URL; None for other indexes."""
    m = _VARIANT.search(index_url or "")
    return m.group(1) if m else None


def cuda_of_variant(variant: Optional[str]) -> Optional[str]:
    """"cu121" -> "12.1"; None for cpu/rocm/unknown."""
    return cuda_from_tag(variant) if variant and _CU.match(variant) else None


def _minor(version: str) -> str:
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2])


def torch_build(version: str, index_url: Optional[str], matrix: Matrix) -> TorchBuild:
    """The build a torch wheel would bring: +cuXYZ/+cpu from its label or its index, else the index default."""
    local = version.split("+", 1)[1] if "+" in version else ""
    variant = local or variant_of(index_url)
    if variant:
        return TorchBuild(version=version, cuda=cuda_of_variant(variant))
    return TorchBuild(version=version, cuda=matrix.torch_default_cuda.get(_minor(version)))


def xformers_build(r: Resolved, index_url: Optional[str], matrix: Matrix, python: str) -> XformersBuild:
    """What an xformers wheel's cpp_lib.json would say: the matrix's record of that build, else built for its exact
    torch pin (from the candidate's own metadata) with the index's CUDA."""
    from packaging.requirements import InvalidRequirement, Requirement

    from doctor.compat_matrix import lookup

    known = lookup.xformers_build_of(matrix, r.version, variant_of(index_url))
    if known is not None:
        return known._replace(python_version=known.python_version or python,
                              path=f"(planned: xformers {r.version} from {index_url or 'the default index'})")

    built_for: Optional[str] = None
    for line in r.requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name == "torch" and not req.marker:
            exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
            built_for = exact[0] if len(exact) == 1 else None
    if built_for is None:
        return XformersBuild(torch_version=None, path="(planned: which torch it was built for is not in its metadata)")
    cuda = cuda_of_variant(variant_of(index_url)) or matrix.torch_default_cuda.get(_minor(built_for))
    major, _, minor = (cuda or "").partition(".")
    cuda_int = int(major) * 100 + int(minor) if major.isdigit() and minor.isdigit() else None  # cpp_lib.json: 1201
    return XformersBuild(torch_version=built_for, cuda_version=cuda_int, python_version=python,
                         path=f"(planned: xformers {r.version} from {index_url or 'the default index'})")


def would_be(facts: Facts, matrix: Matrix, installs: Sequence[Install], removals: Iterable[str] = ()) -> Facts:
    """`facts` with `installs` applied over what is there and `removals` gone."""
    dists: Dict[str, Distribution] = dict(facts.distributions)
    removed = set(removals)
    for name in removed:
        dists.pop(name, None)
    default_location = next((d.location for d in facts.distributions.values() if d.location), None)
    torch = facts.torch
    xformers = facts.xformers
    bnb = facts.bitsandbytes
    if "torch" in removed:
        torch = None
    if "xformers" in removed:
        xformers = None
    if "bitsandbytes" in removed:
        bnb = None
    for inst in installs:
        r = inst.resolved
        old = dists.get(r.name)
        dists[r.name] = Distribution(name=r.name, version=r.version, location=(old.location if old else default_location),
                                     installer="pip", requires=r.requires, display_name=old.display_name if old else r.name)
        if r.name == "torch":
            torch = torch_build(r.version, inst.index_url, matrix)
        elif r.name == "xformers":
            xformers = xformers_build(r, inst.index_url, matrix, facts.python.version)
        elif r.name == "bitsandbytes":
            bnb = None  # the rule reads the new release's libraries from the matrix by version
    return facts._replace(distributions=dists, torch=torch, xformers=xformers, bitsandbytes=bnb)
