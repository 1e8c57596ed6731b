"""First-party Triton kernels of the training runtime: imports torch and triton only, nothing of `doctor`.

Each op is a module holding its Triton kernel(s), a torch reference (`*_reference`), the
torch.autograd.Function and the public function. Names load on first use (PEP 562), so
`import doctor.kernels` costs nothing until an op is called for.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

# public name -> module under doctor.kernels that defines it
_OPS: Dict[str, str] = {
    "rms_norm": "norm",
    "rms_norm_reference": "norm",
    "rope": "rotary",
    "rope_reference": "rotary",
    "swiglu": "activations",
    "swiglu_reference": "activations",
    "geglu": "activations",
    "geglu_reference": "activations",
    "fused_linear_cross_entropy": "fused_linear_ce",
    "fused_linear_cross_entropy_reference": "fused_linear_ce",
}

__all__ = sorted(_OPS)


def __getattr__(name: str) -> Any:
    """Load the op's module on first access."""
    module = _OPS.get(name)
    if module is None:
        raise AttributeError(f"module 'doctor.kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"doctor.kernels.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_OPS))
