"""The real library file lists of bitsandbytes' Linux x86_64 wheels, as package files for stand-in wheels.

A stand-in bitsandbytes wheel (tests.wheels.build_wheel) carries the same libbitsandbytes_* members as the
real wheel of that release (recorded from the package index in tests/compat_matrix/recorded), with empty
payloads: the doctor lists them from the installed package directory exactly as it lists a real install.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

RECORDED = Path(__file__).resolve().parents[1] / "compat_matrix" / "recorded" / "bitsandbytes_wheel_files.json"


def bnb_members(version: str) -> List[str]:
    """The libbitsandbytes_* members ('bitsandbytes/libbitsandbytes_cuda121.so') of the real wheel of `version`."""
    wheels = json.loads(RECORDED.read_text(encoding="utf-8"))["wheels"]
    (names,) = wheels[version].values()  # file names; every one lives in the wheel's bitsandbytes/ directory
    return [f"bitsandbytes/{name}" for name in names]


def bnb_files(version: str) -> Dict[str, str]:
    """Package files for a stand-in wheel of `version`: its real library names, empty, plus __init__.py."""
    files = {name: "" for name in bnb_members(version)}
    files["bitsandbytes/__init__.py"] = f"__version__ = {version!r}\n"
    return files
