"""gather(): one immutable Facts snapshot of this machine and Python environment.

Kept cheap to import (the package re-exports `gather` eagerly): every helper module is imported
inside the function. Nothing on this path imports torch, xformers or triton.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Mapping, Optional, Sequence

from doctor.facts import Facts, Hardware


def gather(
    *,
    paths: Optional[Sequence[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    gpu_timeout: float = 3.0,
) -> Facts:
    """Facts about the interpreter, platform, installed distributions, builds, GPUs and env vars."""
    from doctor.inventory.builds import torch_build, xformers_build
    from doctor.inventory.distributions import scan_distributions
    from doctor.inventory.environment import relevant_env
    from doctor.inventory.gpu import detect_hardware, hardware_from_override
    from doctor.inventory.platform_info import env_kinds, platform_info, python_info

    if isinstance(paths, str):  # a lone path, not a sequence of one-character entries
        paths = [paths]
    paths = list(sys.path if paths is None else paths)
    environ = os.environ if environ is None else environ
    notes: List[str] = []
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError as exc:  # the working directory was deleted under us
            notes.append(f"cannot read the working directory: {exc.strerror or exc}")
            cwd = "."

    # A malformed override fails here, before any slow work. Otherwise the GPU probe (NVML
    # waits in C with the GIL released, nvidia-smi in a child process) runs in a daemon thread
    # while the distributions are read, so a check costs the longer of the two, not the sum.
    if hardware_from_override(environ) is not None:
        hardware = detect_hardware(environ, timeout=gpu_timeout)
        scan = scan_distributions(paths)
    else:
        probe = _Background(lambda: detect_hardware(environ, timeout=gpu_timeout))
        scan = scan_distributions(paths)
        hardware = probe.result(gpu_timeout + 1.5)
    notes.extend(scan.notes)
    dists = scan.distributions
    return Facts(
        python=python_info(),
        platform=platform_info(),
        env_kinds=env_kinds(environ, dist_names=dists.keys()),
        distributions=dists,
        torch=torch_build(paths, dists.get("torch")),
        xformers=xformers_build(paths, dists.get("xformers")),
        hardware=hardware,
        env=relevant_env(environ),
        cwd=cwd,
        notes=tuple(notes),
    )


class _Background:
    """Hardware detection running in a daemon thread; result() never raises and never waits past its timeout."""

    def __init__(self, fn: Callable[[], Hardware]) -> None:
        import threading

        self._fn = fn
        self._value: Optional[Hardware] = None
        self._error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="doctor-gpu", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # surfaced as a note by result()
            self._error = f"{exc.__class__.__name__}: {exc}"

    def result(self, timeout: float) -> Hardware:
        """The detected Hardware, or an empty one with a note when detection failed or overran."""
        self._thread.join(max(timeout, 0.0))
        if self._value is not None:
            return self._value
        if self._thread.is_alive():
            return Hardware(notes=(f"GPU detection did not finish within {timeout:g} s",))
        return Hardware(notes=(f"GPU detection failed: {self._error}",))

