"""bitsandbytes vs torch and the GPU: its torch requirement, the native library it loads, that library's archs.

bitsandbytes loads ONE native library at import, picked by torch's CUDA version
(libbitsandbytes_cuda121.so for CUDA 12.1; from 0.50 the nearest of the same CUDA major when that
exact one is missing). A release that ships none for torch's CUDA (0.41.x ships up to 12.2) falls back
to its CPU library, and every GPU op fails ('CUDA Setup failed', 'compiled without GPU support'). The
library list comes from the installed files (Facts.bitsandbytes) and, when they were not read (a
planned upgrade's would-be Facts), from the matrix by version; the archs of each index wheel's
libraries come from the matrix. BNB_CUDA_VERSION=XY replaces the pick by libbitsandbytes_cudaXY.so (bitsandbytes
substitutes it into the file name; meant for a CUDA runtime installed beside torch's).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from packaging.version import Version

from doctor import envvars
from doctor.actions import Manual
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import BnbArchs, Matrix
from doctor.facts import BitsandbytesBuild, Distribution, Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import bitsandbytes_fix, bitsandbytes_library_fix
from doctor.rules._common import cc_of, fmt_cc, gpu_label, satisfies, torch_cuda, torch_version, version
from doctor.rules.requirements import requirement_on

CAT = Category.KERNELS
CC = Tuple[int, int]


def check_bitsandbytes(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Torch requirement of the installed bitsandbytes, the library it loads for torch's CUDA, what the GPU runs of it."""
    dist = facts.dist("bitsandbytes")
    if dist is None:
        return []
    bv = version(dist.version)
    tv = torch_version(facts)
    out: List[Finding] = []
    if bv is None:
        return [finding("bitsandbytes.bad-version", Severity.WARN, CAT, f"bitsandbytes has an unreadable version '{dist.version}'")]
    spec = requirement_on(dist, "torch")
    src = "bitsandbytes METADATA Requires-Dist"
    if spec is None:
        row = lookup.bnb_requirement(matrix, dist.version)
        spec, src = (str(row.spec), f"compat matrix ({row.source})") if row else (None, "")
    if spec and tv is not None:
        ev = {"bitsandbytes": dist.version, "torch": str(tv), "requires torch": spec, "from": src}
        if not satisfies(tv, spec):
            out.append(finding(
                "bitsandbytes.torch-mismatch", Severity.ERROR, CAT,
                f"bitsandbytes {dist.version} requires torch{spec}, torch {tv} is installed", ev,
                "Its CUDA library is loaded through torch; an unsupported torch fails at import or at the first 4-bit "
                "layer ('CUDA Setup failed', missing symbols).",
                bitsandbytes_fix(matrix, facts, tv)))
        else:
            out.append(finding("bitsandbytes.torch", Severity.OK, CAT, f"bitsandbytes {dist.version} supports torch {tv}", ev))
    archs: Optional[BnbArchs] = None
    lib_cuda: Optional[str] = None
    if tv is not None:
        lib_findings, archs, lib_cuda = _library(facts, matrix, dist, tv)
        out.extend(lib_findings)
    out.extend(_gpus(facts, matrix, dist, tv, archs, lib_cuda))
    return out


def _libraries(facts: Facts, matrix: Matrix, dist: Distribution) -> Tuple[Optional[BitsandbytesBuild], str, bool]:
    """(the library list, where it came from, whether it is the index wheel's) : the installed files first."""
    wheel = lookup.bitsandbytes_libs(matrix, dist.version)
    b = facts.bitsandbytes
    if b is not None and b.error is None and b.path is not None:
        is_wheel = wheel is not None and sorted(wheel.libraries) == sorted(b.libraries)
        return b, f"installed files ({b.path})", is_wheel
    if wheel is not None:
        why = f"; the installed files could not be listed: {b.error}" if b is not None and b.error else ""
        return wheel, f"{wheel.source}, the release's Linux x86_64 wheel{why}", True
    return None, "", False


def _library(facts: Facts, matrix: Matrix, dist: Distribution, tv: Version) -> Tuple[List[Finding], Optional[BnbArchs], Optional[str]]:
    """Which native library bitsandbytes loads for torch's CUDA: (findings, its arch row, its CUDA)."""
    cuda, known = torch_cuda(facts)
    if not cuda or not known or (facts.torch is not None and facts.torch.hip):
        return [], None, None  # a CPU, ROCm or unreadable torch build: no CUDA library to pick
    loader = lookup.bnb_loader(matrix, dist.version)
    libs, src, is_wheel = _libraries(facts, matrix, dist)
    ev = {"bitsandbytes": dist.version, "torch": str(tv), "torch CUDA": cuda}
    if loader is None or libs is None:
        reason = ("releases before 0.41 pick their library by the system's libcudart, not torch's CUDA" if loader is None
                  else "the matrix does not know which libraries this release ships, and the installed files were not read")
        return [finding("bitsandbytes.library-unknown", Severity.INFO, CAT,
                        f"Which CUDA library bitsandbytes {dist.version} loads is not known", ev,
                        reason[0].upper() + reason[1:] + ". The GPU probes tell whether it loads.")], None, None
    ccs = _ccs(facts, matrix)
    pick = lookup.bnb_pick(libs.libraries, cuda, loader, max(ccs) if ccs else None)
    shipped = sorted({c for c in (lookup.bnb_library_cuda(n) for n in libs.libraries) if c is not None})
    ev.update({
        "CUDA libraries shipped": ", ".join(f"{m}.{n}" + (" (no cuBLASLt)" if lt else "") for (m, n), lt in shipped) or "none",
        "from": src,
        "loader": f"{loader.picks} ({loader.source})",
    })
    if envvars.BNB_CUDA_VERSION in facts.env:
        return _override(facts, matrix, dist, libs.libraries, is_wheel, cuda, ev)
    if pick is None:
        return [finding(
            "bitsandbytes.no-cuda-library", Severity.ERROR, CAT,
            f"bitsandbytes {dist.version} ships no library for torch's CUDA {cuda}", ev,
            f"bitsandbytes loads libbitsandbytes_cuda<torch's CUDA>.so ({'or the nearest of the same CUDA major' if loader.picks == 'same-major' else 'exactly that file'}); "
            "with none it falls back to its CPU library and every 4-bit/8-bit GPU op fails ('CUDA Setup failed', "
            "'The installed version of bitsandbytes was compiled without GPU support').",
            bitsandbytes_library_fix(matrix, facts, tv, cuda, ccs))], None, None
    ev["loads"] = pick.library
    archs = lookup.bnb_archs(matrix, dist.version, pick.cuda) if is_wheel else None
    if pick.exact:
        return [finding("bitsandbytes.cuda-library", Severity.OK, CAT,
                        f"bitsandbytes {dist.version} loads {pick.library} for torch's CUDA {cuda}", ev)], archs, pick.cuda
    return [finding("bitsandbytes.cuda-library", Severity.INFO, CAT,
                    f"bitsandbytes {dist.version} loads {pick.library} (CUDA {pick.cuda}) for torch's CUDA {cuda}", ev,
                    "No library for exactly this CUDA: from 0.50 bitsandbytes loads the nearest one of the same CUDA "
                    "major (and logs 'No prebuilt binary for CUDA ...'), which the CUDA runtime's minor-version "
                    "compatibility runs.")], archs, pick.cuda


def _override(facts: Facts, matrix: Matrix, dist: Distribution, libraries: Tuple[str, ...], is_wheel: bool, cuda: str,
              ev: dict) -> Tuple[List[Finding], Optional[BnbArchs], Optional[str]]:
    """BNB_CUDA_VERSION=XY is set: bitsandbytes loads libbitsandbytes_cudaXY.so, whatever torch's CUDA is."""
    raw = facts.env[envvars.BNB_CUDA_VERSION]
    value = raw.strip()
    name = f"libbitsandbytes_cuda{value}.so"
    parsed = lookup.bnb_library_cuda(name) if value.isdigit() and len(value) >= 3 else None
    ev = {**ev, envvars.BNB_CUDA_VERSION: raw}
    unset = Manual(f"unset {envvars.BNB_CUDA_VERSION} (bitsandbytes then loads the library for torch's CUDA {cuda})")
    if parsed is None:
        return [finding("bitsandbytes.cuda-override", Severity.ERROR, CAT,
                        f"{envvars.BNB_CUDA_VERSION}={raw!r} is not a CUDA version as bitsandbytes reads it (like 121 for 12.1)", ev,
                        "bitsandbytes puts the value into the library's file name; no file has this name, so it loads "
                        "its CPU library and every 4-bit/8-bit GPU op fails.", [unset])], None, None
    (major, minor), _ = parsed
    lib_cuda = f"{major}.{minor}"
    ev["loads"] = name
    if name not in libraries:
        return [finding("bitsandbytes.cuda-override", Severity.ERROR, CAT,
                        f"{envvars.BNB_CUDA_VERSION}={value} asks bitsandbytes {dist.version} for {name}, which it does not ship", ev,
                        "bitsandbytes loads only the library the override names; it is missing, so bitsandbytes falls back "
                        "to its CPU library and every 4-bit/8-bit GPU op fails.", [unset])], None, None
    archs = lookup.bnb_archs(matrix, dist.version, lib_cuda) if is_wheel else None
    if lib_cuda == cuda:
        return [finding("bitsandbytes.cuda-override", Severity.INFO, CAT,
                        f"{envvars.BNB_CUDA_VERSION}={value} names the library for torch's own CUDA {cuda} ({name})", ev,
                        "The override changes nothing here; it can go.")], archs, lib_cuda
    return [finding("bitsandbytes.cuda-override", Severity.WARN, CAT,
                    f"{envvars.BNB_CUDA_VERSION}={value}: bitsandbytes {dist.version} loads {name} (CUDA {lib_cuda}), not the "
                    f"library for torch's CUDA {cuda}", ev,
                    "The override is for a CUDA runtime installed beside torch's: that runtime's libraries must be on "
                    "LD_LIBRARY_PATH and the driver must support it, or the import fails ('CUDA Setup failed'). Left over "
                    "from another setup, it is the usual cause of bitsandbytes errors after torch was upgraded.",
                    [unset])], archs, lib_cuda


def _gpus(facts: Facts, matrix: Matrix, dist: Distribution, tv: Optional[Version], archs: Optional[BnbArchs],
          lib_cuda: Optional[str]) -> List[Finding]:
    """Per GPU: the loaded library's archs when known (index wheels), else the matrix's cc floor; LLM.int8()."""
    out: List[Finding] = []
    base, int8 = lookup.feature(matrix, "bitsandbytes"), lookup.feature(matrix, "bitsandbytes_int8")
    ccs = _ccs(facts, matrix)
    for gpu in facts.hardware.gpus:
        cc = cc_of(gpu, matrix)
        if cc is None:
            continue
        ev = {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "bitsandbytes": dist.version}
        if archs is not None:
            kind, hit = lookup.arch_verdict(archs.archs, archs.ptx, cc)
            ev["library archs"] = " ".join(fmt_cc(a) + ("+PTX" if a in archs.ptx else "") for a in archs.archs) + f" ({archs.source})"
            if kind == "none":
                fix = (bitsandbytes_library_fix(matrix, facts, tv, lib_cuda, ccs) if tv is not None and lib_cuda
                       else [Manual("train without quantization on this GPU")])
                out.append(finding(
                    "bitsandbytes.arch", Severity.ERROR, CAT,
                    f"bitsandbytes {dist.version}'s CUDA {lib_cuda} library has no kernels for {gpu_label(gpu)} sm_{cc[0]}{cc[1]}",
                    ev, "The library loads, but its kernels fail on this GPU ('no kernel image is available for execution "
                    "on the device').", fix, subject=str(gpu.index)))
                continue
            if kind == "ptx" and hit is not None:
                out.append(finding(
                    "bitsandbytes.arch-ptx-jit", Severity.WARN, CAT,
                    f"bitsandbytes {dist.version} runs on {gpu_label(gpu)} sm_{cc[0]}{cc[1]} only through PTX JIT (from sm_{hit[0]}{hit[1]})",
                    ev, "No compiled kernels for this architecture: the driver JIT-compiles PTX at first use (slow start; it "
                    "fails if the driver only has minor-version compatibility with this CUDA).", subject=str(gpu.index)))
        elif not lookup.feature_supported(matrix, base.name, cc):
            out.append(finding("bitsandbytes.arch", Severity.ERROR, CAT,
                               f"bitsandbytes has no kernels for {gpu_label(gpu)} (cc {fmt_cc(cc)} < {fmt_cc(base.min_cc)})",
                               {**ev, "needs": f"cc >= {fmt_cc(base.min_cc)} ({base.note}; {base.source})"},
                               f"Index wheels of bitsandbytes 0.48+ are built for cc >= {fmt_cc(base.min_cc)}.",
                               [Manual(f"use a GPU with cc >= {fmt_cc(base.min_cc)} or train without quantization")],
                               subject=str(gpu.index)))
            continue
        if not lookup.feature_supported(matrix, int8.name, cc):
            out.append(finding("bitsandbytes.no-int8", Severity.INFO, CAT,
                               f"{gpu_label(gpu)} (cc {fmt_cc(cc)}): LLM.int8() needs cc >= {fmt_cc(int8.min_cc)}; "
                               "NF4/FP4 and 8-bit optimizers work",
                               {**ev, "LLM.int8() needs": f"cc >= {fmt_cc(int8.min_cc)} ({int8.source})"},
                               subject=str(gpu.index)))
    return out


def _ccs(facts: Facts, matrix: Matrix) -> List[CC]:
    """Compute capabilities of the GPUs, where known."""
    return [cc for cc in (cc_of(g, matrix) for g in facts.hardware.gpus) if cc is not None]
