"""The torch build the pins are for: the installed one, or the build --torch/--cuda ask for.

An asked-for build is checked against the matrix (a full release, a PyTorch index variant that exists
for that minor, --torch and --cuda agreeing); bad input is a DoctorError (exit 3). What the matrix cannot
check is said in a note, never guessed.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.versions import minor_of, parse_torch_version, release_of, torch_variant
from doctor.errors import DoctorError
from doctor.facts import Facts
from doctor.resolve.pin_files import one_token


class TorchTarget(NamedTuple):
    """The torch build the pins are for."""

    version: Optional[Version]  # parsed, local label included
    text: Optional[str]  # the exact version string pinned with ===
    cuda: Optional[str]  # "12.8"; None: CPU or unknown
    cuda_known: bool
    tag: Optional[str]  # PyTorch index variant ("cu128", "cpu"); None: the default index's plain wheel
    requested: bool  # True: asked for with --torch/--cuda; False: the installed build

    @property
    def cpu(self) -> bool:
        """A CPU build (by its variant, or a build whose CUDA is known to be none): no CUDA package runs on it."""
        return self.tag == "cpu" or (self.cuda is None and self.cuda_known)


def torch_target(facts: Facts, matrix: Matrix, torch: Optional[str], cuda: Optional[str], notes: List[str]) -> TorchTarget:
    """The installed torch, or the build --torch/--cuda ask for (validated against the matrix)."""
    from doctor.remedies import torch_cuda

    if torch is None and cuda is None:
        raw = facts.version_of("torch")
        tv = parse_torch_version(raw)
        if raw is None:
            return TorchTarget(None, None, None, True, None, False)
        if tv is None or not one_token(raw):
            notes.append(f"the installed torch version {raw!r} is unreadable: torch is not pinned")
            return TorchTarget(None, None, None, False, None, False)
        c, known = torch_cuda(facts)
        return TorchTarget(tv, str(tv), c, known, torch_variant(tv), False)
    if torch is None:  # --cuda alone: the installed release, built for that CUDA
        tv = parse_torch_version(facts.version_of("torch"))
        if tv is None:
            raise DoctorError("--cuda needs --torch VER when no readable torch is installed")
        torch = str(release_of(tv))
    tv = parse_torch_version(torch.strip())
    if tv is None or tv.is_devrelease or not one_token(torch):
        raise DoctorError(f"--torch {torch!r}: not a torch version (e.g. 2.8.0, 2.8.0+cu128)")
    if len(tv.release) < 3:
        raise DoctorError(f"--torch {torch}: give the full release (e.g. {minor_of(tv)}.0): builds are per release")
    label = torch_variant(tv)
    if tv.local and label is None:
        raise DoctorError(f"--torch {torch}: '+{tv.local}' is no PyTorch index variant (e.g. +cu128, +cpu)")
    tag = _cuda_arg(cuda) if cuda is not None else label
    if label is not None and tag != label:
        raise DoctorError(f"--torch {torch} and --cuda {cuda} disagree ({label} vs {tag})")
    rel = release_of(tv)
    if tag is None:  # the plain wheel of the default index: its CUDA is the matrix's default for the minor
        c = lookup.default_cuda_for(matrix, rel)
        if c is None:
            notes.append(f"the matrix does not know which CUDA the plain torch {rel} wheel is built for")
        return TorchTarget(rel, str(rel), c, c is not None, None, True)
    if tag != "cpu":
        variants = lookup.cuda_variants_for(matrix, rel)
        if variants and tag not in variants:
            raise DoctorError(f"torch {minor_of(rel)} has no {tag} build on the PyTorch index "
                              f"(it has {', '.join(variants)}, cpu)")
        if not variants:
            notes.append(f"the matrix lists no CUDA builds of torch {minor_of(rel)}: {tag} is not checked against it")
    text = f"{rel}+{tag.replace('-', '.')}"
    return TorchTarget(Version(text), text, lookup.cuda_from_tag(tag), True, tag, True)


def _cuda_arg(cuda: str) -> str:
    """--cuda as an index variant: '12.8' / 'cu128' -> 'cu128', 'cpu' / 'none' -> 'cpu'; DoctorError otherwise."""
    text = cuda.strip().lower()
    if text in ("cpu", "none"):
        return "cpu"
    try:
        return lookup.cuda_tag(text)
    except ValueError:
        raise DoctorError(f"--cuda {cuda!r}: not a CUDA version (e.g. 12.8, cu128, cpu)") from None
