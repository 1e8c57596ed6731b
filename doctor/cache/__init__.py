"""Compiled caches: inspect, verify and repair unsloth's, Triton's, Inductor's and the doctor's own.

Modules, one job each (imported lazily: `doctor check` pays only for what it uses):
  roots      where each cache lives, resolved the way its owner resolves it
  fsinfo     the filesystem under a path (network filesystems flagged), from /proc/self/mountinfo
  location   unsloth's compiled-cache location rule, and the write check (try_write) every root uses
  scan       cheap, bounded, non-blocking inspection of the roots (threads with time limits); one module per
             owner (scan.unsloth, scan.triton, scan.inductor, scan.own) over the shared walk (scan.walk)
  problems   what each problem kind a scan found means, as a Finding with its repair
  verify     import unsloth's compiled modules in child processes, attributing hangs and crashes
  diagnose   scans + verify results -> Findings with typed repair actions; the `doctor check` rule
  repair     apply_cache_action: MoveToQuarantine, RemoveStaleLock, TightenMode, a cache-location SetEnv
             (with refusals); the builders of those actions
  own        the doctor's own cache: atomic, locked, stamped JSON entries and generated modules
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doctor.actions import Action


def apply_cache_action(action: "Action", dry_run: bool = False) -> str:
    """Perform ONE cache repair Action (or describe it, with dry_run); a one-line description. DoctorError on refusal."""
    from doctor.cache.repair import apply_cache_action as _apply  # lazy: `import doctor.cache` stays cheap

    return _apply(action, dry_run=dry_run)


__all__ = ["apply_cache_action"]
