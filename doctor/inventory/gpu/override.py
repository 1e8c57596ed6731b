"""GPU facts from the environment instead of detection (DOCTOR_GPUS, DOCTOR_DRIVER_VERSION, ...).

When any of these is set (non-empty), nothing is detected and Hardware.source is "override":

- ``DOCTOR_GPUS``: comma-separated ``NAME@CC[@MEM_MIB][@UUID]`` items, e.g.
  ``Tesla T4@7.5@15360,NVIDIA H100 80GB HBM3@9.0``; or ``none`` for a machine without GPU.
  CC is the compute capability ``MAJOR.MINOR``, or ``?`` when unknown (as procfs-only
  detection leaves it); MEM_MIB an integer number of MiB, or ``?``; UUID the driver's
  ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` (``NAME@CC@UUID`` when the memory is left out),
  unique per item: what CUDA_VISIBLE_DEVICES may name a GPU by.
- ``DOCTOR_DRIVER_VERSION``: the NVIDIA driver, e.g. ``535.104.05`` (or ``570.26``).
- ``DOCTOR_CUDA_DRIVER_VERSION``: the highest CUDA the driver supports, e.g. ``12.2``.

A malformed value raises DoctorError naming the variable, on one line.
"""

from __future__ import annotations

import re
from typing import List, Mapping, Optional, Tuple

from doctor.envvars import DOCTOR_CUDA_DRIVER_VERSION, DOCTOR_DRIVER_VERSION, DOCTOR_GPUS
from doctor.errors import DoctorError
from doctor.facts import GPU, Hardware
from doctor._util.regex import lazy
from doctor.inventory.gpu.detection import CC_RE, CUDA_RE, DRIVER_RE, short

OVERRIDE_VARS = (DOCTOR_GPUS, DOCTOR_DRIVER_VERSION, DOCTOR_CUDA_DRIVER_VERSION)
# A GPU UUID as NVML and nvidia-smi spell it ([0-9a-fA-F], not \w: only hex digits).
UUID_RE = lazy(r"GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def hardware_from_override(environ: Mapping[str, str]) -> Optional[Hardware]:
    """Hardware from DOCTOR_GPUS / DOCTOR_DRIVER_VERSION / DOCTOR_CUDA_DRIVER_VERSION, or None when unset."""
    values = {name: (environ.get(name) or "").strip() for name in OVERRIDE_VARS}
    if not any(values.values()):
        return None
    gpus = parse_gpu_override(values[DOCTOR_GPUS]) if values[DOCTOR_GPUS] else ()
    driver = values[DOCTOR_DRIVER_VERSION] or None
    if driver is not None and not DRIVER_RE.match(driver):
        raise DoctorError(f"{DOCTOR_DRIVER_VERSION}={short(driver)} is not a driver version like 535.104.05")
    cuda = values[DOCTOR_CUDA_DRIVER_VERSION] or None
    if cuda is not None and not CUDA_RE.match(cuda):
        raise DoctorError(f"{DOCTOR_CUDA_DRIVER_VERSION}={short(cuda)} is not a CUDA version like 12.2")
    set_vars = ", ".join(name for name in OVERRIDE_VARS if values[name])
    return Hardware(
        gpus=gpus,
        driver_version=driver,
        cuda_driver_version=cuda,
        source="override",
        notes=(f"GPU facts taken from {set_vars}; nothing was detected",),
    )


def parse_gpu_override(value: str) -> Tuple[GPU, ...]:
    """Parse DOCTOR_GPUS ("NAME@CC[@MEM_MIB][@UUID],..." or "none"); raises DoctorError when malformed."""
    if value.strip().lower() == "none":
        return ()
    gpus: List[GPU] = []
    for index, item in enumerate(value.split(",")):
        parts = [p.strip() for p in item.split("@")]
        uuid = None
        if len(parts) in (3, 4) and parts[-1].startswith("GPU-"):  # the UUID is told apart by its GPU- start
            uuid = parts.pop()
        problem = None
        if len(parts) not in (2, 3):
            problem = "is not NAME@CC[@MEM_MIB][@UUID]"
        elif uuid is not None and not UUID_RE.match(uuid):
            problem = f"has UUID {short(uuid)}, expected GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits)"
        elif uuid is not None and any(g.uuid == uuid for g in gpus):
            problem = f"repeats UUID {uuid} (each GPU has its own)"
        elif not parts[0]:
            problem = "has an empty name"
        elif parts[1] != "?" and not CC_RE.match(parts[1]):
            problem = f"has compute capability {parts[1]!r}, expected MAJOR.MINOR like 8.0, or ?"
        elif len(parts) == 3 and parts[2] != "?" and not (re.fullmatch(r"[0-9]+", parts[2]) and int(parts[2]) > 0):
            problem = f"has memory {parts[2]!r}, expected a whole number of MiB, or ?"
        if problem:
            raise DoctorError(
                f"{DOCTOR_GPUS} item {index + 1} {short(item.strip())} {problem}"
                " (expected e.g. 'Tesla T4@7.5@15360,NVIDIA H100 80GB HBM3@9.0' or 'none')"
            )
        cc_match = CC_RE.match(parts[1])
        cc = (int(cc_match.group(1)), int(cc_match.group(2))) if cc_match else None
        memory = int(parts[2]) if len(parts) == 3 and parts[2] != "?" else None
        gpus.append(GPU(index=index, name=parts[0], compute_capability=cc, memory_mib=memory, uuid=uuid))
    return tuple(gpus)
