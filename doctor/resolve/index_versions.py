"""Which releases of a package an index has: the version lines the planner walks (patch before minor before major).

pip's report says what pip would pick for a specifier, not what else exists; the simple API (PEP 691 JSON,
PEP 503 HTML as the fallback) lists every file. Only wheels count (plans never build sdists), yanked
files do not. One GET per package per planning run, with a timeout; failures are ResolveFailed.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from doctor.resolve.pip_report import ResolveFailed

DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT = 30.0
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_ANCHOR = re.compile(r"<a\s+([^>]*)>([^<]+)</a>", re.IGNORECASE)


def _wheel_version(filename: str) -> Optional[str]:
    """The version in a wheel's file name, or None for other files and unparseable names."""
    if not filename.endswith(".whl"):
        return None
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        return str(parse_wheel_filename(filename)[1])
    except (InvalidWheelFilename, ValueError):
        return None


def parse_simple_page(body: str, content_type: str) -> List[str]:
    """Versions with at least one non-yanked wheel, from a PEP 691 JSON or PEP 503 HTML project page."""
    found: List[str] = []
    if "json" in content_type:
        import json

        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise ResolveFailed("the index answered a project page that is not JSON") from None
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, list):
            raise ResolveFailed("the index's project page has no file list")
        for f in files:
            if not isinstance(f, dict) or f.get("yanked"):
                continue
            v = _wheel_version(str(f.get("filename", "")))
            if v:
                found.append(v)
    else:
        for attrs, text in _ANCHOR.findall(body):
            if "data-yanked" in attrs:
                continue
            v = _wheel_version(text.strip())
            if v:
                found.append(v)
    return sorted(set(found), key=_sort_key)


def _sort_key(v: str) -> Tuple[int, object]:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(v))
    except InvalidVersion:
        return (1, v)


class VersionLister:
    """Lists releases per (index, package), once per planning run."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._seen: Dict[Tuple[str, str], List[str]] = {}

    def versions(self, name: str, index_url: Optional[str]) -> List[str]:
        """Every version of `name` with a wheel on `index_url` (None: the default index), oldest first."""
        from packaging.utils import canonicalize_name

        import os

        from doctor.envvars import PIP_INDEX_URL

        base = (index_url or os.environ.get(PIP_INDEX_URL) or DEFAULT_INDEX).rstrip("/")
        key = (base, canonicalize_name(name))
        if key in self._seen:
            return self._seen[key]
        import httpx

        url = f"{base}/{key[1]}/"
        try:
            resp = httpx.get(url, headers={"Accept": _ACCEPT}, timeout=self.timeout, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise ResolveFailed(f"could not list {name} on {base}: {type(exc).__name__}") from None
        if resp.status_code == 404:
            out: List[str] = []
        elif resp.status_code != 200:
            raise ResolveFailed(f"could not list {name} on {base}: HTTP {resp.status_code}")
        else:
            out = parse_simple_page(resp.text, resp.headers.get("content-type", ""))
        self._seen[key] = out
        return out
