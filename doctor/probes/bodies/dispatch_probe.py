"""The dispatcher's pick, run through doctor.backends.attention exactly as the runtime will call it, and verified."""

from __future__ import annotations

import os
from typing import Any, Dict

from doctor.backends.attention import get
from doctor.envvars import DOCTOR_BACKEND_PREFIX
from doctor.probes.bodies._attn_check import check_attention
from doctor.probes.spec import ProbeContext

ENV_OVERRIDE = DOCTOR_BACKEND_PREFIX + "ATTENTION"  # the override for this op, as the dispatcher names it


def attention(ctx: ProbeContext) -> Dict[str, Any]:
    """Check the backend named by params['choice'] (or $DOCTOR_BACKEND_ATTENTION) like the sdpa probes do."""

    choice = ctx.params.get("choice") or os.environ.get(ENV_OVERRIDE)
    if not choice:
        # A runner bug, not a property of the machine: fail loudly rather than verify nothing.
        raise ValueError(f"dispatch probe got no backend to verify (params['choice'] or ${ENV_OVERRIDE})")
    fn = get(str(choice))  # KeyError listing the known backends for a bad name
    return check_attention(fn, ctx, f"dispatch attention -> {choice}")
