"""Verdicts: what running a probe proved (pass / wrong-result / error / crash / timeout / skipped).

A pure type shared by the probes that produce verdicts and the dispatcher that reads them, so
neither has to import the other.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional

STATUSES = ("pass", "wrong-result", "error", "crash", "timeout", "skipped")


class ProbeResult(NamedTuple):
    """A verdict: status, error vs reference, time, and the evidence when it did not pass."""

    id: str
    backend: str
    status: str  # one of STATUSES
    error: Optional[float] = None  # max error vs reference (relative, as the body defines)
    tolerance: Optional[float] = None
    time_ms: Optional[float] = None  # body wall time (or the op's timed run when the body measured one)
    detail: str = ""  # what was compared, or why it was skipped / failed
    stderr_tail: str = ""  # last lines the child printed, for crashes and errors
    op: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form."""
        return dict(self._asdict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProbeResult":
        """Inverse of to_dict; raises ValueError on a malformed record."""
        if not isinstance(d, Mapping) or d.get("status") not in STATUSES or not isinstance(d.get("id"), str):
            raise ValueError("not a probe result")
        fields = {k: d[k] for k in cls._fields if k in d}
        for k in ("error", "tolerance", "time_ms"):
            if fields.get(k) is not None and not isinstance(fields[k], (int, float)):
                raise ValueError(f"{k} is not a number")
        return cls(**fields)

    @property
    def passed(self) -> bool:
        """True only for a pass verdict."""
        return self.status == "pass"
