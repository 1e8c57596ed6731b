"""Import order in a live process (a notebook kernel), read from `sys.modules`; nothing is imported.

How order is read from a live process. CPython's import machinery inserts a module into
sys.modules when its import starts, but `_load_unlocked` pops and re-inserts it when the import
finishes ("update the order of insertion into sys.modules for module clean-up at shutdown",
importlib/_bootstrap.py; seen on 3.9 to 3.13). So sys.modules key order is the order in which imports
FINISHED. A package that imports transformers inside its own __init__ therefore always comes
AFTER transformers in key order, whether or not the user imported transformers first (checked by
tests/rules/test_import_order_live.py with two small packages in subprocesses). Comparing the patcher's own
position is useless; we compare against its first *marker*: the earliest-finished submodule of
the patcher (or of a helper package only it imports). A submodule `unsloth.x` cannot start before
`unsloth` has started, so a patched library that finished before the first marker is taken as
imported before the patcher; one that finished after it was certainly imported after the patcher
started. The first case relies on the patcher finishing a plain marker module before it imports
transformers, which unsloth does (read in the released sources: 2025.3.14 imports `unsloth_zoo`,
whose __init__ is stdlib only, before `from .models import *`; 2026.10.9 first imports
`unsloth.fsdp2_launch`, stdlib only). Evidence names the basis used. When no marker is loaded at all
the rule falls back to the patcher's own position and only warns.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from doctor.actions import ReorderImports, RestartRuntime
from doctor.findings import Category, Finding, Severity, finding
from doctor.rules.import_order.patchers import IMPORT_TIME_PATCHERS, Patcher


def _import_first(p: Patcher) -> ReorderImports:
    """The generic 'import it first' step for one patcher."""
    return ReorderImports(f"put `import {p.name}` in the first cell / at the top, before {', '.join(p.patches)}")


def _first_marker(keys: Sequence[str], patcher: Patcher, patcher_pos: int) -> Tuple[int, str]:
    """Position and name of the earliest-finished marker module, else the patcher itself."""
    for i, key in enumerate(keys[:patcher_pos]):
        for m in patcher.markers:
            # `unsloth` itself is not a marker (it finishes last); its submodules and helpers are.
            if key.startswith(m + ".") or (key == m and m != patcher.name):
                return i, key
    return patcher_pos, patcher.name


def check_imports(modules: Optional[Mapping[str, object]] = None) -> List[Finding]:
    """Check a live process's import order (default: this one's sys.modules)."""
    mods = sys.modules if modules is None else modules
    keys = list(mods.keys())  # snapshot: other threads may import meanwhile
    pos: Dict[str, int] = {}
    for i, k in enumerate(keys):
        pos.setdefault(k, i)

    out: List[Finding] = []
    checked: List[str] = []
    for p in IMPORT_TIME_PATCHERS:
        if p.name not in pos:
            continue
        ppos = pos[p.name]
        bpos, bname = _first_marker(keys, p, ppos)
        checked.append(p.name)
        early = [lib for lib in p.patches if lib in pos and pos[lib] < bpos]
        if not early:
            continue
        exact = bname != p.name
        basis = (
            f"first {p.name} submodule to finish: {bname} (#{bpos})"
            if exact
            else f"{p.name} itself (#{ppos}); no {p.name} submodule loaded, order is approximate"
        )
        out.append(
            finding(
                "imports.patch-order",
                Severity.ERROR if exact else Severity.WARN,
                Category.IMPORTS,
                f"{', '.join(early)} imported before {p.name}: its patches are not applied",
                evidence={
                    "patcher": f"{p.name} (sys.modules #{ppos})",
                    "loaded before it": ", ".join(f"{lib} (#{pos[lib]})" for lib in early),
                    "order basis": basis,
                },
                explanation=(
                    f"{p.why}. Classes and functions that were already imported (and any names bound "
                    f"to them) keep the unpatched code, so training runs slower or uses more memory. "
                    f"Re-importing does not help: in a notebook, restart the runtime and import "
                    f"{p.name} first."
                ),
                fix=(RestartRuntime(), _import_first(p)),
                subject=p.name,
            )
        )
    if out:
        return out
    loaded = [lib for p in IMPORT_TIME_PATCHERS for lib in p.patches if lib in pos]
    if checked:
        title = f"{', '.join(checked)} imported before the libraries it patches"
    else:
        title = "no import-time patching library loaded in this process"
    return [
        finding(
            "imports.order",
            Severity.OK,
            Category.IMPORTS,
            title,
            evidence={
                "patchers loaded": ", ".join(checked) or "none",
                "patched libraries loaded": ", ".join(loaded) or "none",
            },
        )
    ]
