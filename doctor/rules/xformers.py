"""xformers vs torch: the wheel's requirement, the compiled extension's build info, known bugs."""

from __future__ import annotations

from typing import List, Optional, Tuple

from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import drop_xformers, xformers_cuda_arg, xformers_fix
from doctor.rules._common import cc_of, fmt_cc, gpu_label, release, satisfies, torch_installed, torch_version, version
from doctor.rules._common import torch_cuda as torch_cuda_of
from doctor.rules.gpu_arch import arch_verdict
from doctor.rules.requirements import requirement_on

CAT = Category.KERNELS
# From 0.0.31 xformers ships one cp39-abi3 wheel: the build's Python no longer has to match (compat-facts WHEEL).
ABI3_SINCE = Version("0.0.31")


def check_xformers(facts: Facts, matrix: Matrix) -> List[Finding]:
    """xformers' metadata requirement and binary build vs the installed torch; known-bad versions."""
    dist = facts.dist("xformers")
    if dist is None:
        return []
    xv = version(dist.version)
    tv = torch_version(facts)
    out: List[Finding] = []
    ev = {"xformers": dist.version, "torch": str(tv) if tv else "not installed"}
    if xv is None:
        return [finding("xformers.bad-version", Severity.WARN, CAT, f"xformers has an unreadable version '{dist.version}'", ev)]
    if tv is None:
        if torch_installed(facts):
            return []  # torch is there but its version is unreadable: the torch_build rule says so
        return [finding("xformers.no-torch", Severity.ERROR, CAT, "xformers is installed but torch is not", ev,
                        "xformers cannot import without torch.", [drop_xformers("uninstall xformers")])]

    # 1. what pip sees: the wheel's own torch requirement (the matrix when metadata lacks it, e.g. conda)
    spec = requirement_on(dist, "torch")
    src = "xformers METADATA Requires-Dist"
    if spec is None:
        req = lookup.torch_requirement_of_xformers(matrix, dist.version)
        spec, src = (str(req.spec), f"compat matrix ({req.source})") if req else (None, "")
    if spec:
        ev_meta = {**ev, "xformers requires torch": spec, "from": src}
        if not satisfies(tv, spec):
            out.append(finding(
                "xformers.torch-mismatch", Severity.ERROR, CAT,
                f"xformers {dist.version} requires torch{spec}, torch {tv} is installed", ev_meta,
                "xformers wheels are compiled against one torch release. Importing xformers.ops gives 'xFormers can't "
                "load C++/CUDA extensions' and memory_efficient_attention fails ('No operator found'); a later pip "
                "install may also replace your torch to satisfy the pin.",
                xformers_fix(matrix, tv, dist.version, xformers_cuda_arg(facts))))
        else:
            out.append(finding("xformers.torch-metadata", Severity.OK, CAT,
                               f"xformers {dist.version} metadata accepts torch {release(tv)}", ev_meta))

    # 2. what the loader sees: the extension's build info (pip can be satisfied while this fails)
    out.extend(_binary(facts, matrix, dist.version, xv, tv))
    return out


def _binary(facts: Facts, matrix: Matrix, raw: str, xv: Version, tv: Version) -> List[Finding]:
    """Compare cpp_lib.json (torch, CUDA, Python the extension was built with) with what is installed."""
    b = facts.xformers
    if b is None:
        return []
    if b.error:
        return [finding("xformers.build-info-unreadable", Severity.INFO, CAT,
                        "xformers build info (cpp_lib.json) could not be read", {"path": b.path or "?", "error": b.error},
                        "Without it the doctor cannot tell which torch the extension was built for; the probes will.")]
    built_t = version(b.torch_version)
    built_cuda = lookup.cuda_from_int(b.cuda_version) if b.cuda_version else None
    torch_cuda, cuda_known = torch_cuda_of(facts)
    py = facts.python.version
    ev = {
        "xformers": raw,
        "built for torch": b.torch_version or "?",
        "built with CUDA": built_cuda or ("ROCm " + b.hip_version if b.hip_version else "none"),
        "built with Python": b.python_version or "?",
        "installed torch": str(tv),
        "installed torch CUDA": torch_cuda or "none (CPU build)",
        "Python": py,
        "build info": b.path or "cpp_lib.json",
    }
    problems: List[str] = []
    severity = Severity.OK
    if built_t is not None and release(built_t) != release(tv):
        problems.append(f"built for torch {release(built_t)}, torch {release(tv)} is installed")
        severity = Severity.ERROR
    if not cuda_known:
        pass  # torch's CUDA could not be read: compare releases only, never call it a CPU build
    elif built_cuda and not torch_cuda:
        problems.append(f"built with CUDA {built_cuda}, torch is a CPU build")
        severity = Severity.ERROR
    elif built_cuda and torch_cuda and built_cuda != torch_cuda:
        if built_cuda.split(".")[0] != torch_cuda.split(".")[0]:
            problems.append(f"built with CUDA {built_cuda}, torch uses CUDA {torch_cuda} (another major version)")
            severity = Severity.ERROR
        else:
            problems.append(f"built with CUDA {built_cuda}, torch uses CUDA {torch_cuda}")
            severity = max(severity, Severity.WARN)
    if b.python_version and xv < ABI3_SINCE:
        bpy = ".".join(b.python_version.split(".")[:2])
        if bpy != ".".join(py.split(".")[:2]):
            problems.append(f"built with Python {bpy}, running Python {py}")
            severity = Severity.ERROR
    out: List[Finding] = []
    if problems:
        out.append(finding(
            "xformers.binary-mismatch", severity, CAT,
            f"xformers {raw} extension was built for another stack: " + "; ".join(problems), ev,
            "Package metadata can be satisfied while the compiled extension is not: xformers then prints 'xFormers "
            "can't load C++/CUDA extensions. xFormers was built for: ...' and its attention ops raise "
            "NotImplementedError('No operator found'); xformers.info still lists ops as available.",
            xformers_fix(matrix, tv, raw, xformers_cuda_arg(facts))))
    else:
        out.append(finding("xformers.binary", Severity.OK, CAT,
                           f"xformers {raw} extension matches torch {release(tv)} / CUDA {torch_cuda}", ev))
    out.extend(_arch(facts, matrix, b.arch_list, raw))
    return out


def _arch(facts: Facts, matrix: Matrix, arch_list: Optional[str], raw: str) -> List[Finding]:
    """TORCH_CUDA_ARCH_LIST of the xformers build vs each GPU ('7.5 8.0+PTX 8.0 9.0a')."""
    if not arch_list:
        return []
    archs: List[Tuple[int, int]] = []
    ptx: List[Tuple[int, int]] = []
    for tok in arch_list.replace(";", " ").split():
        is_ptx = tok.endswith("+PTX")
        base = tok.replace("+PTX", "").rstrip("af")  # 9.0a / 10.0f: arch-specific variants of the same cc
        try:
            major, minor_ = (int(x) for x in base.split("."))
        except ValueError:
            continue
        (ptx if is_ptx else archs).append((major, minor_))
        if is_ptx:
            archs.append((major, minor_))
    out: List[Finding] = []
    for gpu in facts.hardware.gpus:
        cc = cc_of(gpu, matrix)
        if cc is None:
            continue
        kind, _ = arch_verdict(archs, ptx, cc)
        if kind == "cubin":
            continue
        out.append(finding(
            "xformers.arch", Severity.WARN if kind == "ptx" else Severity.ERROR, CAT,
            f"xformers {raw} has no kernels compiled for {gpu_label(gpu)} sm_{cc[0]}{cc[1]}"
            + (" (PTX JIT only)" if kind == "ptx" else ""),
            {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "xformers arch list": arch_list},
            "Its fused attention kernels will fall back, JIT-compile slowly, or fail with 'no kernel image'.",
            [drop_xformers()], subject=str(gpu.index)))
    return out
