"""Inventory: Facts about the machine, gathered fast without importing torch.

`gather()` is the entry point. Modules, one job each:
platform_info (interpreter, OS, libc, env kinds), distributions (installed packages),
builds (torch/version.py and xformers/cpp_lib.json read as files), gpu/ (one module per
source: override, NVML, sysfs, procfs, nvidia-smi; detect holds the order), environment
(relevant env vars). Files are read through doctor._util.files (bounded, non-blocking).
"""

from __future__ import annotations

# Eager on purpose: gather.py imports its helpers lazily, so this stays cheap, and binding the
# function here means the `gather` attribute can never be shadowed by the `gather` submodule.
from doctor.inventory.gather import gather

__all__ = ["gather"]
