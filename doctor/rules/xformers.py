"""xformers vs torch: the wheel's requirement, the compiled extension's build info, known bugs.

What the binary tolerates (facts from metadata, verdicts from execution):
- another torch minor, another CUDA major, a CPU torch: the extension cannot load (error); except a
  stable-ABI release (0.0.34+, built for torch >= 2.10) on a LATER torch of the same CUDA major, which
  upstream says loads (warning: the GPU probe decides);
- the same torch minor but another patch (built for 2.3.0, torch 2.3.1), or another CUDA minor of the
  same major: it may load (warning: the GPU probe decides), or is a known-good pair the matrix records
  with its evidence (info).
xformers <= 0.0.34 pins torch exactly, so another patch also breaks its Requires-Dist: that counts as
satisfied only for a recorded known-good pair (pip check still lists it; the finding says why that is fine).
The requirements rule leaves xformers -> torch to this rule (requirements.COVERED).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import drop_xformers, xformers_cuda_arg, xformers_fix
from doctor.rules._common import cc_of, fmt_cc, gpu_label, minor, release, satisfies, torch_installed, torch_version, version
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
        exception = None if satisfies(tv, spec) else lookup.xformers_exception(matrix, dist.version, tv)
        if satisfies(tv, spec):
            out.append(finding("xformers.torch-metadata", Severity.OK, CAT,
                               f"xformers {dist.version} metadata accepts torch {release(tv)}", ev_meta))
        elif exception is not None:
            out.append(finding(
                "xformers.torch-exception", Severity.INFO, CAT,
                f"xformers {dist.version} requires torch{spec}; torch {release(tv)} is a recorded known-good exception",
                {**ev_meta, "known good": f"{exception.evidence} ({exception.source})",
                 **({"reports": f"{', '.join(exception.reports)} ({exception.reports_source})"} if exception.reports else {})},
                "pip check lists this requirement as broken (the wheel pins torch exactly), but this binary is known "
                "to run on this torch patch release; install or reinstall it with --no-deps so pip keeps your torch. "
                + (exception.note + ". " if exception.note else "") + "The GPU probe (doctor probe) confirms it on this machine."))
        else:
            out.append(finding(
                "xformers.torch-mismatch", Severity.ERROR, CAT,
                f"xformers {dist.version} requires torch{spec}, torch {tv} is installed", ev_meta,
                "xformers wheels are compiled against one torch release. Importing xformers.ops gives 'xFormers can't "
                "load C++/CUDA extensions' and memory_efficient_attention fails ('No operator found'); a later pip "
                "install may also replace your torch to satisfy the pin.",
                xformers_fix(matrix, tv, dist.version, xformers_cuda_arg(facts))))

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
    known_good = ""  # the recorded exception that makes a patch mismatch info, not a warning
    same_major = built_cuda is None or not torch_cuda or built_cuda.split(".")[0] == torch_cuda.split(".")[0]
    if built_t is not None and release(built_t) != release(tv):
        severity, text, known_good = _torch_release_verdict(matrix, raw, built_t, tv, same_major)
        problems.append(text)
    if not cuda_known:
        pass  # torch's CUDA could not be read: compare releases only, never call it a CPU build
    elif built_cuda and not torch_cuda:
        problems.append(f"built with CUDA {built_cuda}, torch is a CPU build")
        severity = Severity.ERROR
    elif built_cuda and torch_cuda and built_cuda != torch_cuda:
        if not same_major:
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
    if problems and severity is Severity.INFO:  # only the recorded known-good patch mismatch
        return [finding(
            "xformers.binary", Severity.INFO, CAT,
            f"xformers {raw} extension built for torch {release(built_t) if built_t else '?'} runs on torch {release(tv)} "
            "(recorded known-good)", {**ev, "known good": known_good},
            "The extension was built for another patch release of this torch minor; the matrix records this pair as "
            "known to work. The GPU probe (doctor probe) confirms it on this machine.")] + _arch(facts, matrix, b.arch_list, raw)
    out: List[Finding] = []
    if problems:
        out.append(finding(
            "xformers.binary-mismatch", severity, CAT,
            f"xformers {raw} extension was built for another stack: " + "; ".join(problems), ev,
            ("Package metadata can be satisfied while the compiled extension is not: xformers then prints 'xFormers "
             "can't load C++/CUDA extensions. xFormers was built for: ...' and its attention ops raise "
             "NotImplementedError('No operator found'); xformers.info still lists ops as available."
             + ("" if severity is Severity.ERROR else
                " This difference may still load: the GPU probe (doctor probe) decides, by running the kernels.")),
            xformers_fix(matrix, tv, raw, xformers_cuda_arg(facts))))
    else:
        out.append(finding("xformers.binary", Severity.OK, CAT,
                           f"xformers {raw} extension matches torch {release(tv)} / CUDA {torch_cuda}", ev))
    out.extend(_arch(facts, matrix, b.arch_list, raw))
    return out


def _torch_release_verdict(matrix: Matrix, raw: str, built: Version, tv: Version, same_cuda_major: bool) -> Tuple[Severity, str, str]:
    """(severity, problem text, known-good evidence) for an extension built for another torch release than `tv`."""
    text = f"built for torch {release(built)}, torch {release(tv)} is installed"
    if minor(built) == minor(tv):
        exception = lookup.xformers_exception(matrix, raw, tv)
        if exception is not None:
            return Severity.INFO, text + " (recorded known-good)", f"{exception.evidence} ({exception.source})"
        return Severity.WARN, text + " (same minor: it may load; the GPU probe decides)", ""
    abi = lookup.xformers_stable_abi(matrix, raw, built) if release(tv) > release(built) else None
    if abi is not None and same_cuda_major:
        return Severity.WARN, text + f" (stable ABI: later torch releases load it, {abi.source}; the GPU probe decides)", ""
    return Severity.ERROR, text, ""


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
