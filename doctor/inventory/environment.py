"""The environment variables that change how the fine-tuning stack behaves, as far as they are set."""

from __future__ import annotations

from typing import Dict, Mapping

RELEVANT_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "UNSLOTH_COMPILE_LOCATION",
    "UNSLOTH_LOCK_TIMEOUT",
    "TRITON_CACHE_DIR",
    "TRITON_HOME",
    "TORCHINDUCTOR_CACHE_DIR",
    "PYTORCH_CUDA_ALLOC_CONF",
    "HF_HOME",
    "PIP_CONSTRAINT",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "XDG_CACHE_HOME",
    "VIRTUAL_ENV", "CONDA_PREFIX",  # the activated environment, which may not be the one checked
)
# Our own overrides (DOCTOR_GPUS, DOCTOR_DRIVER_VERSION, ...) are reported too, so a report shows them.
OVERRIDE_PREFIX = "DOCTOR_"


def relevant_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The relevant variables that are set (an empty value counts as set), in a stable order."""
    found = {name: environ[name] for name in RELEVANT_VARS if name in environ}
    for name in sorted(k for k in environ if k.startswith(OVERRIDE_PREFIX)):
        found[name] = environ[name]
    return found
