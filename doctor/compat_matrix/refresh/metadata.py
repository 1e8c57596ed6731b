"""A wheel's core metadata: the PEP 658/714 `.metadata` file when the index advertises one, and its fields.

The `.metadata` file is checked against the sha256 the index advertises. A mismatch is tolerated with a
warning that names the file (PyTorch's index has served `.metadata` files whose hash did not match): the
content is still the wheel's METADATA as the index serves it, and Requires-Dist is all the refresh reads.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from typing import List, NamedTuple, Optional, Tuple

from doctor.compat_matrix.refresh.fetch import Fetcher, RefreshFailed
from doctor.compat_matrix.refresh.simple_api import IndexFile

METADATA_LIMIT = 4 * 1024 * 1024  # bytes; torch's METADATA is ~40 KB (its README), anything far bigger is not metadata


class CoreMetadata(NamedTuple):
    """The fields of METADATA the refresh uses."""

    name: str
    version: str
    requires_dist: Tuple[str, ...]  # each line as written, markers included


def parse_metadata(raw: bytes, where: str) -> CoreMetadata:
    """Name, Version and Requires-Dist of a METADATA document; anything unreadable is one RefreshFailed line."""
    if len(raw) > METADATA_LIMIT:
        raise RefreshFailed(f"{where}: METADATA is {len(raw)} bytes (more than {METADATA_LIMIT}): not a metadata file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RefreshFailed(f"{where}: METADATA is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
    # compat32 keeps header values as written (the default policy folds and re-parses them)
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)
    name, version = (msg.get("Name") or "").strip(), (msg.get("Version") or "").strip()
    if not name or not version:
        raise RefreshFailed(f"{where}: METADATA has no {'Name' if not name else 'Version'} field (not core metadata)")
    requires = tuple(" ".join(str(v).split()) for v in (msg.get_all("Requires-Dist") or []))
    return CoreMetadata(name, version, requires)


def fetch_pep658(fetcher: Fetcher, f: IndexFile, warnings: List[str]) -> bytes:
    """The `.metadata` file of an index file that advertises one; a sha256 mismatch appends a warning."""
    assert f.core_metadata is not None, "only for files that advertise .metadata"
    url = f.url + ".metadata"
    raw = fetcher.get(url, what=f"{f.filename}.metadata").content
    expected = (f.core_metadata or {}).get("sha256")
    if expected:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected:
            warnings.append(f"{f.filename}.metadata: sha256 {got[:16]}... differs from the index's {expected[:16]}... "
                            "(used anyway: PyTorch's index has served mismatching .metadata files)")
    return raw


def check_name(meta: CoreMetadata, project: str, version: str, where: str) -> Optional[str]:
    """A warning when METADATA names another project or version than the file it came from, else None."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    try:
        same_version = Version(meta.version) == Version(version)
    except InvalidVersion:
        same_version = meta.version == version
    if canonicalize_name(meta.name) != canonicalize_name(project) or not same_version:
        return f"{where}: METADATA says {meta.name} {meta.version}, the file name {project} {version}"
    return None
