"""Installed distributions over a list of path entries, read fast and without ever raising.

Discovery lists path entries the way importlib.metadata does (path order, .dist-info and
.egg-info; zip entries through importlib.metadata itself), but METADATA is parsed here: importlib's email-based parser reads
and parses the whole file, long description included, and is what makes a full scan slow. Only
the header block (up to the first blank line) is read and only Name, Version and Requires-Dist
are kept.

The first copy of a name on the path wins, like import does; later copies are recorded in the
winner's `shadowed`. Anything broken becomes a Distribution with `error` set (name and version
fall back to the .dist-info folder name), or, when not even a name can be found, a note.
"""

from __future__ import annotations

import json
import os
from typing import Collection, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor._util.regex import lazy
from doctor.facts import Distribution
from doctor._util.files import describe_os_error, read_bytes, read_text

# METADATA headers are a few KiB; the long description after them can be MiBs and is never read.
_HEADER_CHUNK = 8 * 1024
_HEADER_LIMIT = 4 * 1024 * 1024
_KEYS = frozenset({"name", "version", "requires-dist"})
_EGG_PY_TAG = lazy(r"-py\d+(\.\d+)*(-.*)?$")


class ScanResult(NamedTuple):
    """Distributions by canonical name (sorted), plus notes on what could not be read."""

    distributions: Dict[str, Distribution]
    notes: Tuple[str, ...] = ()


def scan_distributions(paths: Sequence[str]) -> ScanResult:
    """Every distribution installed on `paths`, first occurrence winning; never raises."""
    notes: List[str] = []
    entries = _unique_entries(paths, notes)
    winners: Dict[str, Distribution] = {}
    shadows: Dict[str, List[Tuple[str, str]]] = {}
    for dist, note in _discover(entries, notes):
        if note:
            notes.append(note)
        if dist is None:
            continue
        if dist.name in winners:
            shadows.setdefault(dist.name, []).append((dist.version, dist.location or "?"))
        else:
            winners[dist.name] = dist
    result = {}
    for name in sorted(winners):
        dist = winners[name]
        if name in shadows:
            dist = dist._replace(shadowed=tuple(shadows[name]))
        result[name] = dist
    return ScanResult(distributions=result, notes=tuple(notes))


def _unique_entries(paths: Sequence[str], notes: List[str]) -> List[str]:
    """Path entries in order, each real directory once (sys.path often lists one twice, or via a lib64 link)."""
    out: List[str] = []
    seen = set()
    for entry in paths:
        if not isinstance(entry, (str, os.PathLike)):
            continue
        entry = os.fspath(entry)
        if isinstance(entry, bytes):
            continue
        key = os.path.normcase(os.path.realpath(entry or "."))
        if key in seen:
            continue
        seen.add(key)
        if os.path.isdir(entry or ".") and not os.access(entry or ".", os.R_OK | os.X_OK):
            notes.append(f"cannot list path entry {entry!r}: permission denied")
        out.append(entry)
    return out


def _discover(entries: List[str], notes: List[str]) -> Iterator[Tuple[Optional[Distribution], Optional[str]]]:
    """(distribution, note) for each metadata folder on the path entries, in path order.

    Directories are listed with os.scandir, the way importlib.metadata's path finder does, without
    importing importlib.metadata (and email, zipfile, csv): that import alone was a tenth of a
    `doctor check`. Zip entries (eggs, zipapps) are rare and go through importlib.metadata.
    """
    for entry in entries:
        folder = entry or "."
        if os.path.isdir(folder):
            try:
                names = sorted(os.listdir(folder))  # sorted: a stable answer when one name is installed twice in one folder
            except OSError as exc:
                notes.append(f"cannot list path entry {entry!r}: {describe_os_error(exc)}")
                continue
            for name in names:
                low = name.lower()
                if low.endswith(".dist-info") or low.endswith(".egg-info"):
                    yield read_distribution(os.path.join(folder, name))
        elif os.path.isfile(folder):
            yield from _discover_zip(folder, notes)


def _discover_zip(entry: str, notes: List[str]) -> Iterator[Tuple[Optional[Distribution], Optional[str]]]:
    """Distributions inside a zip path entry, through importlib.metadata."""
    import importlib.metadata as importlib_metadata

    try:
        for ilm_dist in importlib_metadata.distributions(path=[entry]):
            yield _read_foreign(ilm_dist)
    except Exception as exc:  # a corrupt zip on sys.path must not end the check
        notes.append(f"cannot read distributions in {entry!r}: {exc.__class__.__name__}: {exc}")


def read_distribution(info_path: str) -> Tuple[Optional[Distribution], Optional[str]]:
    """Read one .dist-info / .egg-info (folder or legacy single file): (Distribution or None, note or None)."""
    base = os.path.basename(info_path.rstrip("/\\"))
    # Absolute, so a '' (current directory) path entry still says where the copy lives.
    location = os.path.abspath(os.path.dirname(info_path.rstrip("/\\")) or ".")
    errors: List[str] = []
    is_egg = base.lower().endswith(".egg-info")

    if is_egg and os.path.isfile(info_path):
        header_file = info_path  # distutils wrote PKG-INFO itself as the .egg-info file
        raw, err = _read_header_bytes(info_path)
        label = "PKG-INFO"
    else:
        label = "PKG-INFO" if is_egg else "METADATA"
        header_file = os.path.join(info_path, label)
        raw, err = _read_header_bytes(header_file)
    if err:
        errors.append(f"{label}: {err}")

    fields: Dict[str, List[str]] = {}
    if raw is not None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            errors.append(f"{label} is not valid UTF-8")
        fields = parse_metadata_header(text, _KEYS)

    display_name = _first(fields, "name")
    version = _first(fields, "version")
    if raw is not None and not display_name:
        errors.append(f"no Name in {label}")
    if raw is not None and version is None:
        errors.append(f"no Version in {label}")
    if display_name is None or version is None:  # fall back to what the folder name says
        dir_name, dir_version = name_version_from_dirname(base)
        display_name = display_name or dir_name
        version = (dir_version or "") if version is None else version
    name = canonicalize_name(display_name) if display_name else ""
    if not name:
        why = "; ".join(errors) or "no name"
        return None, f"skipped {info_path}: {why}"
    if version and not _is_pep440(version):
        errors.append(f"version {version!r} is not PEP 440")

    requires = tuple(fields.get("requires-dist", ()))
    if is_egg and not requires and header_file != info_path:
        requires = _egg_requires(info_path)

    installer = None
    direct_url: Optional[Mapping[str, object]] = None
    if header_file != info_path:
        installer = _read_installer(info_path)
        direct_url, url_error = _read_direct_url(info_path)
        if url_error:
            errors.append(url_error)

    return (
        Distribution(
            name=name,
            version=version,
            location=location,
            installer=installer,
            direct_url=direct_url,
            requires=requires,
            display_name=display_name or "",
            error="; ".join(errors) or None,
        ),
        None,
    )


def parse_metadata_header(text: str, keys: Optional[Collection[str]] = None) -> Dict[str, List[str]]:
    """RFC 822-style header block -> {lower-case field: [values]}, only `keys` when given; stops at the first blank line."""
    fields: Dict[str, List[str]] = {}
    key: Optional[str] = None  # the field a continuation line belongs to (None: skipped or garbage)
    started = False
    # Cheap first-letter test: most header lines (Classifier, Project-URL, ...) are not wanted.
    initials = None if keys is None else {k[:1] for k in keys} | {k[:1].upper() for k in keys}
    # This loop runs for every header line of every installed distribution: keep it lean.
    for line in text.splitlines():
        if not line:
            if started:
                break  # only an empty line ends the header; a whitespace-only line is a folded value
            continue  # tolerate leading blank lines written by odd tools
        started = True
        first = line[0]
        if first == " " or first == "\t":
            if key is not None:  # continuation line: folded onto the previous value
                values = fields[key]
                values[-1] = values[-1] + " " + line.strip()
            continue
        if initials is not None and first not in initials:
            key = None
            continue
        name, sep, value = line.partition(":")
        key = name.lower()
        if not sep or not key or " " in key or "\t" in key or (keys is not None and key not in keys):
            key = None  # not a header we keep (or not a header at all)
            continue
        fields.setdefault(key, []).append(value.strip())
    return fields


def name_version_from_dirname(base: str) -> Tuple[Optional[str], Optional[str]]:
    """("foo_bar", "1.0") from "foo_bar-1.0.dist-info" or "foo_bar-1.0-py3.9.egg-info"."""
    stem = base
    for suffix in (".dist-info", ".egg-info"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _EGG_PY_TAG.sub("", stem)
    if "-" in stem:
        name, version = stem.rsplit("-", 1)
        return (name or None), (version or None)
    return (stem or None), None


def _read_header_bytes(path: str) -> Tuple[Optional[bytes], Optional[str]]:
    """The bytes of a metadata file up to and including its header block: (bytes, None) or (None, reason)."""
    try:  # the body (long description) is never read past the chunk that ends the header, never decoded
        return read_bytes(path, _HEADER_LIMIT, until=_header_end_from, chunk=_HEADER_CHUNK), None
    except OSError as exc:
        return None, describe_os_error(exc)


def _header_end_from(buf: bytearray, start: int) -> int:
    """_header_end over the bytes new since `start` (and the 2 before them: an end split across chunks)."""
    return _header_end(buf, max(0, start - 2))


def _header_end(buf: bytearray, start: int = 0) -> int:
    """Offset just past the empty line that ends the header block, or -1; leading empty lines do not count."""
    lead = len(buf) - len(buf.lstrip(b"\r\n"))
    start = max(start, lead)
    ends = [i for i in (buf.find(b"\n\n", start), buf.find(b"\n\r\n", start)) if i >= 0]
    return min(ends) + 1 if ends else -1


def _read_installer(info_path: str) -> Optional[str]:
    text, _ = read_text(os.path.join(info_path, "INSTALLER"), limit=4096)
    if not text:
        return None
    first = text.strip().splitlines()
    return first[0].strip() if first and first[0].strip() else None


def _read_direct_url(info_path: str) -> Tuple[Optional[Mapping[str, object]], Optional[str]]:
    """PEP 610 direct_url.json as a dict: (dict, None), (None, None) when absent, (None, reason) when broken."""
    text, err = read_text(os.path.join(info_path, "direct_url.json"), limit=1024 * 1024)
    if err:
        return None, f"direct_url.json: {err}"
    if text is None:
        return None, None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested deeper than the decoder goes
        return None, f"direct_url.json is not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})"
    if not isinstance(data, dict):
        return None, f"direct_url.json is not a JSON object (got {type(data).__name__})"
    return data, None


def _egg_requires(info_path: str) -> Tuple[str, ...]:
    """requires.txt of an .egg-info folder, rewritten as Requires-Dist lines (sections become markers)."""
    text, _ = read_text(os.path.join(info_path, "requires.txt"), limit=1024 * 1024)
    return tuple(egg_requires_to_dist(text)) if text else ()


def egg_requires_to_dist(text: str) -> Iterable[str]:
    """Convert setuptools requires.txt sections ("[extra:marker]") to PEP 508 lines, as importlib.metadata does."""
    extra, marker = "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            extra, _, marker = line[1:-1].partition(":")
            continue
        conditions = []
        if marker:
            conditions.append(f"({marker})" if extra else marker)
        if extra:
            conditions.append(f'extra == "{extra}"')
        yield line + ("; " + " and ".join(conditions) if conditions else "")


def _read_foreign(ilm_dist: object) -> Tuple[Optional[Distribution], Optional[str]]:
    """A distribution that is not a plain folder (inside a zip/egg): read through importlib's own API."""
    err: Optional[str]
    try:
        text = ilm_dist.read_text("METADATA") or ilm_dist.read_text("PKG-INFO") or ""  # type: ignore[attr-defined]
    except Exception as exc:
        text, err = "", f"metadata unreadable ({exc.__class__.__name__})"
    else:
        err = None if text else "no METADATA"
    fields = parse_metadata_header(text, _KEYS)
    display_name = _first(fields, "name")
    if not display_name:
        return None, f"skipped a distribution in {_locate(ilm_dist)}: {err or 'no Name'}"
    version = _first(fields, "version") or ""
    errors = [e for e in (err,) if e]
    if not version:
        errors.append("no Version in METADATA")
    elif not _is_pep440(version):
        errors.append(f"version {version!r} is not PEP 440")
    return (
        Distribution(
            name=canonicalize_name(display_name),
            version=version,
            location=_locate(ilm_dist),
            requires=tuple(fields.get("requires-dist", ())),
            display_name=display_name,
            error="; ".join(errors) or None,
        ),
        None,
    )


def _locate(ilm_dist: object) -> Optional[str]:
    try:
        return str(ilm_dist.locate_file(""))  # type: ignore[attr-defined]
    except Exception:
        return None


def _first(fields: Mapping[str, List[str]], key: str) -> Optional[str]:
    values = fields.get(key)
    return values[0] if values and values[0] else None


def _is_pep440(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True
