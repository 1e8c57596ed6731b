"""torch's build as read from torch/version.py: readable, and consistent with its distribution metadata."""

from __future__ import annotations

from typing import List

from doctor.compat_matrix.model import Matrix
from doctor.rules._common import reinstall, release, version
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding

CAT = Category.TORCH


def check_torch_build(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Report torch's build, an unreadable version.py, or files that disagree with the dist-info."""
    dist = facts.dist("torch")
    b = facts.torch
    if dist is None and b is None:
        return []
    if b is None or b.error:
        return [finding("torch.build-unreadable", Severity.WARN, CAT, "torch/version.py could not be read",
                        {"torch (metadata)": dist.version if dist else "?", "path": (b.path if b else None) or "not found",
                         "error": (b.error if b else None) or "torch/version.py missing"},
                        "The torch install is incomplete or damaged; CUDA and driver checks use the metadata version only.",
                        [reinstall("torch", dist.version, matrix.torch_index_url)] if dist else [])]
    ev = {"torch": b.version or "?", "CUDA": b.cuda or "none", "ROCm": b.hip or "none", "git": (b.git_version or "")[:12],
          "version.py": b.path or "?", "metadata version": dist.version if dist else "no dist-info"}
    fv, mv = version(b.version), version(dist.version) if dist else None
    if fv is not None and mv is not None and release(fv) != release(mv):
        return [finding("torch.partial-install", Severity.ERROR, CAT,
                        f"torch files are {b.version} but its metadata says {dist.version}", ev,
                        "An interrupted upgrade or two installs on top of each other: pip, the doctor and the import "
                        "disagree about which torch this is.",
                        [reinstall("torch", b.version, matrix.torch_index_url)])]
    kind = f"CUDA {b.cuda}" if b.cuda else (f"ROCm {b.hip}" if b.hip else "CPU only")
    return [finding("torch.build", Severity.OK, CAT, f"torch {b.version} ({kind})", ev)]
