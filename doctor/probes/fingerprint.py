"""Environment fingerprint: a hash of everything a probe verdict depends on."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Optional

from doctor._version import __version__
from doctor.compat_matrix.stack import TRAINING_STACK
from doctor.envvars import BNB_CUDA_VERSION, CUDA_VISIBLE_DEVICES
from doctor.facts import Facts

# Distributions whose version changes what a probe proves (plus every nvidia-* runtime library).
RELEVANT = TRAINING_STACK + ("pytorch-triton", "numpy")


def fingerprint_inputs(facts: Facts, gpu: Optional[str] = None, catalogue_version: int = 0) -> Dict[str, Any]:
    """The inputs hashed into the fingerprint (kept in the result store, so a reader can see them)."""
    dists = {n: facts.version_of(n) for n in RELEVANT if facts.version_of(n) is not None}
    dists.update({n: d.version for n, d in facts.distributions.items() if n.startswith("nvidia-")})
    t, x, hw = facts.torch, facts.xformers, facts.hardware
    return {
        "doctor": __version__,
        "catalogue": catalogue_version,
        "python": f"{facts.python.implementation} {facts.python.version}",
        "executable": facts.python.executable,
        "machine": facts.platform.machine,
        "distributions": dict(sorted(dists.items())),
        "torch_build": [t.version, t.cuda, t.hip, t.git_version] if t else None,
        "xformers_build": [x.torch_version, x.cuda_version, x.python_version, x.arch_list] if x else None,
        "driver": hw.driver_version,
        "gpus": [[g.name, g.cc, g.uuid] for g in hw.gpus],
        "selected_gpu": gpu if gpu is not None else facts.env.get(CUDA_VISIBLE_DEVICES),
        "bnb_cuda_override": facts.env.get(BNB_CUDA_VERSION),  # which library the bitsandbytes probe loads
    }


def fingerprint(facts: Facts, gpu: Optional[str] = None, catalogue_version: int = 0) -> str:
    """sha256 (hex, 24 chars) of the fingerprint inputs."""
    blob = json.dumps(fingerprint_inputs(facts, gpu, catalogue_version), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]
