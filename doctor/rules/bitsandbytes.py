"""bitsandbytes vs torch and the GPU."""

from __future__ import annotations

from typing import List

from doctor.actions import Manual
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import bitsandbytes_fix
from doctor.rules._common import cc_of, fmt_cc, gpu_label, satisfies, torch_version, version
from doctor.rules.requirements import requirement_on

CAT = Category.KERNELS


def check_bitsandbytes(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Torch requirement of the installed bitsandbytes, and what the GPU can run of it."""
    dist = facts.dist("bitsandbytes")
    if dist is None:
        return []
    bv = version(dist.version)
    tv = torch_version(facts)
    out: List[Finding] = []
    if bv is None:
        return [finding("bitsandbytes.bad-version", Severity.WARN, CAT, f"bitsandbytes has an unreadable version '{dist.version}'")]
    spec = requirement_on(dist, "torch")
    src = "bitsandbytes METADATA Requires-Dist"
    if spec is None:
        row = lookup.bnb_requirement(matrix, dist.version)
        spec, src = (str(row.spec), f"compat matrix ({row.source})") if row else (None, "")
    if spec and tv is not None:
        ev = {"bitsandbytes": dist.version, "torch": str(tv), "requires torch": spec, "from": src}
        if not satisfies(tv, spec):
            out.append(finding(
                "bitsandbytes.torch-mismatch", Severity.ERROR, CAT,
                f"bitsandbytes {dist.version} requires torch{spec}, torch {tv} is installed", ev,
                "Its CUDA library is loaded through torch; an unsupported torch fails at import or at the first 4-bit "
                "layer ('CUDA Setup failed', missing symbols).",
                bitsandbytes_fix(matrix, facts, tv)))
        else:
            out.append(finding("bitsandbytes.torch", Severity.OK, CAT, f"bitsandbytes {dist.version} supports torch {tv}", ev))
    base, int8 = lookup.feature(matrix, "bitsandbytes"), lookup.feature(matrix, "bitsandbytes_int8")
    for gpu in facts.hardware.gpus:
        cc = cc_of(gpu, matrix)
        if cc is None:
            continue
        ev = {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "bitsandbytes": dist.version}
        if not lookup.feature_supported(matrix, base.name, cc):
            out.append(finding("bitsandbytes.arch", Severity.ERROR, CAT,
                               f"bitsandbytes has no kernels for {gpu_label(gpu)} (cc {fmt_cc(cc)} < {fmt_cc(base.min_cc)})",
                               {**ev, "needs": f"cc >= {fmt_cc(base.min_cc)} ({base.note}; {base.source})"},
                               f"Index wheels of bitsandbytes 0.48+ are built for cc >= {fmt_cc(base.min_cc)}.",
                               [Manual(f"use a GPU with cc >= {fmt_cc(base.min_cc)} or train without quantization")],
                               subject=str(gpu.index)))
        elif not lookup.feature_supported(matrix, int8.name, cc):
            out.append(finding("bitsandbytes.no-int8", Severity.INFO, CAT,
                               f"{gpu_label(gpu)} (cc {fmt_cc(cc)}): LLM.int8() needs cc >= {fmt_cc(int8.min_cc)}; "
                               "NF4/FP4 and 8-bit optimizers work",
                               {**ev, "LLM.int8() needs": f"cc >= {fmt_cc(int8.min_cc)} ({int8.source})"},
                               subject=str(gpu.index)))
    return out
