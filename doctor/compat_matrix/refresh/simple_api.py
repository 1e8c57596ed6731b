"""A project's files from the simple repository API: PEP 691 JSON, PEP 503 HTML when that is what the index serves.

Each file keeps what the refresh needs: its URL (made absolute against the page), the sha256 the index
states, the size, yanked, and whether a PEP 658/714 `.metadata` file is advertised (`core-metadata`, or
the older `data-dist-info-metadata` spelling) with its hash. A page that is neither is one RefreshFailed line.
"""

from __future__ import annotations

import html.parser
import json
import re
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urldefrag, urljoin

from doctor.compat_matrix.refresh.fetch import Fetcher, RefreshFailed

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
DEFAULT_INDEX = "https://pypi.org/simple"


class IndexFile(NamedTuple):
    """One file of a project page."""

    filename: str  # "xformers-0.0.35-py39-none-manylinux_2_28_x86_64.whl"
    url: str  # absolute, fragment removed
    sha256: Optional[str]  # as the index states it (lower-case hex), None when it states none
    size: Optional[int]  # bytes, when the index states it (PEP 700)
    yanked: bool
    core_metadata: Optional[Dict[str, str]]  # None: no `.metadata` advertised; else its hashes ({} when "true")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_url(index_url: str, name: str) -> str:
    """The project page's URL under an index's simple root."""
    return index_url.rstrip("/") + "/" + canonical(name) + "/"


def project_files(fetcher: Fetcher, index_url: str, name: str) -> List[IndexFile]:
    """Every file of the project on the index (JSON asked for first, HTML accepted)."""
    url = project_url(index_url, name)
    resp = fetcher.get(url, headers={"Accept": ACCEPT}, what=f"project page of {name}")
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = resp.content.decode("utf-8")
    except UnicodeDecodeError:
        raise RefreshFailed(f"{url}: project page is not UTF-8") from None
    return parse_page(text, ctype, str(resp.url))


def parse_page(text: str, content_type: str, page_url: str) -> List[IndexFile]:
    """The files of one project page, by its content type (JSON for PEP 691, anything else read as HTML)."""
    if "json" in content_type:
        return _parse_json(text, page_url)
    return _parse_html(text, page_url)


def _parse_json(text: str, page_url: str) -> List[IndexFile]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise RefreshFailed(f"{page_url}: project page is not valid JSON") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise RefreshFailed(f"{page_url}: project page has no 'files' list (not PEP 691)")
    out = []
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("filename"), str) or not isinstance(f.get("url"), str):
            raise RefreshFailed(f"{page_url}: files[{i}] has no filename or url")
        hashes = f["hashes"] if isinstance(f.get("hashes"), dict) else {}
        meta = f.get("core-metadata", f.get("data-dist-info-metadata"))
        size = f.get("size")
        out.append(IndexFile(
            filename=f["filename"],
            url=urldefrag(urljoin(page_url, f["url"]))[0],
            sha256=_hex(hashes.get("sha256")),
            size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
            yanked=bool(f.get("yanked")),
            core_metadata=_meta_hashes(meta),
        ))
    return out


def _meta_hashes(value: object) -> Optional[Dict[str, str]]:
    """PEP 691/714: false or absent -> None (not advertised); true -> {}; {algo: hex} -> those hashes."""
    if value is True:
        return {}
    if isinstance(value, dict):
        return {str(k).lower(): str(v).lower() for k, v in value.items() if isinstance(v, str)}
    return None


def _hex(value: object) -> Optional[str]:
    return value.lower() if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) else None


class _Anchors(html.parser.HTMLParser):
    """Collects (attributes, text) of every <a> of a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: List[Tuple[Dict[str, Optional[str]], str]] = []
        self._open: Optional[Dict[str, Optional[str]]] = None
        self._text: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def _parse_html(text: str, page_url: str) -> List[IndexFile]:
    parser = _Anchors()
    try:
        parser.feed(text)
        parser.close()
    except Exception as e:  # html.parser is lenient, but a page must never become a traceback
        raise RefreshFailed(f"{page_url}: project page is not HTML ({e})") from None
    out = []
    for attrs, label in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(page_url, href))
        filename = label or url.rsplit("/", 1)[-1]
        algo, _, digest = fragment.partition("=")
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        out.append(IndexFile(
            filename=filename,
            url=url,
            sha256=_hex(digest) if algo == "sha256" else None,
            size=None,
            yanked="data-yanked" in attrs,
            core_metadata=_html_meta(meta),
        ))
    if not out and "<a" not in text.lower():
        raise RefreshFailed(f"{page_url}: project page lists no files (neither PEP 691 JSON nor PEP 503 HTML)")
    return out


def _html_meta(value: Optional[str]) -> Optional[Dict[str, str]]:
    """PEP 658: the attribute absent -> None; "true" -> {}; "sha256=<hex>" -> that hash."""
    if value is None:
        return None
    algo, sep, digest = value.strip().partition("=")
    if not sep:
        return {} if value.strip().lower() == "true" else None
    return {algo.lower(): digest.lower()}
