"""Builders of real files on disk for the inventory tests: site-packages folders, fake packages, fake tools."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path
from typing import Iterable, Optional, Union

_DEFAULT = object()


def write_dist(
    site: Path,
    name: str,
    version: str,
    *,
    metadata: Union[str, bytes, None, object] = _DEFAULT,
    requires: Iterable[str] = (),
    installer: Optional[str] = "pip",
    direct_url: Union[str, dict, None] = None,
    dirname: Optional[str] = None,
    body: str = "A long description.\n",
) -> Path:
    """Create `<site>/<name>-<version>.dist-info` with METADATA (or the given raw metadata; None = no file)."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / (dirname or f"{name.replace('-', '_')}-{version}.dist-info")
    info.mkdir()
    if metadata is _DEFAULT:
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {r}" for r in requires]
        metadata = "\n".join(lines) + "\n\n" + body
    if metadata is not None:
        data = metadata if isinstance(metadata, bytes) else str(metadata).encode("utf-8")
        (info / "METADATA").write_bytes(data)
    if installer is not None:
        (info / "INSTALLER").write_text(installer + "\n")
    if direct_url is not None:
        text = direct_url if isinstance(direct_url, str) else json.dumps(direct_url)
        (info / "direct_url.json").write_text(text)
    return info


def write_executable(path: Path, script: str) -> Path:
    """A small /bin/sh script, executable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script).lstrip())
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


TORCH_VERSION_PY_CPU = """\
from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'rocm', 'xpu']
__version__ = '2.13.0+cpu'
debug = False
cuda: Optional[str] = None
git_version = 'cf30153c4c131c8164ee7798e5022d810682e2cb'
hip: Optional[str] = None
rocm: Optional[str] = None
xpu: Optional[str] = None
"""

TORCH_VERSION_PY_CUDA = TORCH_VERSION_PY_CPU.replace("2.13.0+cpu", "2.13.0+cu130").replace(
    "cuda: Optional[str] = None", "cuda: Optional[str] = '13.0'"
)

CPP_LIB_JSON = {
    "version": {"cuda": 1208, "hip": None, "torch": "2.10.0+cu128", "python": "3.10.19"},
    "env": {"TORCH_CUDA_ARCH_LIST": "7.5 8.0+PTX 8.0 9.0a", "PYTORCH_ROCM_ARCH": None, "XFORMERS_BUILD_TYPE": "Release"},
}


def write_torch(site: Path, version_py: Union[str, bytes] = TORCH_VERSION_PY_CPU, dist_version: str = "2.13.0+cpu") -> Path:
    """A torch dist-info plus torch/version.py (no importable torch: __init__ raises)."""
    write_dist(site, "torch", dist_version)
    pkg = site / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('the doctor must never import torch')\n")
    data = version_py if isinstance(version_py, bytes) else version_py.encode("utf-8")
    (pkg / "version.py").write_bytes(data)
    return pkg / "version.py"


def write_xformers(site: Path, cpp_lib: Union[str, dict, None] = None, dist_version: str = "0.0.35") -> Path:
    """An xformers dist-info plus xformers/cpp_lib.json (None: the file is left out)."""
    write_dist(site, "xformers", dist_version)
    pkg = site / "xformers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('the doctor must never import xformers')\n")
    path = pkg / "cpp_lib.json"
    if cpp_lib is not None:
        path.write_text(cpp_lib if isinstance(cpp_lib, str) else json.dumps(cpp_lib))
    return path



def is_root() -> bool:
    """True when permission bits do not stop us (root, or an OS without geteuid)."""
    return not hasattr(os, "geteuid") or os.geteuid() == 0
