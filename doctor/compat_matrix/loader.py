"""Load the validated compatibility Matrix: the one entry point (load_matrix), cached per data directory.

Reading and parsing the files is doctor.compat_matrix.files, the pre-parsed copy compiled.json is
doctor.compat_matrix.compiled, the one-line checks are doctor.compat_matrix.document, and each file's
rows become model records in doctor.compat_matrix.tables. Every problem is ONE `DoctorError` line
naming the file, row and key, e.g.
`matrix data error: xformers_torch.toml: requirement[3].torch: invalid specifier '==2.0.x'`.
A Matrix is only returned when every file is valid.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Union

from doctor.compat_matrix.assemble import Builder
from doctor.compat_matrix.compiled import preparsed
from doctor.compat_matrix.document import Doc
from doctor.compat_matrix.files import DEFAULT_DIR, FILES, PREFIX, SCHEMA, one_line, parse, read_bytes
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.refresh import overlay
from doctor.compat_matrix.tables import LOADERS
from doctor.envvars import DOCTOR_MATRIX_DIR as ENV_VAR
from doctor.errors import DoctorError


def _load(directory: Path, origin: str = "") -> Matrix:
    """Read, validate and build the Matrix from one directory (no caching)."""
    if not directory.is_dir():
        raise DoctorError(one_line(f"{PREFIX}: {directory}: not a directory{origin}"))
    try:
        present = {p.name for p in directory.glob("*.toml")}
    except OSError as e:
        raise DoctorError(one_line(f"{PREFIX}: {directory}: unreadable ({e.strerror or e}){origin}")) from None
    for name in FILES:  # a missing file is reported before any content error
        if name not in present:
            raise DoctorError(f"{PREFIX}: {name}: missing")
    extra = sorted(present - set(FILES))
    if extra:  # a stray or misspelt file would otherwise be silently ignored
        raise DoctorError(f"{PREFIX}: {extra[0]}: unexpected file (schema {SCHEMA} has {len(FILES)} files)")

    raws = {name: read_bytes(directory / name) for name in FILES}
    parsed = preparsed(directory, raws)
    builder = Builder()
    for name in FILES:
        doc = Doc(name, parsed[name] if parsed is not None else parse(name, raws[name]))
        try:
            builder.header(doc)
            LOADERS[name](doc, builder)
        except DoctorError:
            raise
        except Exception as e:  # a validation gap must still be one line, never a traceback
            raise DoctorError(one_line(f"{PREFIX}: {name}: {type(e).__name__}: {e}")) from e
    return builder.matrix()


@functools.lru_cache(maxsize=None)
def _load_cached(directory: Path, origin: str) -> Matrix:
    """The default matrix, loaded once per process per resolved directory."""
    return _load(directory, origin)


def _resolve(path: Union[str, Path]) -> Path:
    """Absolute, symlink-free form of a data directory (the cache key)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop on older Pythons
        raise DoctorError(one_line(f"{PREFIX}: {path}: unreadable ({e})")) from None


def load_matrix(data_dir: Optional[Union[Path, str]] = None) -> Matrix:
    """Load the validated Matrix from data_dir (default: $DOCTOR_MATRIX_DIR, or the bundled data + the refresh overlay).

    The overlay (`doctor matrix refresh`'s file in the doctor's cache root) is laid over the bundled data only:
    an explicit directory or $DOCTOR_MATRIX_DIR is a deliberate copy and is taken as it is. Reading it is a
    stat and, when it changed, one local JSON file; a malformed one is a warning line and the bundled data stays.
    """
    if data_dir is not None:
        return _load(_resolve(data_dir))  # explicit dirs are not cached: the refresh tool rewrites them
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _load_cached(_resolve(env), f" (from ${ENV_VAR})")
    return overlay.overlaid(_load_cached(DEFAULT_DIR, ""))


def clear_cache() -> None:
    """Forget cached default matrices (tests, or after the refresh tool rewrote the data or the overlay)."""
    _load_cached.cache_clear()
    overlay.clear_cache()
