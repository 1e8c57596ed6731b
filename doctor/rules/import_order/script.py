"""Import order of a script or notebook file, read statically (ast), never run: check_script().

Imports are compared in execution order as far as the source tells: line order in a script, cell
order in a notebook; an import inside a def runs when the def is called, so an order that depends on
one is only a warning.
"""

from __future__ import annotations

import os
from typing import List

from doctor._util.files import read_bytes
from doctor.actions import Action, ReorderImports, RestartRuntime
from doctor.errors import DoctorError
from doctor.findings import Category, Finding, Severity, finding
from doctor.rules.import_order.liger import liger_findings
from doctor.rules.import_order.notebook import notebook_sites
from doctor.rules.import_order.patchers import IMPORT_TIME_PATCHERS
from doctor.rules.import_order.sites import first_sites, import_sites

# Far above any real script; notebooks carry their outputs (images), so the cap is generous. Past it the
# file is refused rather than parsed truncated.
_MAX_BYTES = 256 * 1024 * 1024


def _read_text(path: str) -> str:
    """The file's text as UTF-8 (a BOM is allowed), or a one-line DoctorError."""
    try:
        data = read_bytes(path, _MAX_BYTES + 1)  # non-blocking open: a FIFO or device is refused, never read
    except OSError as e:
        raise DoctorError(f"cannot read script {path}: {e.strerror or e}") from None
    if len(data) > _MAX_BYTES:
        raise DoctorError(f"cannot read script {path}: larger than {_MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DoctorError(f"cannot read script {path}: not UTF-8 (byte {e.start})") from None


def check_script(path: str) -> List[Finding]:
    """Check a script's (or notebook's) import order statically, without running it."""
    text = _read_text(path)
    notebook = path.lower().endswith(".ipynb")
    sites = notebook_sites(text, path) if notebook else import_sites(text, path)
    liger = [] if notebook else liger_findings(path, text)
    first = first_sites(sites)  # a later re-import of a loaded module changes nothing
    order = {id(s): i for i, s in enumerate(sites)}
    out: List[Finding] = []
    for p in IMPORT_TIME_PATCHERS:
        ps = first.get(p.name)
        if ps is None:
            continue
        before = [first[lib] for lib in p.patches if lib in first and order[id(first[lib])] < order[id(ps)]]
        late_call = False
        if not before and ps.in_function is not None and not any(s.name == p.name and s.in_function is None for s in sites):
            # The patcher is only imported inside a def: module-level imports of patched libraries run when
            # the script starts, before any call of that def, wherever they stand in the file.
            before = [s for s in sites if s.name in p.patches and s.in_function is None][:1]
            late_call = bool(before)
        if not before:
            continue
        before.sort(key=lambda s: order[id(s)])
        top = before[0]
        # Imports inside a def run only when it is called, usually after module-level code: if every
        # earlier import sits in another function, line order is a weak guess, so warn, do not fail.
        deferred = late_call or all(s.in_function is not None and s.in_function != ps.in_function for s in before)
        stmt = ps.statement or f"import {p.name}"
        fix: List[Action] = [
            ReorderImports(f"move `{stmt}` ({ps.where}) to module level above {top.where}" if late_call
                           else f"move `{stmt}` ({ps.where}) above {top.where}"),
        ]
        if notebook:
            fix.append(RestartRuntime())  # a kernel that ran the old order keeps unpatched classes
        out.append(
            finding(
                "imports.script-order",
                Severity.WARN if deferred else Severity.ERROR,
                Category.IMPORTS,
                f"{p.name} is imported after {', '.join(s.name for s in before)} in {os.path.basename(path)}",
                evidence={
                    "script": path,
                    "patcher": ps.label(),
                    "imported before it": ", ".join(s.label() for s in before),
                },
                explanation=(
                    f"{p.why}; whatever was imported before it keeps the unpatched code. "
                    f"Imports are compared in source order"
                    + (", cells in notebook order" if notebook else "")
                    + "; imports inside functions run when the function is called"
                    + (f" ({p.name} is imported only inside {ps.in_function}(); module-level imports run first unless it "
                       "is called above them)." if late_call else
                       " (all earlier ones here are inside functions, so this may be harmless)." if deferred else ".")
                ),
                fix=fix,
                subject=p.name,
            )
        )
    out.extend(liger)
    if out:
        return out
    found = [p.name for p in IMPORT_TIME_PATCHERS if p.name in first]
    return [
        finding(
            "imports.script-order",
            Severity.OK,
            Category.IMPORTS,
            (
                f"{', '.join(found)} imported before the libraries it patches"
                if found
                else "no import-time patching library imported"
            ),
            evidence={"script": path},
        )
    ]
