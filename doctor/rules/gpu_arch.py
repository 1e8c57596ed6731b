"""Each GPU's compute capability vs the archs compiled into torch; bf16 support."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from packaging.version import Version

from doctor.actions import Manual, PipInstall
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import GPU, Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import torch_build_action
from doctor.rules._common import cc_of, fmt_cc, gpu_label, minor, release, torch_cuda, torch_version, version

CAT = Category.GPU
CC = Tuple[int, int]


def cubin_serves(archs: Sequence[CC], cc: CC) -> Optional[CC]:
    """The compiled arch that runs on `cc`: same major, minor <= the GPU's (sm_86 cubin runs on sm_89)."""
    fits = [a for a in archs if a[0] == cc[0] and a[1] <= cc[1]]
    return max(fits) if fits else None


def ptx_serves(ptx: Sequence[CC], cc: CC) -> Optional[CC]:
    """The PTX arch the driver can JIT for `cc` (any PTX at or below it)."""
    fits = [a for a in ptx if a <= cc]
    return max(fits) if fits else None


def arch_verdict(archs: Sequence[CC], ptx: Sequence[CC], cc: CC) -> Tuple[str, Optional[CC]]:
    """('cubin' | 'ptx' | 'none', arch used) for a GPU against one build's arch list."""
    hit = cubin_serves(archs, cc)
    if hit:
        return "cubin", hit
    hit = ptx_serves(ptx, cc)
    if hit:
        return "ptx", hit
    return "none", None


def _fmt_archs(archs: Sequence[CC], ptx: Sequence[CC]) -> str:
    """'7.5 8.0 9.0 12.0+PTX'."""
    return " ".join(fmt_cc(a) + ("+PTX" if a in ptx else "") for a in sorted(set(archs) | set(ptx)))


def check_gpu_arch(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Is each GPU's architecture compiled into the installed torch build?"""
    out: List[Finding] = []
    tv = torch_version(facts)
    cuda, _known = torch_cuda(facts)
    if not facts.hardware.gpus or facts.torch is None or tv is None or not cuda:
        return out
    try:
        tag = lookup.cuda_tag(cuda)
    except ValueError:  # a garbage CUDA string in version.py: nothing to compare against
        return out
    aset = lookup.archs_for(matrix, tv, tag)
    for gpu in facts.hardware.gpus:
        cc = cc_of(gpu, matrix)
        ev = {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "torch": str(tv), "build": tag}
        if cc is None:
            out.append(finding("gpu.cc-unknown", Severity.INFO, CAT, f"Compute capability of {gpu_label(gpu)} is unknown", ev,
                               "Neither the driver nor the GPU name table gave it; arch checks were skipped.", subject=str(gpu.index)))
            continue
        if aset is None:
            out.append(finding("gpu.arch-unknown", Severity.INFO, CAT, f"No arch list known for torch {release(tv)} {tag}", ev,
                               "torch.cuda.get_arch_list() on this machine is the truth; the matrix has no row for this build.",
                               subject=str(gpu.index)))
            continue
        ev["archs in build"] = _fmt_archs(aset.archs, aset.ptx)
        kind, hit = arch_verdict(aset.archs, aset.ptx, cc)
        if kind == "cubin" and hit is not None:
            out.append(finding("gpu.arch", Severity.OK, CAT, f"{gpu_label(gpu)} sm_{cc[0]}{cc[1]} is compiled into torch (sm_{hit[0]}{hit[1]})",
                               ev, subject=str(gpu.index)))
        elif kind == "ptx" and hit is not None:
            out.append(finding(
                "gpu.arch-ptx-jit", Severity.WARN, CAT,
                f"{gpu_label(gpu)} sm_{cc[0]}{cc[1]} runs torch only through PTX JIT (from sm_{hit[0]}{hit[1]})", ev,
                "No compiled kernels for this architecture: the driver JIT-compiles PTX at first use (slow start, and it "
                "fails if the driver only has minor-version compatibility with this CUDA).",
                [a for a in [_better_build(matrix, tv, cc, version(facts.hardware.driver_version))] if a] or [Manual("use a torch build whose arch list includes this GPU")],
                subject=str(gpu.index)))
        else:
            fix = _better_build(matrix, tv, cc, version(facts.hardware.driver_version))
            out.append(finding(
                "gpu.arch-unsupported", Severity.ERROR, CAT,
                f"{gpu_label(gpu)} sm_{cc[0]}{cc[1]} is not supported by torch {release(tv)} {tag}", ev,
                "torch will fail with 'no kernel image is available for execution on the device' (or warn that the GPU "
                "is not compatible with this PyTorch installation).",
                [fix] if fix else [Manual(f"no torch {minor(tv)} build in the matrix supports sm_{cc[0]}{cc[1]}: change torch version or GPU")],
                subject=str(gpu.index)))
        out.extend(_bf16(gpu, cc, matrix))
    return out


def _bf16(gpu: GPU, cc: CC, matrix: Matrix) -> List[Finding]:
    """No bf16 below the matrix floor (cc 8.0): a fact of the GPU, not a fault, so info with what to use.

    Nothing is wrong until a script asks for bf16; a warning would fail a healthy T4 setup.
    """
    feat = lookup.feature(matrix, "bf16")
    if lookup.feature_supported(matrix, feat.name, cc):
        return []
    return [finding(
        "gpu.no-bf16", Severity.INFO, CAT, f"{gpu_label(gpu)} (cc {fmt_cc(cc)}) has no bf16: train in fp16",
        {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "bf16 needs": f"cc >= {fmt_cc(feat.min_cc)} ({feat.source})"},
        "bf16=True fails ('Your setup doesn't support bf16/gpu') or runs emulated and slow. Use torch_dtype=torch.float16 "
        "and fp16=True (TrainingArguments), or let Unsloth pick dtype=None (it picks fp16 here).",
        [Manual("use fp16: set fp16=True, bf16=False in TrainingArguments; load the model with torch_dtype=torch.float16")],
        subject=str(gpu.index))]


def _better_build(matrix: Matrix, tv: Version, cc: CC, driver: Optional[Version] = None) -> Optional[PipInstall]:
    """A pip action for the same torch release from a CUDA variant that has cubins for `cc`, if the matrix knows one."""
    for tag in reversed(matrix.torch_cuda_variants.get(minor(tv), ())):
        aset = lookup.archs_for(matrix, tv, tag)
        if not (aset and arch_verdict(aset.archs, aset.ptx, cc)[0] == "cubin"):
            continue
        cuda = lookup.cuda_from_tag(tag)
        floor = lookup.driver_floor(matrix, cuda) if cuda else None
        if driver is not None and floor is not None and driver < floor.toolkit:
            continue  # a build this driver cannot run is no fix
        return torch_build_action(matrix.torch_index_url, tv, tag, f"torch {release(tv)} {tag} has kernels for sm_{cc[0]}{cc[1]}")
    return None
