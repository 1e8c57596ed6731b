"""Build small real wheels and install them with pip, so tests see genuine installed distributions.

A wheel built here is a valid wheel (METADATA, WHEEL, RECORD) installed by the real pip with --no-deps;
the doctor reads it exactly as it reads one from the package index.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

PIP_TIMEOUT = 600


def build_wheel(
    out_dir: Path,
    name: str,
    version: str,
    requires: Sequence[str] = (),
    files: Optional[Dict[str, str]] = None,
) -> Path:
    """Write `name-version-py3-none-any.whl` with the given Requires-Dist lines and package files."""
    dist = name.replace("-", "_")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    meta = [f"Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    members: Dict[str, str] = dict(files or {})
    members.setdefault(f"{dist}/__init__.py", f"__version__ = {version!r}\n")
    members[f"{info}/METADATA"] = "\n".join(meta) + "\n\n"
    members[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: tune-doctor-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for arc, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in members.items():
            zf.writestr(arc, text)
    return path


def pip(*args: str, python: Optional[str] = None) -> None:
    """Run pip (for another interpreter with --python) and fail loudly with its output."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if python:
        cmd += ["--python", python]
    cmd += list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    if res.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")


def install_target(target: Path, wheels: Iterable[Path | str]) -> Path:
    """pip install --no-deps --target TARGET the given wheel files or requirement strings."""
    target.mkdir(parents=True, exist_ok=True)
    pip("install", "--no-deps", "--no-compile", "--target", str(target), *[str(w) for w in wheels])
    return target


def download(dest: Path, *requirements: str) -> Dict[str, Path]:
    """Download real wheels (no deps) once into a cache folder; returns requirement -> file."""
    dest.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Path] = {}
    for req in requirements:
        name, _, ver = req.partition("==")
        stem = name.replace("-", "_").lower()
        hits = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{ver}-".lower())]
        if not hits:
            pip("download", "--no-deps", "--only-binary=:all:", "-d", str(dest), req)
            hits = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{ver}-".lower())]
        if not hits:
            raise RuntimeError(f"no wheel for {req} in {dest}")
        out[req] = hits[0]
    return out
