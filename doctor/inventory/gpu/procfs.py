"""The driver version and GPU names from /proc/driver/nvidia (no compute capability or memory there)."""

from __future__ import annotations

import os

from doctor._util.files import describe_os_error, read_text
from doctor._util.regex import lazy
from doctor.facts import GPU
from doctor.inventory.gpu.detection import NA, Detection, short

_PROC_VERSION_RE = lazy(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)")


def read_procfs(proc_root: str = "/proc") -> Detection:
    """Driver version from <proc_root>/driver/nvidia/version and GPU names from .../gpus/*/information."""
    found = Detection("procfs")
    base = os.path.join(proc_root, "driver", "nvidia")
    text, err = read_text(os.path.join(base, "version"), limit=64 * 1024)
    if text is None:
        found.notes.append(f"procfs: {os.path.join(base, 'version')} {err or 'absent'}")
    else:
        match = _PROC_VERSION_RE.search(text)
        if match:
            found.driver_version = match.group(1)
        else:
            first = text.strip().splitlines()[0] if text.strip() else ""
            found.notes.append(f"procfs: no driver version in {os.path.join(base, 'version')}: {short(first)}")
    gpus_dir = os.path.join(base, "gpus")
    try:
        bus_ids = sorted(os.listdir(gpus_dir))  # PCI bus order, which is also nvidia-smi's order
    except FileNotFoundError:
        return found
    except OSError as exc:
        found.notes.append(f"procfs: cannot list {gpus_dir}: {describe_os_error(exc)}")
        return found
    for index, bus_id in enumerate(bus_ids):
        info, err = read_text(os.path.join(gpus_dir, bus_id, "information"), limit=64 * 1024)
        fields = {}
        for line in (info or "").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if info is None:
            found.notes.append(f"procfs: GPU {bus_id}: information {err or 'absent'}")
        name = fields.get("model") or "unknown"
        uuid = fields.get("gpu uuid")
        found.gpus.append(GPU(index=index, name=name, uuid=uuid if uuid and uuid.lower() not in NA else None))
    return found
