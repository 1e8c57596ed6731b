"""What one GPU detection source found, and the value checks every source shares."""

from __future__ import annotations

from typing import List, Optional

from doctor._util.regex import lazy
from doctor.facts import GPU

# [0-9], not \d: \d also matches other scripts' digits; \Z, not $: $ accepts a trailing newline.
DRIVER_RE = lazy(r"[0-9]+\.[0-9]+(\.[0-9]+)?\Z")
CUDA_RE = lazy(r"[0-9]+\.[0-9]+\Z")
CC_RE = lazy(r"([0-9]+)\.([0-9]+)\Z")
NA = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]"}  # "no value" as drivers spell it


class Detection:
    """What one detection source found (mutable while the source builds it)."""

    # A plain class: a @dataclass costs ~2 ms to create on 3.11, on every `doctor check`.
    __slots__ = ("source", "driver_version", "cuda_driver_version", "gpus", "notes")

    def __init__(self, source: str, driver_version: Optional[str] = None, cuda_driver_version: Optional[str] = None,
                 gpus: Optional[List[GPU]] = None, notes: Optional[List[str]] = None) -> None:
        self.source = source  # "nvml", "sysfs", "procfs", "nvidia-smi"
        self.driver_version = driver_version  # "580.159.04", or None when this source could not tell
        self.cuda_driver_version = cuda_driver_version  # highest CUDA the driver supports ("13.0"), NVML only
        self.gpus: List[GPU] = list(gpus) if gpus else []  # in the source's order
        self.notes: List[str] = list(notes) if notes else []  # every failure, "<source>: what happened"

    def __repr__(self) -> str:
        return f"Detection({self.source!r}, driver={self.driver_version!r}, gpus={self.gpus!r}, notes={self.notes!r})"

    @property
    def complete(self) -> bool:
        """A driver and at least one GPU, every GPU with compute capability and memory."""
        return bool(
            self.driver_version
            and self.gpus
            and all(g.compute_capability is not None and g.memory_mib is not None for g in self.gpus)
        )


def short(value: str, limit: int = 60) -> str:
    """A value quoted for a one-line message, cut to `limit` characters."""
    text = repr(value)  # repr keeps the message on one line whatever the value holds
    return text if len(text) <= limit else text[: limit - 4] + "...'"
