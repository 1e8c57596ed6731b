"""Probe verdicts cached per environment fingerprint in the doctor's own cache (atomic, versioned)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

from doctor.cache.own import DoctorCache
from doctor.verdicts import ProbeResult

KIND = "probes"
# How long a process waits for another one probing the same environment (a cold suite takes a minute or two on a
# GPU; `doctor run` under torchrun starts one process per GPU at once) before it probes by itself.
PROBING_WAIT_S = 900.0


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


@contextmanager
def probing(fp: str, cache: Optional[DoctorCache] = None, wait: float = PROBING_WAIT_S,
            on_wait: Optional[Callable[[], None]] = None) -> Iterator[bool]:
    """Hold this environment's probing lock while probing it: one process on the machine probes at a time, the
    others wait and then read its verdicts. Yields True when this process waited (load() again before probing);
    a lock that cannot be made or waits past `wait` yields False without it (probing twice beats not at all)."""
    from filelock import FileLock, Timeout

    lock_path = (cache or DoctorCache()).path(KIND, fp, ".probing.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
            waited = False
        except Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire(timeout=wait)
            waited = True
    except (OSError, Timeout):
        yield False
        return
    try:
        yield waited
    finally:
        lock.release()
