"""`doctor probe --all-gpus`: the probe suite once per visible GPU, each run seeing that GPU alone.

Every GPU gets the same probes with the same packages, driver and interpreter; only the GPU differs, so a
verdict that differs between GPUs is the GPU's (doctor.probes.compare reads the runs side by side). The GPUs
are probed side by side, one suite per GPU at once with `jobs` probe processes each: no two suites share a
device, and every GPU's timings are taken under the same load. Verdicts are cached per GPU: the fingerprint
holds the GPU's UUID (else its index), so one GPU's verdicts never answer for another.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.facts import GPU, Facts
from doctor.probes.gpus import Visible
from doctor.probes.session import ProbeRun, run_probes
from doctor.probes.spec import ProbeSpec
from doctor.verdicts import ProbeResult

if TYPE_CHECKING:
    from doctor.cache.own import DoctorCache
    from doctor.probes.runner import Progress


class GpuRun(NamedTuple):
    """One GPU's probe run."""

    gpu: GPU
    run: ProbeRun


class AllGpuRun(NamedTuple):
    """Every visible GPU's run, in CUDA's order, with what reading CUDA_VISIBLE_DEVICES noticed."""

    runs: Tuple[GpuRun, ...]
    notes: Tuple[str, ...]  # entries CUDA would drop, order caveats (doctor.probes.gpus.Visible.notes)
    wall_s: float

    @property
    def ran(self) -> int:
        """Probes run (not reused from the cache) over all GPUs."""
        return sum(len(g.run.ran) for g in self.runs)

    @property
    def cached(self) -> int:
        """Verdicts reused from the cache over all GPUs."""
        return sum(len(g.run.cached) for g in self.runs)


def run_all_gpus(
    facts: Facts,
    visible: Visible,
    only: Sequence[str] = (),
    timeout: Optional[float] = None,
    refresh: bool = False,
    progress: Optional["Progress"] = None,
    catalogue: Optional[Sequence[ProbeSpec]] = None,
    cache: Optional["DoctorCache"] = None,
    environ: Optional[Mapping[str, str]] = None,
    jobs: int = 3,
) -> AllGpuRun:
    """Run (or reuse) the selected probes on each visible GPU, the GPUs side by side; progress ids say which GPU."""
    t0 = time.monotonic()

    def one(gpu: GPU) -> GpuRun:
        def tell(pid: str, result: Optional[ProbeResult]) -> None:
            if progress is not None:
                progress(f"{pid} on GPU {gpu.index}", result)

        return GpuRun(gpu, run_probes(facts, only=only, timeout=timeout, refresh=refresh, gpu=gpu.index,
                                      progress=tell if progress is not None else None, catalogue=catalogue,
                                      cache=cache, environ=environ, jobs=jobs))

    if not visible.gpus:
        return AllGpuRun((), visible.notes, time.monotonic() - t0)
    with ThreadPoolExecutor(max_workers=len(visible.gpus)) as pool:
        runs = tuple(pool.map(one, visible.gpus))
    return AllGpuRun(runs, visible.notes, time.monotonic() - t0)
