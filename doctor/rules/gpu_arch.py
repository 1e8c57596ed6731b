"""Each GPU's compute capability vs the archs compiled into torch; bf16 support."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from packaging.version import Version

from doctor.actions import Action, Manual, PipInstall
from doctor.compat_matrix import lookup
from doctor.compat_matrix.lookup import arch_verdict, cubin_serves, ptx_serves  # noqa: F401  (re-exported for the rules)
from doctor.compat_matrix.model import Matrix
from doctor.facts import GPU, Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import torch_build_fix
from doctor.rules._common import cc_of, fmt_cc, gpu_label, minor, release, torch_cuda, torch_version, version

CAT = Category.GPU
CC = Tuple[int, int]


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
    ccs = [c for c in (cc_of(g, matrix) for g in facts.hardware.gpus) if c is not None]
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
                _arch_fix(matrix, tv, cc, version(facts.hardware.driver_version), ccs),
                subject=str(gpu.index)))
        else:
            out.append(finding(
                "gpu.arch-unsupported", Severity.ERROR, CAT,
                f"{gpu_label(gpu)} sm_{cc[0]}{cc[1]} is not supported by torch {release(tv)} {tag}", ev,
                "torch will fail with 'no kernel image is available for execution on the device' (or warn that the GPU "
                "is not compatible with this PyTorch installation).",
                _arch_fix(matrix, tv, cc, version(facts.hardware.driver_version), ccs),
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


def _better_build(matrix: Matrix, tv: Version, cc: CC, driver: Optional[Version] = None,
                  ccs: Sequence[CC] = ()) -> Optional[PipInstall]:
    """The exact torch build (release + CUDA variant + index) with cubins for `cc` (and the other GPUs) that the
    driver fully supports: the installed release first, else the nearest torch release that has one."""
    wanted = list(dict.fromkeys([cc, *ccs]))  # this GPU first, then the others, no repeats
    return torch_build_fix(matrix, tv, driver, wanted, need_archs=True, why=f"it has kernels for sm_{cc[0]}{cc[1]}")


def _arch_fix(matrix: Matrix, tv: Version, cc: CC, driver: Optional[Version], ccs: Sequence[CC]) -> List[Action]:
    """The concrete torch build to install, and the driver upgrade that would let the installed release run it."""
    fix: List[Action] = []
    build = _better_build(matrix, tv, cc, driver, ccs)
    if build is not None:
        fix.append(build)
    upgrade = _driver_upgrade_for_release(matrix, tv, cc, driver)
    if upgrade is not None:
        fix.append(upgrade)
    if not fix:
        fix.append(Manual(f"no torch build in the matrix has kernels for sm_{cc[0]}{cc[1]} and runs on this driver: "
                          "change the GPU, or upgrade the driver and torch"))
    return fix


def _driver_upgrade_for_release(matrix: Matrix, tv: Version, cc: CC, driver: Optional[Version]) -> Optional[Manual]:
    """When a CUDA variant of the installed release has the arch but needs a newer driver: that driver floor."""
    if driver is None:
        return None
    for tag in reversed(matrix.torch_cuda_variants.get(minor(tv), ())):
        aset = lookup.archs_for(matrix, tv, tag)
        cuda = lookup.cuda_from_tag(tag)
        floor = lookup.driver_floor(matrix, cuda) if cuda else None
        if aset and floor and driver < floor.toolkit and arch_verdict(aset.archs, aset.ptx, cc)[0] == "cubin":
            return Manual(f"or upgrade the NVIDIA driver to >= {floor.toolkit_text or floor.toolkit} and install "
                          f"torch=={release(tv)}+{tag} from {matrix.torch_index_url}/{tag} (it has kernels for sm_{cc[0]}{cc[1]})")
    return None
