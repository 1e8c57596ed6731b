"""The environment variables that change how the fine-tuning stack behaves, as far as they are set."""

from __future__ import annotations

from typing import Dict, Mapping

from doctor import envvars as E

RELEVANT_VARS = (
    E.CUDA_VISIBLE_DEVICES,
    E.UNSLOTH_COMPILE_LOCATION,
    E.UNSLOTH_LOCK_TIMEOUT,
    E.TRITON_CACHE_DIR,
    E.TRITON_HOME,
    E.TORCHINDUCTOR_CACHE_DIR,
    E.PYTORCH_CUDA_ALLOC_CONF,
    E.BNB_CUDA_VERSION,
    E.HF_HOME,
    E.PIP_CONSTRAINT,
    E.LD_LIBRARY_PATH,
    E.CUDA_HOME,
    E.XDG_CACHE_HOME,
    E.VIRTUAL_ENV, E.CONDA_PREFIX,  # the activated environment, which may not be the one checked
)
# Our own overrides (DOCTOR_GPUS, DOCTOR_DRIVER_VERSION, ...) are reported too, so a report shows them.
OVERRIDE_PREFIX = E.DOCTOR_PREFIX


def relevant_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The relevant variables that are set (an empty value counts as set), in a stable order."""
    found = {name: environ[name] for name in RELEVANT_VARS if name in environ}
    for name in sorted(k for k in environ if k.startswith(OVERRIDE_PREFIX)):
        found[name] = environ[name]
    return found
