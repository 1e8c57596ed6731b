"""GPUs and the NVIDIA driver, found without torch and without ever hanging: the detection order.

Each source is one small module of this package, tried in this order:

1. override (DOCTOR_GPUS / DOCTOR_DRIVER_VERSION / DOCTOR_CUDA_DRIVER_VERSION): when set, nothing is detected.
2. nvml: ctypes on libnvidia-ml.so.1, or pynvml; only when an NVIDIA device node exists. A complete
   answer (driver, every GPU with compute capability and memory) ends the detection.
3. sysfs: /sys/module/nvidia/version (driver).
4. procfs: /proc/driver/nvidia/version (driver) and gpus/*/information (names, no compute capability).
5. nvidia_smi: fills in compute capability and memory of GPUs found by procfs, with the time left.

Hardware.source is the first source that gave the driver version. Every failure becomes a note.
CUDA_VISIBLE_DEVICES does not filter the list (all physical GPUs are reported); it is noted.
The whole detection finishes within about ``timeout`` + 1 s whatever the driver does.
"""

from __future__ import annotations

import os
import time
from typing import List, Mapping, Optional, Sequence, Union

from doctor.envvars import CUDA_VISIBLE_DEVICES
from doctor.facts import GPU, Hardware
from doctor.inventory.gpu.detection import Detection
from doctor.inventory.gpu.nvidia_smi import query_nvidia_smi
from doctor.inventory.gpu.nvml import NVML_LIBRARY, detect_nvml, nvidia_device_present
from doctor.inventory.gpu.override import hardware_from_override
from doctor.inventory.gpu.procfs import read_procfs
from doctor.inventory.gpu.sysfs import read_sysfs


def detect_hardware(
    environ: Optional[Mapping[str, str]] = None,
    *,
    timeout: float = 3.0,
    sys_root: Optional[str] = "/sys",
    proc_root: Optional[str] = "/proc",
    nvidia_smi: Optional[Union[str, Sequence[str]]] = "nvidia-smi",
    nvml_library: Optional[str] = NVML_LIBRARY,
    use_pynvml: bool = True,
) -> Hardware:
    """GPUs and driver by override, NVML, sysfs/procfs, then nvidia-smi; None-valued args skip a source."""
    environ = os.environ if environ is None else environ
    extra_notes: List[str] = []
    cvd = environ.get(CUDA_VISIBLE_DEVICES)
    if cvd is not None:
        extra_notes.append(
            f"{CUDA_VISIBLE_DEVICES}={cvd!r}: processes see only those GPUs; all physical GPUs are listed here"
        )
    override = hardware_from_override(environ)
    if override is not None:
        return override._replace(notes=override.notes + tuple(extra_notes))

    deadline = time.monotonic() + max(timeout, 0.0)
    found: List[Detection] = []
    if nvml_library == NVML_LIBRARY and not nvidia_device_present():
        # No device node, no driver to talk to: skip loading ctypes + NVML (a CPU box's whole check is faster).
        extra_notes.append("nvml: skipped, no NVIDIA device node (/dev/nvidiactl, /dev/nvidia0, /dev/dxg, /proc/driver/nvidia)")
    elif nvml_library is not None:
        nvml = detect_nvml(timeout, library=nvml_library, use_pynvml=use_pynvml)
        found.append(nvml)
        if nvml.complete:
            return combine(found, extra_notes)
    if sys_root is not None:
        found.append(read_sysfs(sys_root))
    if proc_root is not None:
        found.append(read_procfs(proc_root))
    if nvidia_smi is not None:
        remaining = deadline - time.monotonic()
        if remaining > 0.05:
            found.append(query_nvidia_smi(nvidia_smi, timeout=remaining, environ=environ))
        else:
            extra_notes.append(f"nvidia-smi: skipped, the {timeout:g} s GPU detection budget was used up")
    return combine(found, extra_notes)


def combine(found: Sequence[Detection], extra_notes: Sequence[str] = ()) -> Hardware:
    """One Hardware from the detections in order: the first driver wins, later sources fill GPU gaps."""
    notes: List[str] = []
    for d in found:
        notes.extend(d.notes)
    with_driver = [p for p in found if p.driver_version]
    drivers = {p.driver_version for p in with_driver}
    if len(drivers) > 1:
        notes.append(
            "driver versions disagree: "
            + ", ".join(f"{p.driver_version} ({p.source})" for p in with_driver)
            + " (driver upgraded without a reboot?)"
        )
    with_gpus = [p for p in found if p.gpus]
    source = with_driver[0].source if with_driver else (with_gpus[0].source if with_gpus else "none")
    cuda = next((p.cuda_driver_version for p in found if p.cuda_driver_version), None)
    gpus: List[GPU] = []
    if with_gpus:
        gpus = list(with_gpus[0].gpus)
        for other in with_gpus[1:]:
            gpus = [_fill(gpu, _match(gpu, gpus, other.gpus)) for gpu in gpus]
    notes.extend(extra_notes)
    return Hardware(
        gpus=tuple(gpus),
        driver_version=with_driver[0].driver_version if with_driver else None,
        cuda_driver_version=cuda,
        source=source,
        notes=tuple(notes),
    )


def _match(gpu: GPU, ours: Sequence[GPU], theirs: Sequence[GPU]) -> Optional[GPU]:
    """The same physical GPU in another source's list: by UUID when both know it, else by index."""
    if gpu.uuid:
        for other in theirs:
            if other.uuid == gpu.uuid:
                return other
        if any(o.uuid for o in theirs):
            return None
    if len(ours) == len(theirs):
        for other in theirs:
            if other.index == gpu.index:
                return other
    return None


def _fill(gpu: GPU, other: Optional[GPU]) -> GPU:
    if other is None:
        return gpu
    return GPU(
        index=gpu.index,
        name=gpu.name if gpu.name and gpu.name != "unknown" else other.name,
        compute_capability=gpu.compute_capability or other.compute_capability,
        memory_mib=gpu.memory_mib if gpu.memory_mib is not None else other.memory_mib,
        uuid=gpu.uuid or other.uuid,
    )
