"""torch's build as read from torch/version.py: readable, a real version, and consistent with its distribution metadata."""

from __future__ import annotations

from typing import List, Optional

from doctor.actions import Action
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.versions import parse_torch_version
from doctor.facts import Distribution, Facts, TorchBuild
from doctor.findings import Category, Finding, Severity, finding
from doctor.remedies import reinstall
from doctor.rules._common import release

CAT = Category.TORCH


def check_torch_build(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Report torch's build, an unreadable version.py or version, or files that disagree with the dist-info."""
    dist = facts.dist("torch")
    b = facts.torch
    if dist is None and b is None:
        return []
    if b is None or b.error:
        return [_unreadable_build(dist, b, matrix)]
    fv, mv = parse_torch_version(b.version), parse_torch_version(dist.version) if dist else None
    if fv is None or (dist is not None and mv is None):
        return [_bad_version(dist, b, matrix)]
    ev = {"torch": b.version or "?", "CUDA": b.cuda or "none", "ROCm": b.hip or "none", "git": (b.git_version or "")[:12],
          "version.py": b.path or "?", "metadata version": dist.version if dist else "no dist-info"}
    if mv is not None and release(fv) != release(mv):
        return [finding("torch.partial-install", Severity.ERROR, CAT,
                        f"torch files are {b.version} but its metadata says {dist.version}", ev,  # type: ignore[union-attr]
                        "An interrupted upgrade or two installs on top of each other: pip, the doctor and the import "
                        "disagree about which torch this is.",
                        [reinstall("torch", b.version, matrix.torch_index_url)])]
    kind = f"CUDA {b.cuda}" if b.cuda else (f"ROCm {b.hip}" if b.hip else "CPU only")
    return [finding("torch.build", Severity.OK, CAT, f"torch {b.version} ({kind})", ev)]


def _unreadable_build(dist: Optional[Distribution], b: Optional[TorchBuild], matrix: Matrix) -> Finding:
    """torch/version.py missing, unreadable (permission denied is said as such) or not plain literals."""
    error = (b.error if b else None) or "torch/version.py missing"
    fix: List[Action] = [reinstall("torch", dist.version, matrix.torch_index_url)] if dist else []
    return finding(
        "torch.build-unreadable", Severity.WARN, CAT, f"torch is installed but its build file could not be read: {error}",
        {"torch (metadata)": dist.version if dist else "?", "dist-info in": (dist.location if dist else None) or "?",
         "path": (b.path if b else None) or "not found", "error": error},
        "torch's metadata is there but torch/version.py (its version and CUDA build) is not readable: the install is "
        "incomplete or damaged, or this user may not read it. CUDA and driver checks use the metadata version only.",
        fix)


def _bad_version(dist: Optional[Distribution], b: TorchBuild, matrix: Matrix) -> Finding:
    """A version torch could not have ('abc', a label posing as a CUDA variant): say what was read and where."""
    read: List[str] = []
    if parse_torch_version(b.version) is None:
        read.append(f"'{b.version}' in {b.path or 'torch/version.py'}")
    if dist is not None and parse_torch_version(dist.version) is None:
        read.append(f"'{dist.version}' in its metadata ({dist.location or '?'})")
    # reinstall what is readable (the same release and build); else a manual step, never a pip line from garbage
    good = next((raw for raw in (dist.version if dist else None, b.version) if parse_torch_version(raw) is not None), b.version)
    return finding(
        "torch.bad-version", Severity.WARN, CAT, "torch's version is unreadable: " + "; ".join(read),
        {"version.py": b.path or "?", "__version__": b.version or "?", "metadata version": dist.version if dist else "no dist-info",
         "dist-info in": (dist.location if dist else None) or "?"},
        "Not a version a torch release or a local build has (PEP 440 with a +cuXYZ / +cpu / +rocm label, or a source-build "
        "label): checks that depend on torch's version were skipped, and no fix is built from it.",
        [reinstall("torch", good, matrix.torch_index_url)])
