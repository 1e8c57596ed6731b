"""tune-doctor: make a GPU fine-tuning environment known-good before training starts."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "check_imports"]


def check_imports(modules=None):  # type: ignore[no-untyped-def]
    """Import-order findings for this process (call it from a notebook cell); see doctor.rules.imports."""
    from doctor.rules.imports import check_imports as _check

    return _check(modules)
