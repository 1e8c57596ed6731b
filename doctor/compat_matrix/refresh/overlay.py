"""The user-level matrix overlay: rows `doctor matrix refresh` derived, laid over the embedded data on load.

File: <the doctor's cache root>/matrix-overlay.json ($DOCTOR_CACHE_DIR, else the per-user cache directory,
~/.cache/tune-doctor on Linux). JSON, not TOML: it is machine-written, and json is C-accelerated on the
`doctor check` path. Shape (schema_version 1):

    {"format": "tune-doctor matrix overlay", "schema_version": 1, "doctor_version": "0.1.0",
     "written": "2026-12-01T14:40:00Z",
     "tables": {"xformers_torch": {"index_url": "...", "refreshed": "2026-12-01",
                                   "rows": [{"xformers": "0.0.35", "torch": ">=2.10", "wheel_torch": "2.10.0+cu128",
                                             "wheel_cuda": "12.8", "date": "2026-12-01",
                                             "source": "<wheel URL> (METADATA by HTTP Range)"}, ...]},
                "torch_triton": {..., "rows": [{"torch": "2.15.0", "triton": "~=3.9.0", "date": ..., "source": ...}]}}}

Every row carries the date it was read and its source (the wheel's URL and how it was read).

Merging (`overlaid`): the embedded rows stay as they are (curated, with notes; a release's metadata never
changes on the index); the overlay adds the releases the embedded data lacks and fills a missing
wheel_torch/wheel_cuda. When it adds anything, the matrix's data_version says so ("2026.11.22+refresh.2026-12-01"). `doctor check` only stats and reads this local file: it never waits for the
network. A malformed overlay is one warning line on stderr and is ignored; the embedded data stays.
Writing is atomic (temp file in the same directory, fsync, os.replace): a reader sees the old file or the new.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.envvars import DOCTOR_CACHE_DIR, HOME, XDG_CACHE_HOME

FORMAT = "tune-doctor matrix overlay"
SCHEMA_VERSION = 1
FILE_NAME = "matrix-overlay.json"
SOURCE_KEY = "REFRESH"  # the matrix source key of every overlay row
MAX_BYTES = 4 * 1024 * 1024  # an overlay is a few KB; anything this big is not one
# table -> (subject field, requirement field)
TABLES: Dict[str, Tuple[str, str]] = {"xformers_torch": ("xformers", "torch"), "torch_triton": ("torch", "triton")}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BUILD_RE = re.compile(r"^\d+\.\d+\.\d+\+cu\d{3,}$")
_CUDA_RE = re.compile(r"^\d+\.\d+$")


class OverlayError(Exception):
    """The overlay file is unreadable or malformed: one line naming the file and what is wrong."""


class OverlayRow(NamedTuple):
    """One row of an overlay table."""

    version: str  # the subject's release
    spec: str  # its requirement on the other package
    date: str  # YYYY-MM-DD it was read
    source: str  # the wheel's URL and how it was read
    wheel_torch: str = ""  # xformers_torch only
    wheel_cuda: str = ""


class Overlay(NamedTuple):
    """A parsed, validated overlay file."""

    path: str
    written: str
    tables: Mapping[str, Tuple[OverlayRow, ...]]
    index_urls: Mapping[str, str]  # table -> the index it was refreshed from
    refreshed: Mapping[str, str]  # table -> date


def cache_root() -> Path:
    """The doctor's cache root: $DOCTOR_CACHE_DIR, else the per-user cache directory (as doctor.cache.own has it).

    Repeated here because compat_matrix sits below cache (arrows point down); ~/.cache on plain Linux without
    importing platformdirs (the `doctor check` path), platformdirs everywhere else.
    """
    env = os.environ.get(DOCTOR_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    home = os.environ.get(HOME, "")
    if (sys.platform.startswith("linux") and not hasattr(sys, "getandroidapilevel") and os.path.isabs(home)
            and not os.environ.get(XDG_CACHE_HOME) and not os.environ.get("ANDROID_DATA")
            and not os.environ.get("ANDROID_ROOT")):
        return Path(os.path.expanduser("~/.cache"), "tune-doctor")
    import platformdirs  # lazy: only off the plain-Linux path

    return Path(platformdirs.user_cache_dir("tune-doctor", appauthor=False))


def overlay_path() -> Path:
    """Where the overlay lives (it may not exist)."""
    return cache_root() / FILE_NAME


def read_overlay(path: Path) -> Overlay:
    """Parse and validate an overlay file; OverlayError (one line) for anything wrong with it."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as e:
        raise OverlayError(f"{path}: unreadable ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise OverlayError(f"{path}: more than {MAX_BYTES} bytes: not an overlay")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise OverlayError(f"{path}: not JSON ({' '.join(str(e).split())})") from None
    return validate(doc, str(path))


def validate(doc: Any, where: str) -> Overlay:
    """An Overlay from a decoded JSON document, every field checked."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    def fail(key: str, why: str) -> OverlayError:
        return OverlayError(f"{where}: {key}: {why}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise fail("format", f"expected {FORMAT!r} (not an overlay file)")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise fail("schema_version", f"{doc.get('schema_version')!r} (this doctor reads {SCHEMA_VERSION})")
    tables = doc.get("tables")
    if not isinstance(tables, dict):
        raise fail("tables", "expected an object")
    out: Dict[str, Tuple[OverlayRow, ...]] = {}
    urls: Dict[str, str] = {}
    refreshed: Dict[str, str] = {}
    for table, body in tables.items():
        if table not in TABLES:
            raise fail(f"tables.{table}", f"unknown table (known: {', '.join(TABLES)})")
        subject, other = TABLES[table]
        if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
            raise fail(f"tables.{table}", "expected an object with a 'rows' list")
        urls[table] = _text(body, "index_url", f"tables.{table}", fail)
        refreshed[table] = _text(body, "refreshed", f"tables.{table}", fail, _DATE_RE)
        rows: List[OverlayRow] = []
        seen = set()
        for i, row in enumerate(body["rows"]):
            key = f"tables.{table}.rows[{i}]"
            if not isinstance(row, dict):
                raise fail(key, "expected an object")
            version = _text(row, subject, key, fail)
            try:
                v = Version(version)
            except InvalidVersion:
                raise fail(f"{key}.{subject}", f"invalid version {version!r}") from None
            if v in seen:
                raise fail(f"{key}.{subject}", f"duplicate release {version!r}")
            seen.add(v)
            spec = row.get(other)
            if not isinstance(spec, str):
                raise fail(f"{key}.{other}", "expected a specifier string")
            try:
                SpecifierSet(spec)
            except InvalidSpecifier:
                raise fail(f"{key}.{other}", f"invalid specifier {spec!r}") from None
            wheel_torch = _text(row, "wheel_torch", key, fail, _BUILD_RE, required=False)
            wheel_cuda = _text(row, "wheel_cuda", key, fail, _CUDA_RE, required=False)
            if bool(wheel_torch) != bool(wheel_cuda):
                raise fail(key, "wheel_torch and wheel_cuda go together")
            rows.append(OverlayRow(version, spec, _text(row, "date", key, fail, _DATE_RE), _text(row, "source", key, fail),
                                   wheel_torch, wheel_cuda))
        out[table] = tuple(rows)
    written = doc.get("written")
    return Overlay(where, written if isinstance(written, str) else "", out, urls, refreshed)


def _text(obj: Mapping[str, Any], key: str, where: str, fail: Any, pattern: Optional["re.Pattern[str]"] = None,
          required: bool = True) -> str:
    value = obj.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise fail(f"{where}.{key}", f"expected a non-empty string, got {value!r}")
    if value and pattern is not None and not pattern.match(value):
        raise fail(f"{where}.{key}", f"malformed value {value!r}")
    return value


def document(tables: Mapping[str, Sequence[OverlayRow]], index_urls: Mapping[str, str], refreshed: Mapping[str, str],
             written: str, doctor_version: str) -> Dict[str, Any]:
    """The JSON document of an overlay with these tables."""
    body: Dict[str, Any] = {}
    for table in sorted(tables):
        subject, other = TABLES[table]
        rows = []
        for r in sorted(tables[table], key=lambda r: _version_key(r.version)):
            d: Dict[str, str] = {subject: r.version, other: r.spec}
            if r.wheel_torch:
                d["wheel_torch"], d["wheel_cuda"] = r.wheel_torch, r.wheel_cuda
            d["date"], d["source"] = r.date, r.source
            rows.append(d)
        body[table] = {"index_url": index_urls[table], "refreshed": refreshed[table], "rows": rows}
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "doctor_version": doctor_version, "written": written,
            "tables": body}


def write_overlay(path: Path, doc: Mapping[str, Any]) -> None:
    """Write the overlay atomically: a temp file in the same directory, fsync, os.replace."""
    validate(json.loads(json.dumps(doc)), str(path))  # never write what the reader would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=1, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the overlay is plain data others on the box may read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _version_key(version: str) -> Tuple[int, Any]:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(version))
    except InvalidVersion:
        return (1, version)


# --- laying the overlay over a loaded Matrix (the loader's hook) ---------------------------------------------

_cache: Dict[Tuple[str, int, int, int], Any] = {}  # (path, mtime_ns, size, id(base)) -> Matrix
_warned: set = set()


def overlaid(base: Any) -> Any:
    """base (a Matrix) with the overlay's rows added when the overlay file exists and is valid; base otherwise."""
    path = overlay_path()
    try:
        st = os.stat(path)
    except OSError:
        return base  # no overlay (the usual case): one stat, nothing else
    key = (str(path), st.st_mtime_ns, st.st_size, id(base))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    try:
        merged = merge(base, read_overlay(path))
    except OverlayError as e:
        if key[:3] not in _warned:  # once per file version, not once per load
            _warned.add(key[:3])
            print(f"doctor: warning: matrix overlay ignored: {e} (the embedded matrix is used; "
                  "`doctor matrix refresh` writes a new one)", file=sys.stderr)
        return base
    _cache.clear()  # one overlay at a time: a rewritten file replaces the old entry
    _cache[key] = merged
    return merged


def clear_cache() -> None:
    """Forget merged matrices and warnings (tests, or after a refresh rewrote the overlay)."""
    _cache.clear()
    _warned.clear()


def merge(base: Any, overlay: Overlay) -> Any:
    """The Matrix with the overlay's rows for releases the embedded tables lack, and missing wheel builds filled."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from doctor.compat_matrix.model import Requirement

    changes: Dict[str, Any] = {}
    dates: List[str] = []
    for table, rows in overlay.tables.items():
        current = {Version(r.version): r for r in getattr(base, table)}
        added = False
        for row in rows:
            v = Version(row.version)
            have = current.get(v)
            if have is None:
                current[v] = Requirement(row.version, SpecifierSet(row.spec), SOURCE_KEY,
                                         wheel_torch=row.wheel_torch, wheel_cuda=row.wheel_cuda,
                                         wheel_source=SOURCE_KEY if row.wheel_torch else "")
                added = True
            elif row.wheel_torch and not have.wheel_torch:
                current[v] = have._replace(wheel_torch=row.wheel_torch, wheel_cuda=row.wheel_cuda, wheel_source=SOURCE_KEY)
                added = True
        if added:
            changes[table] = tuple(current[v] for v in sorted(current))
            if overlay.refreshed.get(table):
                dates.append(overlay.refreshed[table])
    if not changes:
        return base
    # The data differs from the shipped data of that version: say so wherever the version is shown (the check
    # header "matrix 2026.11.22+refresh.2026-12-01", pins, the service), so a report tells which rows it used.
    changes["data_version"] = f"{base.data_version}+refresh" + (f".{max(dates)}" if dates else "")
    sources = dict(base.sources)
    sources[SOURCE_KEY] = (f"doctor matrix refresh: Requires-Dist (and xformers' cpp_lib.json) read from the package "
                           f"index's Linux x86_64 wheels; each row's wheel and date are in {overlay.path}")
    return base._replace(sources=sources, **changes)
