"""Remedies: the typed Actions that fix what the rules and the probes find, built from the matrix.

One home for every fix that more than one finding offers (an xformers build for this torch, the exact
reinstall of what is there, a torch build from one CUDA variant's index, unsloth_zoo's floor, the
bitsandbytes range for this torch), so a rule and a probe verdict about the same problem offer the
same step. It reads the matrix, the Facts and the action types only: never rules/ or probes/.

Every torch-coupled fix is built for the installed torch, so the reading of that torch (its version
and CUDA, from torch/version.py first) lives here too; the rules read it through rules._common.
"""

from __future__ import annotations

import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from doctor.actions import Action, Manual, PipInstall, PipUninstall
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix, RangeRequirement
from doctor.compat_matrix.versions import minor_of, parse_torch_version, parse_version, release_of, torch_variant
from doctor.facts import Facts

# Distributions whose versions carry the variant (+cu128/+cpu) as a local label: those builds live on the
# PyTorch index only (triton and xformers there have plain versions; see stack.TORCH_FAMILY for the index rule).
VARIANT_LABELLED = ("torch", "torchvision", "torchaudio")

_CU_LOCAL = re.compile(r"\+cu(\d{2,3})\b")


# -- the installed torch, which every torch-coupled fix is built for ----------------------------------------


def torch_installed(facts: Facts) -> bool:
    """Whether there is a torch at all (a dist-info or a torch/version.py), readable or not."""
    return facts.dist("torch") is not None or facts.torch is not None


def torch_version(facts: Facts) -> Optional[Version]:
    """Installed torch version: the build file first (it has the local label), then the distribution.

    None when neither is a version torch could have (see versions.parse_torch_version): a rule
    then says nothing about torch rather than reasoning from garbage; the torch_build rule reports it.
    """
    if facts.torch and facts.torch.version:
        v = parse_torch_version(facts.torch.version)
        if v:
            return v
    return parse_torch_version(facts.version_of("torch"))


def torch_cuda(facts: Facts) -> Tuple[Optional[str], bool]:
    """(CUDA version of the torch build, whether it is known).

    version.py's `cuda` is the truth; when that file could not be read literally, the wheel's local
    label (+cu128) still tells; otherwise the build is unknown, which is never the same as a CPU build.
    """
    t = facts.torch
    if t is None:
        return None, False
    if t.cuda:
        return t.cuda, True
    if t.error:
        m = _CU_LOCAL.search(t.version or facts.version_of("torch") or "")
        if m:
            digits = m.group(1)
            return f"{digits[:-1]}.{digits[-1]}", True
        return None, False
    return None, True


def xformers_cuda_arg(facts: Facts) -> Optional[str]:
    """torch's CUDA as xformers_fix takes it: the version, None for a CPU build, "" when unknown."""
    cuda, known = torch_cuda(facts)
    return cuda if known else ""


# -- torch ------------------------------------------------------------------------------------------------


def torch_build_action(index_url: str, v: Version, tag: str, why: str) -> PipInstall:
    """pip install of the same torch release built for `tag`, from that variant's PyTorch index.

    The local label ('torch==2.8.0+cu128') makes pip replace a 2.8.0+cpu/+cu129 it would call satisfied.
    """
    return PipInstall((f"torch=={release_of(v)}+{tag}",), index_url=f"{index_url}/{tag}", description=why)


CC = Tuple[int, int]


def torch_releases_by_minor(matrix: Matrix) -> List[Tuple[str, Version]]:
    """(minor, newest torch release the matrix knows of it), for every minor with CUDA variants on the PyTorch index."""
    newest: Dict[str, Version] = {}
    for row in matrix.torch_triton:  # the torch releases the matrix knows, one row each
        v = parse_version(row.version)
        if v is None:
            continue
        m = minor_of(v)
        if m in matrix.torch_cuda_variants and (m not in newest or v > newest[m]):
            newest[m] = v
    return sorted(newest.items(), key=lambda kv: kv[1])


def torch_build_candidates(matrix: Matrix, tv: Version, driver: Optional[Version], ccs: Sequence[CC] = (),
                           need_archs: bool = False, same_release: bool = False) -> List[Tuple[Version, str]]:
    """Torch builds (release, 'cuXYZ') this driver fully supports and that run every GPU in `ccs`, best first.

    The installed release comes first (its variants newest CUDA first), then the other minors by their
    distance from the installed one (the newer first on a tie): the smallest torch move that works. A
    build runs a GPU when its arch list has a cubin for it; `need_archs`: a build without a known arch
    list does not count (an arch fix must name a build that has the arch); an unknown driver runs all.
    `same_release`: only builds of the installed release.
    """
    rel = release_of(tv)
    here = minor_of(rel)
    others = [] if same_release else [(m, r) for m, r in torch_releases_by_minor(matrix) if m != here]
    others.sort(key=lambda mr: (_minor_distance(mr[0], rel), -Version(mr[0]).release[1]))
    releases = [(here, rel)] + others
    out: List[Tuple[Version, str]] = []
    for m, r in releases:
        for tag in reversed(matrix.torch_cuda_variants.get(m, ())):
            cuda = lookup.cuda_from_tag(tag)
            floor = lookup.driver_floor(matrix, cuda) if cuda else None
            if floor is None or (driver is not None and driver < floor.toolkit):
                continue  # a build this driver cannot run (or whose floor is unknown) is no fix
            aset = lookup.archs_for(matrix, r, tag)
            if aset is None and (need_archs and ccs):
                continue
            if aset is not None and not all(lookup.arch_verdict(aset.archs, aset.ptx, cc)[0] == "cubin" for cc in ccs):
                continue
            out.append((r, tag))
    return out


def _minor_distance(minor: str, rel: Version) -> int:
    """How far torch minor 'X.Y' is from a release: minors apart, a major counting as 100."""
    major_, minor_ = Version(minor).release[:2]
    return 100 * abs(major_ - rel.release[0]) + abs(minor_ - (rel.release[1] if len(rel.release) > 1 else 0))


def torch_build_fix(matrix: Matrix, tv: Version, driver: Optional[Version], ccs: Sequence[CC] = (),
                    need_archs: bool = False, why: str = "", same_release: bool = False) -> Optional[PipInstall]:
    """The exact torch build (torch==X+cuYYY from that variant's PyTorch index) of the best candidate, or None."""
    cands = torch_build_candidates(matrix, tv, driver, ccs, need_archs, same_release)
    if not cands:
        return None
    r, tag = cands[0]
    cuda = lookup.cuda_from_tag(tag)
    floor = lookup.driver_floor(matrix, cuda) if cuda else None
    runs = f"driver >= {floor.toolkit_text or floor.toolkit} runs CUDA {cuda}" if floor else f"CUDA {cuda}"
    same = release_of(r) == release_of(tv)
    text = (why + "; " if why else "") + f"torch {r} built for CUDA {cuda} ({tag}; {runs})"
    if not same:
        text += f": another torch release than the installed {release_of(tv)}, so torch-coupled packages move with it"
    return torch_build_action(matrix.torch_index_url, r, tag, text + "; reinstall torchvision/torchaudio from the same index if you use them")


def reinstall(name: str, raw_version: Optional[str], index_url: str) -> Action:
    """The exact reinstall of what is there: same version, same build (a +cuXYZ/+cpu torch from its PyTorch index).

    An unreadable version gets no pip command: an unpinned reinstall would pull the newest release,
    built for another torch; nor does a torch whose local label poses as a variant ('+cu121.post3'):
    there is no index of that name.
    """
    torch_family = name in VARIANT_LABELLED
    v = parse_torch_version(raw_version) if torch_family else parse_version(raw_version)
    if v is None:
        return Manual(f"reinstall {name} at the version you meant to have (its version '{raw_version}' is unreadable)")
    variant = torch_variant(v) if torch_family else None
    if torch_family and v.local and variant is None:
        return Manual(f"reinstall {name} {v} the way it was built (a local build '+{v.local}' is on no package index)")
    return PipInstall((f"{name}=={v}",), description=f"reinstall {name} {v} in place",
                      index_url=f"{index_url}/{variant}" if variant else None,  # local builds live only on the PyTorch index
                      force_reinstall=True, force_reinstall_why="the installed files are damaged; the version stays",
                      no_deps=True)


# -- xformers ---------------------------------------------------------------------------------------------


def xformers_install(matrix: Matrix, tv: Version, installed: Optional[str] = None, cuda: Optional[str] = "") -> Optional[PipInstall]:
    """The xformers built for this torch release and CUDA variant, or None when the matrix knows none.

    `cuda` is torch's CUDA ("12.6"), None for a CPU build, "" when unknown. Wheels for a CUDA other than the
    one the default index's wheel is built with come from the PyTorch index of that variant (it hosts
    xformers per variant).
    """
    # the smallest change first: the installed release, when it is the one built for this torch (a rebuild
    # from torch's CUDA family index), else the newest built for it
    pick = _built_for_this_torch(matrix, tv, installed) or xformers_built_for(matrix, tv)
    if not pick or cuda is None:
        return None
    index_url = None
    if cuda:
        tag = lookup.cuda_tag(cuda)
        # the default index's wheel is built for one CUDA (recorded from its cpp_lib.json; 0.0.28.post3: 12.1,
        # while torch 2.5.1 there is 12.4): any other CUDA takes the build of that family's PyTorch index
        wheel_cuda = lookup.xformers_wheel_cuda(matrix, pick) or matrix.torch_default_cuda.get(minor_of(tv))
        if wheel_cuda != cuda:
            index_url = f"{matrix.torch_index_url}/{tag}"
    return PipInstall(
        (f"xformers=={pick}",),
        description=f"xformers {pick} is built for torch {release_of(tv)}" + (f" / CUDA {cuda}" if cuda else ""),
        index_url=index_url,
        no_deps=True, no_deps_why="xformers pins torch exactly; letting pip resolve would replace the torch you have",
        force_reinstall=pick == installed,
        force_reinstall_why="same version, other build: pip would call it satisfied" if pick == installed else "",
    )


def xformers_fix(matrix: Matrix, tv: Version, installed: Optional[str] = None, cuda: Optional[str] = "") -> List[Action]:
    """Install the xformers built for this torch release and CUDA variant, or drop xformers for SDPA."""
    fix: List[Action] = []
    install = xformers_install(matrix, tv, installed, cuda)
    if install is not None:
        fix.append(install)
    fix.append(drop_xformers("or remove xformers: torch SDPA covers attention for transformers and Unsloth"))
    return fix


def drop_xformers(why: str = "remove xformers; torch SDPA covers attention") -> PipUninstall:
    """Uninstall xformers: transformers and Unsloth fall back to torch SDPA."""
    return PipUninstall(("xformers",), description=why)


def _built_for_this_torch(matrix: Matrix, tv: Version, installed: Optional[str]) -> Optional[str]:
    """`installed` when the matrix pins that xformers release exactly to this torch release and no known issue hits it."""
    v = parse_version(installed)
    row = lookup.torch_requirement_of_xformers(matrix, v) if v is not None else None
    if v is None or row is None:
        return None
    specs = list(row.spec)
    rel = release_of(tv)
    if not (len(specs) == 1 and specs[0].operator == "==" and row.spec.contains(rel, prereleases=True)):
        return None
    if _known_bad(matrix, v, rel):
        return None
    return str(v)


def _known_bad(matrix: Matrix, xv: Version, rel: Version) -> bool:
    """Whether a known issue of the matrix hits this xformers release on this torch release."""
    return any(i.package == "xformers" and i.affected.contains(xv, prereleases=True)
               and all(s.contains(rel, prereleases=True) for o, s in i.requires.items() if o == "torch")
               for i in matrix.known_issues)


def xformers_built_for(matrix: Matrix, tv: Version) -> Optional[str]:
    """Newest xformers pinned exactly (==) to this torch release and free of known issues; else the known-good pair."""
    rel = release_of(tv)
    exact = []
    for row in matrix.xformers_torch:
        specs = list(row.spec)
        if len(specs) == 1 and specs[0].operator == "==" and row.spec.contains(rel, prereleases=True):
            exact.append(Version(row.version))
    for cand in sorted(exact, reverse=True):
        if not _known_bad(matrix, cand, rel):
            return str(cand)
    pair = matrix.torch_xformers_pairs.get(str(rel)) or matrix.torch_xformers_pairs.get(minor_of(tv))
    return pair or None


# -- flash-attn -------------------------------------------------------------------------------------------


def drop_flash_attn(why: str = "remove flash-attn and use attn_implementation='sdpa'") -> PipUninstall:
    """Uninstall flash-attn: transformers' SDPA attention needs nothing extra."""
    return PipUninstall(("flash-attn",), description=why)


def rebuild_flash_attn(why: str = "rebuild flash-attn against the installed torch") -> Manual:
    """A source build of flash-attn: slow and needs the CUDA toolkit, so it is a step for a person."""
    return Manual(f"{why}: pip install flash-attn --no-build-isolation (needs nvcc; can take an hour), "
                  "or install a release wheel built for this torch/CUDA")


# -- unsloth ----------------------------------------------------------------------------------------------


def unsloth_zoo_pin(spec: str) -> PipInstall:
    """unsloth_zoo at the floor unsloth names ('>=2025.3.11' -> ==2025.3.11): the zoo released with that
    unsloth; the newest zoo may already expect a newer unsloth."""
    try:
        floors = [s.version for s in SpecifierSet(spec) if s.operator == ">="]
    except InvalidSpecifier:
        floors = []
    req = f"unsloth_zoo=={floors[0]}" if len(floors) == 1 else f"unsloth_zoo{spec}"
    return PipInstall((req,), description="the unsloth_zoo release unsloth names as its floor (released with it)",
                      no_deps=True)


# -- bitsandbytes -----------------------------------------------------------------------------------------


def bitsandbytes_fix(matrix: Matrix, facts: Facts, tv: Version) -> List[Action]:
    """The newest bitsandbytes range (matrix) whose torch and Python requirements this environment meets."""
    py = parse_version(facts.python.version) or parse_version(".".join(map(str, sys.version_info[:3])))
    fits = [r for r in matrix.bitsandbytes_torch
            if r.spec.contains(tv, prereleases=True) and (r.python is None or py is None or r.python.contains(py, prereleases=True))]
    fix: List[Action] = []
    if fits:
        best = max(fits, key=lambda r: max((Version(s.version) for s in r.versions if parse_version(s.version)), default=Version("0")))
        fix.append(PipInstall((f"bitsandbytes{best.versions}",), description=f"releases {best.versions} support torch{best.spec} ({best.source})",
                              no_deps=True, no_deps_why="bitsandbytes requires torch; pip must not replace the torch you have"))
    else:
        fix.append(Manual(f"no bitsandbytes release in the matrix supports torch {tv}: upgrade torch or remove bitsandbytes"))
    fix.append(PipUninstall(("bitsandbytes",), description="or remove it if you do not quantize"))
    return fix


def bitsandbytes_release_for(matrix: Matrix, facts: Facts, tv: Version, cuda: str, ccs: Sequence[CC] = ()) -> Optional[Tuple[str, str]]:
    """(release, the library it loads) of the newest bitsandbytes release whose wheel has a library for torch's CUDA
    that bitsandbytes' loader picks, with kernels for every GPU in `ccs`, and whose torch/Python requirements hold."""
    py = parse_version(facts.python.version)
    highest = max(ccs) if ccs else None
    versions = sorted({Version(v) for w in matrix.bitsandbytes_wheels for v in w.versions}, reverse=True)
    for v in versions:
        loader = lookup.bnb_loader(matrix, v)
        libs = lookup.bitsandbytes_libs(matrix, v)
        if loader is None or libs is None:
            continue
        pick = lookup.bnb_pick(libs.libraries, cuda, loader, highest)
        if pick is None or not _bnb_requirements_hold(lookup.bnb_requirement(matrix, v), tv, py):
            continue
        archs = lookup.bnb_archs(matrix, v, pick.cuda)
        if archs is not None and not all(lookup.arch_verdict(archs.archs, archs.ptx, cc)[0] != "none" for cc in ccs):
            continue
        return str(v), pick.library
    return None


def _bnb_requirements_hold(row: Optional[RangeRequirement], tv: Version, py: Optional[Version]) -> bool:
    """Whether a bitsandbytes release's torch and Python requirements admit this environment (unknown: yes)."""
    if row is None:
        return True  # before 0.45.1 the matrix has no row: the wheels declared no torch requirement
    if not row.spec.contains(release_of(tv), prereleases=True):
        return False
    return row.python is None or py is None or row.python.contains(py, prereleases=True)


def bitsandbytes_library_fix(matrix: Matrix, facts: Facts, tv: Version, cuda: str, ccs: Sequence[CC] = ()) -> List[Action]:
    """Install the bitsandbytes release that ships a library for torch's CUDA (and these GPUs), or remove it."""
    found = bitsandbytes_release_for(matrix, facts, tv, cuda, ccs)
    fix: List[Action] = []
    if found:
        version, library = found
        fix.append(PipInstall((f"bitsandbytes=={version}",),
                              description=f"bitsandbytes {version} ships {library} for torch's CUDA {cuda}",
                              no_deps=True, no_deps_why="bitsandbytes requires torch; pip must not replace the torch you have"))
    else:
        fix.append(Manual(f"no bitsandbytes release in the matrix ships a library for CUDA {cuda} that runs here: "
                          "change torch's CUDA build or remove bitsandbytes"))
    fix.append(PipUninstall(("bitsandbytes",), description="or remove it if you do not quantize"))
    return fix
