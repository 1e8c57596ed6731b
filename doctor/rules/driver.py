"""Driver vs torch's CUDA build: full support, minor-version compatibility only, too old; CPU torch on a GPU box."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from packaging.version import Version

from doctor.actions import Action, Manual, PipInstall
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import torch_build_action, torch_build_candidates, torch_build_fix, torch_releases_by_minor
from doctor.rules._common import cc_of, release, torch_cuda, torch_installed, torch_version, version

CAT = Category.GPU


def torch_install_for(matrix: Matrix, torch_v: Version, driver: Optional[Version], ccs: Sequence[Tuple[int, int]] = (),
                      same_release: bool = False) -> Optional[PipInstall]:
    """The exact torch build this driver fully supports and that has kernels for these GPUs: the installed
    release from its newest CUDA variant the driver runs, else the nearest other torch release that has one."""
    return torch_build_fix(matrix, torch_v, driver, ccs, same_release=same_release)


def check_gpus(facts: Facts, matrix: Matrix) -> List[Finding]:
    """What the machine has: one line per GPU (the report's GPU section always says what was seen)."""
    hw = facts.hardware
    out = []
    for g in hw.gpus:
        mem = f", {g.memory_mib / 1024:.0f} GiB" if g.memory_mib else ""
        out.append(finding("gpu.present", Severity.OK, CAT, f"GPU {g.index}: {g.name} (cc {g.cc}{mem})",
                           {"driver": hw.driver_version or "unknown", "detected by": hw.source, "uuid": g.uuid or ""},
                           subject=str(g.index)))
    if not hw.gpus and (facts.torch is None or not torch_cuda(facts)[0]):
        out.append(finding("gpu.none", Severity.INFO, CAT, "No NVIDIA GPU found",
                           {"detected by": hw.source, "notes": "; ".join(hw.notes)}))
    return out


def check_driver(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Compare the NVIDIA driver with the CUDA version torch was built for."""
    hw = facts.hardware
    tv = torch_version(facts)
    driver = version(hw.driver_version)
    ev_hw = {
        "driver": hw.driver_version or "not found",
        "GPUs": ", ".join(g.name for g in hw.gpus) or "none",
        "detected by": hw.source,
    }
    if facts.torch is None or tv is None:
        if torch_installed(facts):
            return []  # torch is there but unreadable: the torch_build rule says what was read and where
        if hw.gpus:
            return [finding("torch.missing", Severity.INFO, Category.TORCH, "torch is not installed", ev_hw,
                            "Nothing to compare the driver with yet; install torch built for a CUDA this driver supports.",
                            [a for a in [_fresh_torch_hint(matrix, driver, _ccs(facts, matrix))] if a])]
        return []
    cuda, known = torch_cuda(facts)
    ev = {"torch": str(tv), "torch CUDA": cuda or ("ROCm " + facts.torch.hip if facts.torch.hip else "none (CPU build)"), **ev_hw}
    if not known:
        return [finding("torch.cuda-unknown", Severity.WARN, CAT, "torch's CUDA build could not be read", ev,
                        "torch/version.py is not plain literals and the version has no +cuXYZ label: the driver check "
                        "cannot run. The probes (doctor probe) still tell whether CUDA works.")]
    if facts.torch.hip:
        return [finding("torch.rocm", Severity.INFO, CAT, "ROCm build of torch: NVIDIA driver checks do not apply", ev)]
    if not cuda:
        if hw.gpus:
            build = torch_install_for(matrix, tv, driver, _ccs(facts, matrix))
            return [finding(
                "torch.cpu-build-on-gpu", Severity.ERROR, CAT,
                "CPU-only torch on a machine with an NVIDIA GPU", ev,
                "This torch build has no CUDA support, so training runs on the CPU (torch.cuda.is_available() is False). "
                "pip picked the CPU wheel, or another package's requirement replaced the CUDA build.",
                [build] if build else [Manual("install a CUDA build of torch that this driver supports")],
            )]
        return []  # CPU torch, no GPU: check_gpus already said so
    if not hw.gpus and driver is None:
        return [finding(
            "gpu.none", Severity.WARN, CAT, f"CUDA build of torch ({cuda}) but no NVIDIA GPU or driver found", ev,
            "Training would run on the CPU. On Colab/Kaggle, switch the runtime to a GPU; in a container, pass the GPU "
            "through (--gpus all) so the driver is visible.",
            [Manual("attach a GPU (Colab: Runtime > Change runtime type > GPU; docker: --gpus all)")],
        )]
    floor = lookup.driver_floor(matrix, cuda)
    if driver is None:
        return [finding("driver.unknown", Severity.WARN, CAT, "NVIDIA driver version could not be read", ev,
                        "The GPU is present but neither NVML, /sys, /proc nor nvidia-smi reported a driver version: "
                        "the driver may not be loaded. " + "; ".join(hw.notes))]
    if floor is None:
        return [finding("driver.cuda-unknown", Severity.INFO, CAT,
                        f"No driver requirement known for CUDA {cuda}", ev,
                        f"The compatibility matrix (data {matrix.data_version}) has no entry for CUDA {cuda}.")]
    ev.update({"needs (full support)": floor.toolkit_text or str(floor.toolkit),
               "needs (minor-version compat)": floor.minor_compat_text or str(floor.minor_compat)})
    if driver >= floor.toolkit:
        return [finding("driver.cuda-support", Severity.OK, CAT,
                        f"Driver {hw.driver_version} fully supports torch's CUDA {cuda}", ev)]
    floor_text = floor.toolkit_text or str(floor.toolkit)
    fix: List[Action] = [Manual(f"or upgrade the NVIDIA driver to >= {floor_text} (CUDA {cuda} full support) and keep "
                                f"torch {tv}")]
    minor_compat_only = driver >= floor.minor_compat
    # minor-version compatibility mostly works: offer only the same release's other CUDA build, never a torch move
    alt = torch_install_for(matrix, tv, driver, _ccs(facts, matrix), same_release=minor_compat_only)
    if alt and alt.index_url != f"{matrix.torch_index_url}/{lookup.cuda_tag(cuda)}":
        fix.insert(0, alt)
    else:
        fix = [Manual(f"upgrade the NVIDIA driver to >= {floor_text} (CUDA {cuda} full support); no torch build in the "
                      "matrix runs on this driver" + ("" if minor_compat_only else " and this GPU"))]
    if minor_compat_only:
        return [finding(
            "driver.minor-compat", Severity.WARN, CAT,
            f"Driver {hw.driver_version} runs CUDA {cuda} only through minor-version compatibility", ev,
            "The CUDA runtime loads, but minor-version compatibility excludes PTX JIT: Triton kernels, torch.compile "
            "and +PTX architectures can fail with 'the provided PTX was compiled with an unsupported toolchain'.",
            fix,
        )]
    return [finding(
        "driver.too-old", Severity.ERROR, CAT,
        f"Driver {hw.driver_version} is too old for torch's CUDA {cuda}", ev,
        "torch.cuda.is_available() will be False or CUDA initialisation fails ('The NVIDIA driver on your system is too "
        "old'). Install a torch built for an older CUDA, or upgrade the driver.",
        fix,
    )]


def _fresh_torch_hint(matrix: Matrix, driver: Optional[Version], ccs: Sequence[Tuple[int, int]] = ()) -> Optional[Action]:
    """The newest torch build (exact release + CUDA variant) this driver fully supports with kernels for these GPUs."""
    if driver is None:
        return None
    releases = torch_releases_by_minor(matrix)
    if not releases:
        return None
    newest = releases[-1][1]  # candidates come nearest first: starting from the newest gives newest first
    cands = torch_build_candidates(matrix, newest, driver, ccs)
    if not cands:
        return None
    rel, tag = cands[0]
    return torch_build_action(matrix.torch_index_url, rel, tag,
                              f"torch {rel} built for CUDA {lookup.cuda_from_tag(tag)} ({tag}) runs on this driver")


def _ccs(facts: Facts, matrix: Matrix) -> List[Tuple[int, int]]:
    """Compute capabilities of the GPUs, where known (driver, else the GPU name table)."""
    return [cc for cc in (cc_of(g, matrix) for g in facts.hardware.gpus) if cc is not None]
