"""The pins as files: a constraints file (pip -c / uv -c, and the hook's), a requirements file (pip -r), JSON.

A version string goes on a constraints line only when it stays one token there (`one_token`): pip reads
the rest of a line after whitespace, `;` or `#` as something else.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, List, Sequence

if TYPE_CHECKING:  # the records only; pins imports this module to offer these functions under its own name
    from doctor.resolve.pins import PinSet

SCHEMA_VERSION = 1  # of pins_document() / `doctor pin --format json`

_UNSAFE = re.compile(r"[\s;#\\]")  # what would end a version's token on a constraints line


def one_token(version: str) -> bool:
    """Whether a version string stays one token on a constraints line (no whitespace, `;`, `#` or backslash)."""
    return _UNSAFE.search(version) is None


def constraint_lines(ps: PinSet, header: Sequence[str] = ()) -> List[str]:
    """The pins as constraints-file lines pip and uv accept: `name<spec>  # reason (source)`, comments for the rest."""
    lines = [f"# {h}" for h in header]
    if ps.torch:
        lines.append(f"# known-good pins for torch {ps.torch}" + (f" (CUDA {ps.cuda})" if ps.cuda else "")
                     + (f", matrix {ps.matrix_version}" if ps.matrix_version else ""))
    if ps.index_url:
        lines.append(f"# torch-family builds of this variant come from --index-url {ps.index_url}")
    for p in ps.pins:
        where = f"; from {p.index_url}" if p.index_url and not p.kept else ""
        lines.append(f"{p.requirement}  # {_comment(p.reason)} ({p.source}{where})")
    for u in ps.unfit:
        lines.append(f"# {u.name}: no release fits: {_comment(u.why)}")
        lines.extend(f"#   alternative: {_comment(a)}" for a in u.alternatives)
    lines.extend(f"# note: {_comment(n)}" for n in ps.notes)
    return lines


def requirement_lines(ps: PinSet) -> List[str]:
    """The pins as requirements-file lines (`pip install -r`): the same pins, installing what they name."""
    lines = []
    if ps.index_url:
        lines.append(f"# install torch-family packages with --index-url {ps.index_url} (never --extra-index-url)")
    for p in ps.pins:
        lines.append(f"{p.requirement}  # {_comment(p.reason)} ({p.source})")
    return lines


def _comment(text: str) -> str:
    """One line of comment text."""
    return " ".join(str(text).split())


def pins_document(ps: PinSet) -> Dict[str, object]:
    """The pins as JSON-ready data (`doctor pin --format json`), with a schema_version."""
    return {
        "schema_version": SCHEMA_VERSION,
        "torch": ps.torch, "cuda": ps.cuda, "requested": ps.requested, "index_url": ps.index_url,
        "python": ps.python, "prefix": ps.prefix, "pip_version": ps.pip_version, "matrix_version": ps.matrix_version,
        "only": list(ps.only),
        "pins": [{"name": p.name, "specifier": p.specifier, "requirement": p.requirement, "reason": p.reason,
                  "source": p.source, "index_url": p.index_url, "kept": p.kept} for p in ps.pins],
        "unfit": [{"name": u.name, "why": u.why, "alternatives": list(u.alternatives)} for u in ps.unfit],
        "notes": list(ps.notes),
    }
