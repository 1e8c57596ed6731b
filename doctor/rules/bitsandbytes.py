"""bitsandbytes vs torch and the GPU."""

from __future__ import annotations

from typing import List

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.rules._common import cc_of, fmt_cc, gpu_label, satisfies, torch_version, version
from doctor.rules.requirements import requirement_on
from doctor.facts import Facts
from doctor.findings import Action, Category, Finding, Severity, finding, manual, pip_install, pip_uninstall

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
    spec = requirement_on(dist, "torch", facts)
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
                _bnb_fix(matrix, facts, tv)))
        else:
            out.append(finding("bitsandbytes.torch", Severity.OK, CAT, f"bitsandbytes {dist.version} supports torch {tv}", ev))
    for gpu in facts.hardware.gpus:
        cc = cc_of(gpu, matrix)
        if cc is None:
            continue
        ev = {"GPU": gpu_label(gpu), "compute capability": fmt_cc(cc), "bitsandbytes": dist.version}
        if cc < (6, 0):
            out.append(finding("bitsandbytes.arch", Severity.ERROR, CAT,
                               f"bitsandbytes has no kernels for {gpu_label(gpu)} (cc {fmt_cc(cc)} < 6.0)", ev,
                               "Index wheels of bitsandbytes 0.48+ are built for cc >= 6.0.",
                               [manual("use a GPU with cc >= 6.0 or train without quantization")], subject=str(gpu.index)))
        elif cc < (7, 5):
            out.append(finding("bitsandbytes.no-int8", Severity.INFO, CAT,
                               f"{gpu_label(gpu)} (cc {fmt_cc(cc)}): LLM.int8() needs cc >= 7.5; NF4/FP4 and 8-bit optimizers work", ev,
                               subject=str(gpu.index)))
    return out


def _bnb_fix(matrix: Matrix, facts: Facts, tv) -> List[Action]:  # type: ignore[no-untyped-def]
    """The newest bitsandbytes range (matrix) whose torch and Python requirements this environment meets."""
    import sys

    py = version(facts.python.version) or version(".".join(map(str, sys.version_info[:3])))
    fits = [r for r in matrix.bitsandbytes_torch
            if satisfies(tv, r.spec) and (r.python is None or py is None or satisfies(py, r.python))]
    fix: List[Action] = []
    if fits:
        best = max(fits, key=lambda r: max((version(s.version) for s in r.versions if version(s.version)), default=version("0")))
        # --no-deps: bitsandbytes requires torch; pip must not replace the torch you have
        fix.append(pip_install(f"bitsandbytes{best.versions}", no_deps=True,
                               why=f"releases {best.versions} support torch{best.spec} ({best.source})"))
    else:
        fix.append(manual(f"no bitsandbytes release in the matrix supports torch {tv}: upgrade torch or remove bitsandbytes"))
    fix.append(pip_uninstall("bitsandbytes", why="or remove it if you do not quantize"))
    return fix
