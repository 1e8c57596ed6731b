"""Probe verdicts -> Findings: every non-pass verdict with its evidence and, where one exists, the fix."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from doctor.actions import Action, Manual
from doctor.compat_matrix.model import TORCH_INDEX_URL, Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import drop_flash_attn, drop_xformers, rebuild_flash_attn, reinstall, torch_version, xformers_cuda_arg, xformers_install
from doctor.verdicts import ProbeResult

# (id prefix, severity when it fails, report section): what a failure means for a training run.
IMPACT = (
    ("cuda.", Severity.ERROR, Category.GPU),
    ("matmul.", Severity.ERROR, Category.GPU),
    ("triton.", Severity.ERROR, Category.KERNELS),
    ("torch.compile", Severity.WARN, Category.TORCH),
    ("sdpa.", Severity.WARN, Category.KERNELS),
    ("xformers.", Severity.ERROR, Category.KERNELS),
    ("flash_attn.", Severity.ERROR, Category.KERNELS),
    ("bnb.", Severity.ERROR, Category.KERNELS),
    ("dispatch.", Severity.ERROR, Category.KERNELS),
)


def _impact(probe_id: str) -> Tuple[Severity, Category]:
    """(severity, category) for a failing probe."""
    for prefix, sev, cat in IMPACT:
        if probe_id.startswith(prefix):
            return sev, cat
    return Severity.WARN, Category.KERNELS


def _fix(r: ProbeResult, facts: Facts, results: Sequence[ProbeResult], matrix: Optional[Matrix]) -> List[Action]:
    """The fix for a failed probe, where one is known."""
    sdpa_ok = [x.backend for x in results if x.id.startswith("sdpa.") and x.passed]
    if r.id.startswith("xformers."):
        acts: List[Action] = []
        tv = torch_version(facts)
        if matrix is not None and tv is not None:
            install = xformers_install(matrix, tv, facts.version_of("xformers"), xformers_cuda_arg(facts))
            acts = [install] if install is not None else []
        why = f"uninstall xformers; SDPA passed ({', '.join(sdpa_ok)}) and is used instead" if sdpa_ok else "uninstall xformers"
        return acts + [drop_xformers(why)]
    if r.id.startswith("flash_attn."):
        return [drop_flash_attn("remove flash-attn; attn_implementation='sdpa' works" + (f" ({', '.join(sdpa_ok)} passed)" if sdpa_ok else "")),
                rebuild_flash_attn("or rebuild it against the installed torch")]
    if r.id.startswith("bnb."):
        return [reinstall("bitsandbytes", facts.version_of("bitsandbytes"), matrix.torch_index_url if matrix else TORCH_INDEX_URL),
                Manual("if it still fails: bitsandbytes 0.50 bundles CUDA 11.8-13.2 libraries; check that torch's CUDA is one "
                       "of them (BNB_CUDA_VERSION overrides the pick)")]
    if r.id.startswith("triton."):
        return [Manual("check that the triton version matches torch's pin (see the matrix findings) and that the "
                       "Triton cache dir is writable (doctor cache status)")]
    if r.id.startswith("sdpa."):
        return [_pin_sdpa(sdpa_ok)]
    if r.id.startswith(("cuda.", "matmul.")):
        return [Manual("the GPU/driver/torch combination is broken: see the GPU & driver findings; reinstall torch for this driver")]
    return []


# SDPA probe backends -> the torch.nn.attention.SDPBackend member that selects them.
_SDP_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION",
                 "sdpa-cudnn": "CUDNN_ATTENTION", "sdpa-math": "MATH"}


def _pin_sdpa(passed: Sequence[str]) -> Manual:
    """What a user can do today when one SDPA backend fails: pin one that passed (torch would pick the failing one)."""
    pinnable = [b for b in passed if b in _SDP_BACKENDS]
    if not pinnable:
        return Manual("no SDPA backend passed on this GPU: load the model with attn_implementation='eager'")
    return Manual(f"pin attention to a backend that passed ({', '.join(passed)}): run training inside "
                  f"`with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.{_SDP_BACKENDS[pinnable[0]]}):`, "
                  "or load the model with attn_implementation='eager'")


def probe_findings(results: Sequence[ProbeResult], facts: Facts, matrix: Optional[Matrix] = None,
                   dispatch_table: Sequence = ()) -> List[Finding]:  # type: ignore[type-arg]
    """Findings for a probe run: one per failed probe, one summary, one per dispatch decision."""
    out: List[Finding] = []
    ran = [r for r in results if r.status != "skipped"]
    for r in ran:
        if r.passed:
            continue
        sev, cat = _impact(r.id)
        ev = {"probe": r.id, "status": r.status, "detail": r.detail}
        if r.error is not None:
            ev["error vs reference"] = f"{r.error:.3g} (tolerance {r.tolerance:.3g})" if r.tolerance is not None else f"{r.error:.3g}"
        if r.stderr_tail:
            ev["stderr (tail)"] = "\n".join(r.stderr_tail.strip().splitlines()[-6:])
        out.append(finding(
            f"probe.{r.id}", sev, cat, f"probe {r.id}: {r.status}" + (f" ({r.backend})" if r.backend else ""), ev,
            "Run on this GPU in an isolated process and compared with a higher-precision reference: "
            + {"wrong-result": "it ran but computed the wrong numbers.",
               "crash": "the process died (a broken extension or a CUDA fault).",
               "timeout": "it did not finish in time (hang or deadlock).",
               "error": "it raised instead of computing."}.get(r.status, r.status),
            _fix(r, facts, results, matrix), subject=r.id))
    passed = [r.id for r in ran if r.passed]
    if ran:
        out.append(finding("probe.summary", Severity.OK if len(passed) == len(ran) else Severity.INFO, Category.KERNELS,
                           f"probes: {len(passed)} of {len(ran)} passed on the GPU",
                           {"passed": ", ".join(passed) or "none",
                            "skipped": ", ".join(f"{r.id} ({r.detail})" for r in results if r.status == "skipped") or "none"}))
    for c in dispatch_table or ():
        if c.op != "attention" and c.backend == "torch":
            continue  # ops without Triton backends yet: nothing to say
        out.append(finding(f"dispatch.{c.op}", Severity.INFO, Category.KERNELS, f"dispatch: {c.op} -> {c.backend} ({c.reason})",
                           {b: f"{st}" + (f", {t:.3g} ms" if t is not None else "") for b, st, t in c.candidates}, subject=c.op))
    return out
