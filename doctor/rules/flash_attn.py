"""flash-attn vs the GPU and the torch it was built for (as far as metadata tells)."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from doctor._util.regex import lazy
from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.facts import Distribution, Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import drop_flash_attn, rebuild_flash_attn
from doctor.rules._common import cc_of, fmt_cc, gpu_label, minor, torch_version, version

CAT = Category.KERNELS
# Release wheels are named per torch/CUDA/ABI: flash_attn-2.6.3+cu123torch2.4cxx11abiFALSE-cp310-...whl
BUILD_TAG = lazy(r"cu(?P<cuda>\d+)torch(?P<torch>\d+\.\d+)(?:cxx11abi(?P<abi>TRUE|FALSE))?", re.IGNORECASE)


def built_for(dist: Distribution) -> Optional[Tuple[str, str, str]]:
    """(cuda major tag, torch minor, where seen) from the version's local label or the direct_url wheel name."""
    places = [("version", dist.version)]
    url = (dist.direct_url or {}).get("url")
    if isinstance(url, str):
        places.append(("install URL", url.rsplit("/", 1)[-1]))
    for where, text in places:
        m = BUILD_TAG.search(text or "")
        if m:
            return m.group("cuda"), m.group("torch"), f"{where}: {text}"
    return None


def check_flash_attn(facts: Facts, matrix: Matrix) -> List[Finding]:
    """FA2 needs the GPU floor of gpu_features.toml (cc 8.0) and a binary built for the installed torch minor."""
    dist = facts.dist("flash-attn")
    if dist is None:
        return []
    out: List[Finding] = []
    fv = version(dist.version)
    tv = torch_version(facts)
    if fv is not None and fv.release[0] == 2:
        fa2 = lookup.feature(matrix, "flash_attn_2")
        for gpu in facts.hardware.gpus:
            cc = cc_of(gpu, matrix)
            if cc is not None and not lookup.feature_supported(matrix, fa2.name, cc):
                out.append(finding(
                    "flash-attn.arch", Severity.ERROR, CAT,
                    f"flash-attn {dist.version} needs cc >= {fmt_cc(fa2.min_cc)}; {gpu_label(gpu)} is cc {fmt_cc(cc)}",
                    {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "flash-attn": dist.version,
                     "needs": f"cc >= {fmt_cc(fa2.min_cc)} ({fa2.source})"},
                    "FlashAttention-2 supports Ampere and newer only (Turing needs a separate fork): "
                    "attn_implementation='flash_attention_2' fails on this GPU.",
                    [drop_flash_attn()],
                    subject=str(gpu.index)))
    tag = built_for(dist)
    if tag and tv is not None:
        cuda, tminor, where = tag
        ev = {"flash-attn": dist.version, "built for torch": tminor, "built for CUDA": cuda, "seen in": where, "torch": str(tv),
              "torch CUDA": (facts.torch.cuda if facts.torch else None) or "none"}
        torch_cuda = (facts.torch.cuda or "") if facts.torch else ""
        bad = tminor != minor(tv) or (torch_cuda and not cuda.startswith(torch_cuda.split(".")[0]))
        if bad:
            out.append(finding(
                "flash-attn.torch-mismatch", Severity.ERROR, CAT,
                f"flash-attn {dist.version} was built for torch {tminor} / cu{cuda}, torch {tv} is installed", ev,
                "Its extension links against one torch's C++ ABI: importing it fails with 'undefined symbol'.",
                [drop_flash_attn("uninstall flash-attn"), rebuild_flash_attn()]))
        else:
            out.append(finding("flash-attn.torch", Severity.OK, CAT, f"flash-attn {dist.version} was built for torch {tminor}", ev))
    return out
