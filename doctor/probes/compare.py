"""The GPUs' verdicts side by side -> Findings: a probe that fails on one GPU and passes on another points at that GPU.

Every GPU ran the same probes with the same packages, driver and Python, each seeing one GPU alone
(doctor.probes.all_gpus), so:

- a probe that passes on some GPUs and fails (wrong result, error, crash, timeout) on others: an error naming
  each GPU it failed on, by index and UUID, with the probes;
- a probe that fails on every GPU it ran on: the environment's fault, reported as `doctor probe` reports it
  (one finding per probe, with its fix), never as a bad GPU;
- a probe much slower on one GPU than on the other GPUs of the same model: a warning naming that GPU.
  "Much": over SLOW_RATIO times the median of the others and at least SLOW_MIN_EXTRA_MS more (sub-millisecond
  timings carry launch jitter). Models are compared only with themselves: a T4 is slower than an H100 by design.
"""

from __future__ import annotations

import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from doctor.actions import Action, Manual, SetEnv
from doctor.compat_matrix.model import Matrix
from doctor.envvars import CUDA_DEVICE_ORDER, CUDA_VISIBLE_DEVICES
from doctor.facts import GPU, Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.probes.all_gpus import AllGpuRun
from doctor.probes.findings import probe_findings
from doctor.probes.gpus import PCI_BUS_ID, gpu_label
from doctor.verdicts import ProbeResult

SLOW_RATIO = 1.5  # slower than this many times the median of the same model's other GPUs...
SLOW_MIN_EXTRA_MS = 0.5  # ...and by at least this much: probe timings are medians of repeated runs, noise is ~0.1 ms
# Probes whose time is not the GPU's speed: cuda.context's includes CUDA's initialisation (host work, which
# varies with the load of the other suites running side by side).
NOT_COMPARED_TIMES = ("cuda.context",)

BAD_GPU = "probe.gpu"  # finding ids: a GPU that fails what the others pass...
SLOW_GPU = "probe.gpu-slow"  # ...one much slower than its peers
SUMMARY = "probe.summary"

_Verdicts = List[Tuple[GPU, ProbeResult]]


def compare_gpus(all_run: AllGpuRun, facts: Facts, matrix: Optional[Matrix] = None) -> List[Finding]:
    """Findings for a run over several GPUs: bad GPUs, slow GPUs, the environment's failures, one summary."""
    if not all_run.runs:
        return []
    by_probe = _by_probe(all_run)
    bad: Dict[int, List[Tuple[ProbeResult, List[GPU], int]]] = {}  # GPU -> (verdict, GPUs it passed on, how many failed)
    everywhere: List[str] = []
    for pid, verdicts in by_probe.items():
        passed = [g for g, r in verdicts if r.passed]
        failed = [(g, r) for g, r in verdicts if not r.passed]
        if failed and passed:
            for g, r in failed:
                bad.setdefault(g.index, []).append((r, passed, len(failed)))
        elif failed:
            everywhere.append(pid)
    gpus = {gr.gpu.index: gr.gpu for gr in all_run.runs}
    out = [_bad_gpu(gpus[i], items, [g for g in gpus.values() if g.index not in bad]) for i, items in bad.items()]
    out += [_slow_gpu(gpus[i], items) for i, items in _slow(by_probe).items()]
    out += _environment(by_probe, everywhere, facts, matrix)
    out.append(_summary(all_run, by_probe, bad, everywhere))
    return out


def _by_probe(all_run: AllGpuRun) -> Dict[str, _Verdicts]:
    """Probe id -> (GPU, verdict) for every GPU where it ran (skipped verdicts left out), in catalogue order."""
    out: Dict[str, _Verdicts] = {}
    for gr in all_run.runs:
        for r in gr.run.results:
            out.setdefault(r.id, [])
            if r.status != "skipped":
                out[r.id].append((gr.gpu, r))
    return out


def _indices(gpus: Sequence[GPU]) -> str:
    """'GPU 0, 2'."""
    return ("GPU " if len(gpus) == 1 else "GPUs ") + ", ".join(str(g.index) for g in gpus)


def _first_line(text: str, limit: int = 160) -> str:
    """The first non-empty line of a detail, cut."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _bad_gpu(gpu: GPU, items: List[Tuple[ProbeResult, List[GPU], int]], healthy: List[GPU]) -> Finding:
    """Error: this GPU fails probes that pass on other GPUs."""
    ids = [r.id for r, _, _ in items]
    ev: Dict[str, object] = {"GPU": _describe(gpu)}
    for r, passed, _ in items:
        ev[r.id] = f"{r.status} here, pass on {_indices(passed)}" + (f": {_first_line(r.detail)}" if r.detail else "")
    explanation = ("The same probes, with the same packages, driver and Python, ran on every GPU, each seeing one GPU "
                   "alone; these fail only here, which points at this GPU (its memory, clocks, firmware, slot or power), "
                   "not at the environment.")
    peers = {(g.name, g.compute_capability) for _, passed, _ in items for g in passed}
    if (gpu.name, gpu.compute_capability) not in peers:
        explanation += (f" Its model ({gpu.name}, cc {gpu.cc}) differs from the GPUs they passed on, so the cause may be "
                        "the model (its architecture missing from a build) rather than a fault of this one GPU.")
    if any(n_failed > len(passed) for _, passed, n_failed in items):
        explanation += (" Some of them fail on more GPUs than they pass on: a marginal environment or a flaky probe is then "
                        "as likely as several bad GPUs (run again with --refresh).")
    fix: List[Action] = [Manual(f"look at it: nvidia-smi -q -i {gpu.uuid or gpu.index} -d ECC,PAGE_RETIREMENT,ROW_REMAPPER,"
                                "TEMPERATURE,PERFORMANCE (ECC errors, retired or remapped memory, throttling)")]
    if healthy:
        uuids = all(g.uuid for g in healthy)
        value = ",".join(str(g.uuid) if uuids else str(g.index) for g in healthy)
        fix.append(SetEnv(CUDA_VISIBLE_DEVICES, value, description=f"train on {_indices(healthy)} until this GPU is fixed"
                          + ("" if uuids else f" (indices in nvidia-smi's order: with {CUDA_DEVICE_ORDER}={PCI_BUS_ID})")))
    fix.append(Manual(f"see its verdicts again: doctor probe --gpu {gpu.index} --refresh -v"))
    return finding(BAD_GPU, Severity.ERROR, Category.GPU,
                   f"{gpu_label(gpu)} fails {len(ids)} probe(s) that pass on other GPUs: {_listed(ids)}",
                   ev, explanation, fix, subject=str(gpu.index))


def _listed(ids: Sequence[str], most: int = 6) -> str:
    """'a, b, c' or 'a, b, ... (+4 more)': a title stays one readable line when a GPU fails many probes."""
    return ", ".join(ids) if len(ids) <= most else ", ".join(ids[:most]) + f", ... (+{len(ids) - most} more)"


def _describe(gpu: GPU) -> str:
    """'index 1, NVIDIA H100 80GB HBM3, cc 9.0, UUID GPU-...'."""
    return f"index {gpu.index}, {gpu.name}, cc {gpu.cc}, UUID {gpu.uuid or 'unknown'}"


def _slow(by_probe: Dict[str, _Verdicts]) -> Dict[int, List[Tuple[str, float, float, List[GPU]]]]:
    """GPU index -> (probe, its time, the median of the same model's other GPUs, those GPUs) where it is much slower."""
    out: Dict[int, List[Tuple[str, float, float, List[GPU]]]] = {}
    for pid, verdicts in by_probe.items():
        if pid in NOT_COMPARED_TIMES:
            continue
        timed = [(g, r.time_ms) for g, r in verdicts if r.passed and r.time_ms is not None and r.time_ms >= 0]
        for g, t in timed:
            peers = [(o, ot) for o, ot in timed if o.index != g.index and (o.name, o.compute_capability) == (g.name, g.compute_capability)]
            if not peers:
                continue
            med = statistics.median(ot for _, ot in peers)
            if t > SLOW_RATIO * med and t - med >= SLOW_MIN_EXTRA_MS:
                out.setdefault(g.index, []).append((pid, t, med, [o for o, _ in peers]))
    return out


def _slow_gpu(gpu: GPU, items: List[Tuple[str, float, float, List[GPU]]]) -> Finding:
    """Warning: this GPU is much slower than the other GPUs of its model on some probes."""
    worst = max(items, key=lambda x: x[1] / x[2] if x[2] > 0 else float("inf"))
    ev: Dict[str, object] = {"GPU": _describe(gpu)}
    for pid, t, med, peers in items:
        ev[pid] = f"{t:.3g} ms here, median {med:.3g} ms on {_indices(peers)} ({_ratio(t, med)})"
    return finding(
        SLOW_GPU, Severity.WARN, Category.GPU,
        f"{gpu_label(gpu)} is slower than the other {gpu.name} GPUs: {len(items)} probe(s), worst {worst[0]} "
        f"{worst[1]:.3g} ms vs {worst[2]:.3g} ms ({_ratio(worst[1], worst[2])})", ev,
        f"The same probe on GPUs of the same model, timed the same way, side by side: here it took over {SLOW_RATIO:g}x "
        f"the median of the others and at least {SLOW_MIN_EXTRA_MS:g} ms more. Thermal or power throttling, a lower "
        "clock or power limit, a degraded PCIe or NVLink link, or another process on this GPU are the usual causes.",
        [Manual(f"look at its clocks and throttle reasons: nvidia-smi -q -i {gpu.uuid or gpu.index} -d PERFORMANCE,CLOCK,POWER,TEMPERATURE"),
         Manual("another process on it? nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv"),
         Manual(f"time it again undisturbed: doctor probe --gpu {gpu.index} --refresh --jobs 1")],
        subject=str(gpu.index))


def _ratio(t: float, median: float) -> str:
    """'9.8x' (a zero median, from a body that reported 0 ms, has no ratio)."""
    return f"{t / median:.1f}x" if median > 0 else "vs 0 ms"


def _environment(by_probe: Dict[str, _Verdicts], everywhere: List[str], facts: Facts,
                 matrix: Optional[Matrix]) -> List[Finding]:
    """Probes that failed on every GPU they ran on: `doctor probe`'s own findings (with their fixes), naming the GPUs."""
    if not everywhere:
        return []
    # one verdict per probe: a pass where any GPU passed (the fixes look at what passed), else the first failure
    rep = [next((r for _, r in v if r.passed), v[0][1]) for v in by_probe.values() if v]
    out = []
    for f in probe_findings(rep, facts, matrix):
        pid = f.id[len("probe."):]
        if f.id == SUMMARY or pid not in everywhere:
            continue
        on = "; ".join(f"GPU {g.index}: {r.status}" for g, r in by_probe[pid])
        out.append(f._replace(title=f"{f.title} on every GPU it ran on", evidence=f.evidence + (("GPUs", on),)))
    return out


def _summary(all_run: AllGpuRun, by_probe: Dict[str, _Verdicts], bad: Dict[int, List[Tuple[ProbeResult, List[GPU], int]]],
             everywhere: List[str]) -> Finding:
    """One line over every GPU: what passed everywhere, what failed where."""
    n = len(all_run.runs)
    ran = [pid for pid, v in by_probe.items() if v]
    if not ran:
        reason = next((r.detail for gr in all_run.runs for r in gr.run.results if r.detail), "")
        return finding(SUMMARY, Severity.INFO, Category.KERNELS, f"probes on {n} GPU(s): none ran, every probe was skipped",
                       {"first reason": reason or "none given"})
    clean = [pid for pid in ran if all(r.passed for _, r in by_probe[pid])]
    some = sorted({r.id for items in bad.values() for r, _, _ in items})
    title = f"probes on {n} GPU(s): {len(clean)} of {len(ran)} passed on every GPU they ran on"
    if some:
        title += f", {len(some)} failed on some GPUs only"
    if everywhere:
        title += f", {len(everywhere)} failed on every GPU"
    ev: Dict[str, object] = {}
    for gr in all_run.runs:
        rs = gr.run.results
        ev[gpu_label(gr.gpu)] = (f"{sum(r.passed for r in rs)} passed, {sum(r.status not in ('pass', 'skipped') for r in rs)} "
                                 f"failed, {sum(r.status == 'skipped' for r in rs)} skipped")
    return finding(SUMMARY, Severity.OK if len(clean) == len(ran) else Severity.INFO, Category.KERNELS, title, ev)
