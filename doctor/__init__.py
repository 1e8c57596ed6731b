"""tune-doctor: make a GPU fine-tuning environment known-good before training starts.

The typed public face:

    import doctor
    report = doctor.check()            # the environment of this interpreter: a doctor.Report
    report.exit_code, report.findings  # 0 healthy, 1 warnings, 2 errors; the doctor.Finding records
    print(report)                      # the text report; in Jupyter the report displays as rich HTML
    report.to_json()                   # the same document as `doctor check --json`
    doctor.check_imports()             # this process's import order (a notebook cell), also a Report
    doctor.pin(hook=True)              # known-good pins, in force for every later pip/uv install (a PinResult)

Importing the package imports nothing but its version: every public name is loaded on first use
(PEP 562), so `import doctor.backends.attention` (or the runtime) in a training process never pays for
rich, the rules or the inventory.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Dict, List

from doctor._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from doctor.checkup import Report, check, check_imports
    from doctor.errors import DoctorError
    from doctor.findings import Category, Finding, Severity
    from doctor.report.pins import PinResult, pin

# public name -> the module that defines it (imported on first access)
_LAZY: Dict[str, str] = {
    "check": "doctor.checkup",
    "check_imports": "doctor.checkup",
    "Report": "doctor.checkup",
    "Finding": "doctor.findings",
    "Severity": "doctor.findings",
    "Category": "doctor.findings",
    "DoctorError": "doctor.errors",
    "pin": "doctor.report.pins",
    "PinResult": "doctor.report.pins",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Load a public name on first access; anything else is an AttributeError."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> List[str]:
    """The public names (loaded or not), the submodules already imported and the module's dunders; not the
    helpers this file imports for itself (typing names, importlib)."""
    submodules = {n for n, v in globals().items() if isinstance(v, ModuleType) and v.__name__.startswith(__name__ + ".")}
    return sorted(set(__all__) | submodules | {n for n in globals() if n.startswith("__")})
