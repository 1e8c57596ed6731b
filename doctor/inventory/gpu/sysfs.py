"""The driver version of the loaded nvidia kernel module, from sysfs (no GPU names: procfs has those)."""

from __future__ import annotations

import os

from doctor._util.files import read_text
from doctor.inventory.gpu.detection import DRIVER_RE, Detection, short


def read_sysfs(sys_root: str = "/sys") -> Detection:
    """Driver version of the loaded nvidia kernel module from <sys_root>/module/nvidia/version."""
    found = Detection("sysfs")
    path = os.path.join(sys_root, "module", "nvidia", "version")
    text, err = read_text(path, limit=4096)
    if text is None:
        found.notes.append(f"sysfs: {path} {err or 'absent'} (nvidia kernel module not loaded or not visible)")
        return found
    version = text.strip()
    if DRIVER_RE.match(version):
        found.driver_version = version
    else:
        found.notes.append(f"sysfs: {path} holds {short(version)}, not a driver version")
    return found
