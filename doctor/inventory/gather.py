"""gather(): one immutable Facts snapshot of this machine and Python environment.

Kept cheap to import (the package re-exports `gather` eagerly): every helper module is imported
inside the function. Nothing on this path imports torch, xformers or triton.
"""

from __future__ import annotations

import os
import sys
from typing import List, Mapping, Optional, Sequence

from doctor._util.timeouts import Background, TimedOut
from doctor.facts import Facts, Hardware


def gather(
    *,
    paths: Optional[Sequence[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    gpu_timeout: float = 3.0,
    python: Optional[str] = None,
) -> Facts:
    """Facts about the interpreter, platform, installed distributions, builds, GPUs and env vars.

    `python`: check that interpreter's environment (`doctor check --python PATH`): its sys.path, version and
    marker environment come from a stdlib-only child of it (inventory.interpreter); the rest is read as usual.
    """
    # lazy: the package re-exports gather() eagerly, so `import doctor.inventory` must not load the readers
    from doctor.inventory.builds import bitsandbytes_build, torch_build, xformers_build
    from doctor.inventory.distributions import scan_distributions
    from doctor.inventory.environment import relevant_env
    from doctor.inventory.gpu.detect import detect_hardware
    from doctor.inventory.gpu.override import hardware_from_override
    from doctor.inventory.platform_info import env_kinds, platform_info, python_info

    environ = os.environ if environ is None else environ
    target = None
    if python is not None:
        from doctor.inventory.interpreter import ask_interpreter  # lazy: only for --python

        target = ask_interpreter(python, environ=environ)  # DoctorError (exit 3) when it is not a working Python
        if paths is None:
            paths = list(target.path)
    if isinstance(paths, str):  # a lone path, not a sequence of one-character entries
        paths = [paths]
    paths = list(sys.path if paths is None else paths)
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
        detection = Background(lambda: detect_hardware(environ, timeout=gpu_timeout), name="doctor-gpu")
        scan = scan_distributions(paths)
        hardware = hardware_of(detection, gpu_timeout + 1.5)
    notes.extend(scan.notes)
    dists = scan.distributions
    return Facts(
        python=python_info() if target is None else target.python,
        platform=platform_info(),
        env_kinds=env_kinds(environ, dist_names=dists.keys()),
        distributions=dists,
        torch=torch_build(paths, dists.get("torch")),
        xformers=xformers_build(paths, dists.get("xformers")),
        hardware=hardware,
        env=relevant_env(environ),
        cwd=cwd,
        notes=tuple(notes),
        markers={} if target is None else target.markers,
        bitsandbytes=bitsandbytes_build(paths, dists.get("bitsandbytes")),
    )


def hardware_of(detection: "Background[Hardware]", timeout: float) -> Hardware:
    """The detected Hardware, or an empty one with a note when detection failed or overran; never raises."""
    try:
        return detection.result(timeout)
    except TimedOut:
        return Hardware(notes=(f"GPU detection did not finish within {timeout:g} s",))
    except (Exception, SystemExit) as exc:  # a bug or a driver surprise in detection: a note, never a crash
        return Hardware(notes=(f"GPU detection failed: {exc.__class__.__name__}: {exc}",))
