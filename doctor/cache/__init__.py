"""Compiled caches: inspect, verify and repair unsloth's, Triton's, Inductor's and the doctor's own.

Modules, one job each (imported lazily: `doctor check` pays only for what it uses):
  roots      where each cache lives, resolved the way its owner resolves it
  fsinfo     the filesystem under a path (network filesystems flagged), from /proc/self/mountinfo
  scan       cheap, bounded, non-blocking inspection of one root (threads with time limits)
  verify     import unsloth's compiled modules in child processes, attributing hangs and crashes
  diagnose   scans + verify results -> Findings with CACHE_REPAIR actions; the `doctor check` rule
  repair     apply_cache_action: quarantine, remove-lock, chmod, set-location, clear (with refusals)
  own        the doctor's own cache: atomic, locked, stamped JSON entries and generated modules
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.findings import Action


def apply_cache_action(action: "Action", dry_run: bool = False) -> str:
    """Perform ONE cache repair Action (or describe it, with dry_run); a one-line description. DoctorError on refusal."""
    from doctor.cache.repair import apply_cache_action as _apply

    return _apply(action, dry_run=dry_run)


__all__ = ["apply_cache_action"]
