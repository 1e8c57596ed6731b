"""Liger's call order: apply_liger_kernel_to_*() must run before the model is built (or be given model=).

Liger patches transformers' modeling classes when the apply call runs, not when it is imported (see
patchers.NOT_IMPORT_ORDER_SENSITIVE), so this reads calls from a script's ast, never imports.
"""

from __future__ import annotations

import ast
import os
from typing import List, Optional, Tuple

from doctor.actions import ReorderImports
from doctor.findings import Category, Finding, Severity, finding


def liger_after_model(source: str) -> Optional[Tuple[int, int]]:
    """(line of the first model creation, line of a later apply_liger_kernel_to_*() without model=), or None.

    Liger patches transformers' modeling classes when apply_liger_kernel_to_*() is called, so a model built
    before the call keeps the unpatched modules (unless the call is given model=). Importing liger_kernel
    itself patches nothing, which is why this is about calls, not imports.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # check_script reports unparsable files
        return None
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
    created: Optional[int] = None
    for call in calls:
        f = call.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in ("from_pretrained", "from_config") and isinstance(f, ast.Attribute):
            owner = f.value.attr if isinstance(f.value, ast.Attribute) else f.value.id if isinstance(f.value, ast.Name) else ""
            if "Model" in owner and "Liger" not in owner and created is None:
                created = call.lineno
        elif name.startswith("apply_liger_kernel_to_") and created is not None:
            if not any(k.arg == "model" for k in call.keywords):
                return created, call.lineno
    return None


def liger_findings(path: str, source: str) -> List[Finding]:
    """A WARN when Liger's patch call comes after the model was built (scripts; notebooks are not checked)."""
    hit = liger_after_model(source)
    if hit is None:
        return []
    created, applied = hit
    return [finding(
        "imports.liger-order", Severity.WARN, Category.IMPORTS,
        f"apply_liger_kernel_to_*() is called after the model is created in {os.path.basename(path)}",
        {"script": path, "model created": f"line {created}", "liger applied": f"line {applied}"},
        "Liger swaps transformers' modeling classes when the apply call runs; a model created before it keeps "
        "the original RMSNorm/RoPE/SwiGLU/cross-entropy modules, so training runs without Liger's kernels.",
        [ReorderImports(f"move the apply_liger_kernel_to_*() call (line {applied}) above line {created}, "
                        "or pass model=model to it")],
        subject="liger_kernel")]
