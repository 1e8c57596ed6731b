"""Probe verdicts cached per environment fingerprint in the doctor's own cache (atomic, versioned)."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Optional

from doctor.cache.own import DoctorCache
from doctor.verdicts import ProbeResult

KIND = "probes"


def load(fp: str, cache: Optional[DoctorCache] = None) -> Dict[str, ProbeResult]:
    """Cached verdicts by probe id for this fingerprint; a missing, corrupt or foreign entry is empty."""
    data = (cache or DoctorCache()).read_json(KIND, fp)
    if not data or data.get("fingerprint") != fp or not isinstance(data.get("results"), list):
        return {}
    out: Dict[str, ProbeResult] = {}
    for raw in data["results"]:
        try:
            r = ProbeResult.from_dict(raw)
        except (ValueError, TypeError):
            return {}  # one bad record taints the entry: treat it all as a miss
        out[r.id] = r
    return out


def save(fp: str, results: Iterable[ProbeResult], inputs: Dict[str, Any], cache: Optional[DoctorCache] = None) -> None:
    """Merge verdicts into this fingerprint's entry (others' verdicts for other probes are kept)."""
    c = cache or DoctorCache()
    merged = load(fp, c)
    for r in results:
        merged[r.id] = r
    c.write_json(KIND, fp, {"fingerprint": fp, "inputs": inputs, "saved": time.time(),
                            "results": [r.to_dict() for r in merged.values()]})
