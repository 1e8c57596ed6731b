"""A probe session: run (or reuse) the verdicts of a selection of probes for one environment.

`run_probes(facts)` runs the catalogue (or part of it), reusing verdicts cached for this
environment's fingerprint; unmet requirements are `skipped` with the reason, without a child.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.envvars import CUDA_VISIBLE_DEVICES
from doctor.facts import Facts
from doctor.probes.spec import ProbeSpec
from doctor.verdicts import ProbeResult

if TYPE_CHECKING:  # the runner and the cache load only when probes run: `doctor check --no-probes` never does
    from doctor.cache.own import DoctorCache
    from doctor.probes.runner import Progress



class ProbeRun(NamedTuple):
    """Verdicts of one `doctor probe`, in catalogue order, with what was cached and what ran."""

    results: Tuple[ProbeResult, ...]
    fingerprint: str
    ran: Tuple[str, ...]
    cached: Tuple[str, ...]
    wall_s: float


def selected_gpu_cc(facts: Facts, gpu: Optional[int]) -> Optional[Tuple[int, int]]:
    """Compute capability of the GPU the children will use (--gpu, else the first visible)."""
    from doctor.probes.gpus import visible_gpus

    gpus = facts.hardware.gpus
    if not gpus:
        return None
    if gpu is None:
        visible = visible_gpus(gpus, facts.env).gpus  # cuda:0 is the first GPU CUDA_VISIBLE_DEVICES leaves
        return (visible or gpus)[0].compute_capability
    match = [g for g in gpus if g.index == gpu] or list(gpus[:1])
    return match[0].compute_capability


def probes_apply(facts: Facts) -> bool:
    """Whether `doctor check` should run probes: a CUDA build of torch and a real (not simulated) GPU."""
    return bool(facts.torch and facts.torch.cuda and facts.hardware.gpus and facts.hardware.source != "override")


def run_probes(
    facts: Facts,
    only: Sequence[str] = (),
    timeout: Optional[float] = None,
    refresh: bool = False,
    gpu: Optional[int] = None,
    progress: Optional["Progress"] = None,
    catalogue: Optional[Sequence[ProbeSpec]] = None,
    cache: Optional["DoctorCache"] = None,
    environ: Optional[Mapping[str, str]] = None,
    jobs: int = 3,
) -> ProbeRun:
    """Run (or reuse) the verdicts of the selected probes for this environment; `gpu`: the nvidia-smi index of the
    one GPU the children see (by its UUID when known), else whatever CUDA_VISIBLE_DEVICES shows."""
    from doctor import dispatch
    from doctor.probes import store  # noqa: lazy with the rest: `doctor check --no-probes` never loads them
    from doctor.probes.catalogue import CATALOGUE_VERSION, select
    from doctor.probes.fingerprint import fingerprint, fingerprint_inputs
    from doctor.probes.gpus import device_env
    from doctor.probes.runner import groups_of, run_group, unmet_requirement

    t0 = time.monotonic()
    specs = tuple(catalogue) if catalogue is not None else select(list(only))
    if catalogue is not None and only:
        specs = tuple(p for p in specs if any(p.id == o or p.id.startswith(o.rstrip(".") + ".") for o in only))
    env = dict(os.environ if environ is None else environ)
    if gpu is not None:
        # the children see this GPU alone, by UUID when known (CUDA's own order need not be nvidia-smi's)
        known = [g for g in facts.hardware.gpus if g.index == gpu]
        env.update(device_env(known[0]) if known else {CUDA_VISIBLE_DEVICES: str(gpu)})
    gpu_key = env[CUDA_VISIBLE_DEVICES] if gpu is not None else env.get(CUDA_VISIBLE_DEVICES)  # one cache entry per GPU
    python = _interpreter(facts, env)
    fp = fingerprint(facts, gpu_key, CATALOGUE_VERSION)
    cached = {} if refresh else store.load(fp, cache)
    cc = selected_gpu_cc(facts, gpu)
    results: Dict[str, ProbeResult] = {}
    to_run: List[ProbeSpec] = []
    for spec in specs:
        why = unmet_requirement(spec, facts, cc)
        if why:
            results[spec.id] = ProbeResult(spec.id, spec.backend, "skipped", detail=why, op=spec.op)
        elif spec.id in cached and not spec.id.startswith("dispatch."):
            results[spec.id] = cached[spec.id]
        else:
            to_run.append(spec)
    cuda = bool(facts.torch and facts.torch.cuda)
    ran: List[ProbeResult] = []
    plain = [s for s in to_run if not s.id.startswith("dispatch.")]
    # Groups without dispatcher timings run side by side (each child pays its own `import torch`).
    from concurrent.futures import ThreadPoolExecutor

    groups = groups_of(plain)
    untimed = [g for g in groups if not any(s.op for s in g)]
    timed = [g for g in groups if any(s.op for s in g)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_group, g, env, cuda, timeout, 0, progress, python) for g in untimed]
        for fut in futures:
            out = fut.result()
            ran.extend(out)
            results.update({r.id: r for r in out})
    # Groups whose timings feed the dispatcher run one at a time, on a GPU nothing else is using.
    for g in timed:
        out = run_group(g, env, cuda, timeout, 0, progress, python)
        ran.extend(out)
        results.update({r.id: r for r in out})
    # the dispatcher probe runs what the table picks from every verdict so far (cached ones included)
    picks = {c.op: c.backend for c in dispatch.table(list(results.values()) + list(cached.values()), env)}
    disp = []
    for s in to_run:
        if not s.id.startswith("dispatch."):
            continue
        choice = picks.get(s.id.split(".", 1)[1], dispatch.REFERENCE)
        old = cached.get(s.id)
        if old is not None and old.backend == choice:  # same pick as when it was verified
            results[s.id] = old
        else:
            disp.append(s._replace(backend=choice, params={**s.params, "choice": choice}))
    for group in groups_of(disp):
        out = run_group(group, env, cuda, timeout=timeout, progress=progress, python=python)
        ran.extend(out)
        results.update({r.id: r for r in out})
    if ran:
        store.save(fp, ran, fingerprint_inputs(facts, gpu_key, CATALOGUE_VERSION), cache)
    return ProbeRun(tuple(results[s.id] for s in specs), fp, tuple(r.id for r in ran),
                    tuple(i for i in results if i in cached and i not in {r.id for r in ran}), time.monotonic() - t0)


def _interpreter(facts: Facts, env: Dict[str, str]) -> Optional[str]:
    """The checked interpreter when it is not this one (`--python`): its children import the doctor from this
    checkout through PYTHONPATH, since the doctor need not be installed there. None: this interpreter (Facts.markers
    is set only when gather() asked another interpreter)."""
    import sys

    exe = facts.python.executable
    if not facts.markers or not exe or os.path.abspath(exe) == os.path.abspath(sys.executable):  # not realpath: a venv's python links to its base
        return None
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the dir holding doctor/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return exe
