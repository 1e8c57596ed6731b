"""The matrix data directory: which files make up schema 1, and reading/parsing one of them.

Every problem is ONE `DoctorError` line starting with PREFIX and naming the file, e.g.
`matrix data error: pairs.toml: invalid TOML: ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Tuple

from doctor.errors import DoctorError

SCHEMA = 1
PREFIX = "matrix data error"
DEFAULT_DIR = Path(__file__).parent / "data"

# Every file the schema-1 matrix consists of, in load order (pairs.toml after xformers_torch.toml:
# it is checked against it).
FILES: Tuple[str, ...] = (
    "xformers_torch.toml",
    "torch_triton.toml",
    "torch_cuda.toml",
    "cuda_driver.toml",
    "torch_cuda_archs.toml",
    "gpu_features.toml",
    "bitsandbytes_torch.toml",
    "known_issues.toml",
    "pairs.toml",
    "gpu_names.toml",
    "notes.toml",
    "unsloth_runtime.toml",
    "optional_runtime.toml",
    "bitsandbytes_libs.toml",
)


def toml():  # type: ignore[no-untyped-def]
    """tomllib (tomli before 3.11), imported only when a TOML file must really be parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib
    return tomllib


def one_line(text: str) -> str:
    """Collapse any line breaks so an error is always exactly one line."""
    return " ".join(text.split())


def read_bytes(path: Path) -> bytes:
    """One data file's bytes; a missing or unreadable file is one DoctorError line."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DoctorError(f"{PREFIX}: {path.name}: missing") from None
    except OSError as e:
        raise DoctorError(one_line(f"{PREFIX}: {path.name}: unreadable ({e.strerror or e})")) from None


def parse(name: str, raw: bytes) -> Dict[str, Any]:
    """Parse one TOML document; any decoding or syntax problem is one DoctorError line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DoctorError(f"{PREFIX}: {name}: not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
    tomllib = toml()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DoctorError(one_line(f"{PREFIX}: {name}: invalid TOML: {e}")) from None
