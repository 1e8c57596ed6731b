"""A local package index for the resolver tests: wheels rebuilt from recorded real metadata, served on 127.0.0.1.

Contract:
- `build_wheels(out)` turns every record under data/<index>/ into a `py3-none-any` wheel (METADATA as
  recorded, a WHEEL file, RECORD, the recorded members as files, bitsandbytes' libraries as empty
  files). The tag is rewritten because pip on this machine must accept the wheel; Requires-Python and
  Requires-Dist markers stay as recorded, so pip's resolver sees the real constraints.
- `LocalIndex` serves them from a ThreadingHTTPServer on 127.0.0.1:0 in a daemon thread, several
  indexes by path prefix: `/<index>/simple/` answers PEP 691 JSON or PEP 503 HTML by the Accept header,
  with PEP 658 `.metadata` files advertised with their sha256; `/<index>/files/<wheel>` serves the wheel.
  Variants for bad-input and fallback tests, also by prefix: `/<index>~nometa/` (no `.metadata` files:
  pip downloads the wheels), `/<index>~html/` (HTML pages whatever the Accept header says), and
  `/garbage/simple/` (200 answers whose body is nonsense in the negotiated content type).
- Nothing here touches the network or this machine's pip settings; stop() shuts the server down.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

DATA = Path(__file__).resolve().parent / "data"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("application/vnd.pypi.simple.v1+html", "text/html")
# A fixed timestamp makes rebuilt wheels byte-identical across runs (stable sha256 in the pages).
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    """One rebuilt wheel on disk and what the index pages say about it."""

    index: str  # the index it belongs to ("pypi", "cu121", ...)
    project: str  # canonical project name
    version: str  # version string as recorded (local part kept: 2.5.1+cu124)
    path: Path  # the .whl file
    sha256: str  # of the .whl file
    metadata: bytes  # the METADATA member, served as the PEP 658 file
    metadata_sha256: str  # of `metadata`
    requires_python: Optional[str]  # Requires-Python from the index entry, as recorded


def _metadata_text(rec: Dict[str, object]) -> str:
    text = str(rec["metadata"])
    return text if text.endswith("\n") else text + "\n"


def _wheel_bytes(dist: str, version: str, metadata: str, files: Dict[str, bytes]) -> Dict[str, bytes]:
    info = f"{dist}-{version}.dist-info"
    members: Dict[str, bytes] = dict(files)
    members[f"{info}/METADATA"] = metadata.encode("utf-8")
    members[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tune-doctor-test-index\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    lines = []
    for arc, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{arc},sha256={digest},{len(data)}")
    lines.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = ("\n".join(lines) + "\n").encode()
    return members


def build_wheel(rec: Dict[str, object], out_dir: Path, index: str) -> Wheel:
    """Write the py3-none-any wheel for one record and return its description."""
    name, version = str(rec["name"]), str(rec["version"])
    dist = re.sub(r"[-_.]+", "_", name).lower()
    files: Dict[str, bytes] = {k: str(v).encode("utf-8") for k, v in dict(rec.get("members") or {}).items()}  # type: ignore[call-overload]
    for member in list(rec.get("empty_members") or []):  # type: ignore[call-overload]
        files[str(member)] = b""
    metadata = _metadata_text(rec)
    members = _wheel_bytes(dist, version, metadata, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dist}-{version}-py3-none-any.whl"
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arc in sorted(members):
            zf.writestr(zipfile.ZipInfo(arc, date_time=_ZIP_TIME), members[arc])
    tmp.replace(path)
    meta = members[f"{dist}-{version}.dist-info/METADATA"]
    rp = rec.get("requires_python")
    return Wheel(
        index=index,
        project=canonical(name),
        version=version,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        metadata=meta,
        metadata_sha256=hashlib.sha256(meta).hexdigest(),
        requires_python=str(rp) if rp else None,
    )


def build_wheels(out: Path, data: Path = DATA) -> Dict[str, Dict[str, List[Wheel]]]:
    """Build every recorded wheel under out/<index>/; returns index -> project -> wheels."""
    tree: Dict[str, Dict[str, List[Wheel]]] = {}
    for idx_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        for proj_dir in sorted(p for p in idx_dir.iterdir() if p.is_dir()):
            for rec_path in sorted(proj_dir.glob("*.json")):
                rec = json.loads(rec_path.read_text())
                w = build_wheel(rec, out / idx_dir.name, idx_dir.name)
                tree.setdefault(idx_dir.name, {}).setdefault(w.project, []).append(w)
    return tree


def _accept(header: Optional[str]) -> Optional[str]:
    """The content type to answer with for an Accept header (None: nothing we serve is acceptable)."""
    if not header:
        return "text/html"
    best: Tuple[float, int, Optional[str]] = (0.0, 0, None)
    for i, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        mtype, q = fields[0].lower(), 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if mtype in ("*/*", "application/*"):
            mtype = JSON_TYPE
        elif mtype == "text/*":
            mtype = "text/html"
        if mtype not in (JSON_TYPE, *HTML_TYPES) or q <= 0:
            continue
        # Highest q wins; on a tie the one the client listed first.
        if q > best[0]:
            best = (q, -i, mtype)
    return best[2]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass  # quiet: pytest shows what matters

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _send(self, status: int, body: bytes, ctype: str, head: bool, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        path = unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        owner._log(path)
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._send(404, b"not found\n", "text/plain", head)
        prefix, rest = parts[0], parts[1:]
        self._prefix = prefix  # file links are absolute: a project page is reached under /simple/ and without it
        index, _, flags = prefix.partition("~")
        opts = set(flags.split(",")) if flags else set()
        if index == "garbage":
            return self._garbage(rest, head)
        projects = owner.tree.get(index)
        if projects is None:
            return self._send(404, b"no such index\n", "text/plain", head)
        if rest[:1] == ["files"] and len(rest) == 2:
            return self._file(projects, rest[1], "nometa" not in opts, head)
        if rest[:1] != ["simple"] and len(rest) <= 1:
            rest = ["simple"] + rest  # PyTorch's layout: the index root is the simple root (<base>/cu124/torch/)
        if rest[:1] != ["simple"] or len(rest) > 2:
            return self._send(404, b"not found\n", "text/plain", head)
        ctype = "text/html" if "html" in opts else _accept(self.headers.get("Accept"))
        if ctype is None:
            return self._send(406, b"not acceptable\n", "text/plain", head)
        if len(rest) == 1:
            return self._root(projects, ctype, head)
        name = rest[1]
        if canonical(name) != name:
            return self._send(301, b"", "text/plain", head, {"Location": f"/{prefix}/simple/{canonical(name)}/"})
        wheels = projects.get(name)
        if wheels is None:
            return self._send(404, b"no such project\n", "text/plain", head)
        self._project(name, wheels, ctype, "nometa" not in opts, head)

    def _root(self, projects: Dict[str, List[Wheel]], ctype: str, head: bool) -> None:
        if ctype == JSON_TYPE:
            body = json.dumps({"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in sorted(projects)]}).encode()
        else:
            links = "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(projects))
            body = f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n".encode()
        self._send(200, body, ctype, head)

    def _project(self, name: str, wheels: List[Wheel], ctype: str, meta: bool, head: bool) -> None:
        files_url = f"/{self._prefix}/files/"
        if ctype == JSON_TYPE:
            files = []
            for w in wheels:
                entry: Dict[str, object] = {
                    "filename": w.path.name,
                    "url": files_url + w.path.name,
                    "hashes": {"sha256": w.sha256},
                    "size": w.path.stat().st_size,
                    "yanked": False,
                }
                if w.requires_python:
                    entry["requires-python"] = w.requires_python
                if meta:
                    entry["core-metadata"] = {"sha256": w.metadata_sha256}
                    entry["data-dist-info-metadata"] = {"sha256": w.metadata_sha256}
                files.append(entry)
            doc = {"meta": {"api-version": "1.1"}, "name": name, "versions": sorted({w.version for w in wheels}), "files": files}
            body = json.dumps(doc).encode()
        else:
            links = []
            for w in wheels:
                attrs = ""
                if w.requires_python:
                    attrs += f' data-requires-python="{html.escape(w.requires_python)}"'
                if meta:
                    attrs += f' data-core-metadata="sha256={w.metadata_sha256}" data-dist-info-metadata="sha256={w.metadata_sha256}"'
                links.append(f'<a href="{files_url}{w.path.name}#sha256={w.sha256}"{attrs}>{w.path.name}</a><br/>\n')
            body = f"<!DOCTYPE html>\n<html><body>\n<h1>Links for {name}</h1>\n{''.join(links)}</body></html>\n".encode()
        self._send(200, body, ctype, head)

    def _file(self, projects: Dict[str, List[Wheel]], filename: str, meta: bool, head: bool) -> None:
        want_meta = filename.endswith(".metadata")
        wheel_name = filename[: -len(".metadata")] if want_meta else filename
        for wheels in projects.values():
            for w in wheels:
                if w.path.name == wheel_name:
                    if want_meta:
                        if not meta:
                            break
                        return self._send(200, w.metadata, "application/octet-stream", head)
                    return self._send(200, w.path.read_bytes(), "application/octet-stream", head)
        self._send(404, b"no such file\n", "text/plain", head)

    def _garbage(self, rest: List[str], head: bool) -> None:
        ctype = _accept(self.headers.get("Accept")) or "text/html"
        if ctype == JSON_TYPE:
            body = b'{"meta": {"api-version": "1.1"}, "name": [}, "files": "\x00\xff nonsense'
        else:
            body = b"<html><body><a href='../../files/%%%%-nonsense.whl#sha256=zz'>\xff\xfe</a><a href=>!!</body"
        self._send(200, body, ctype, head)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "LocalIndex"


class LocalIndex:
    """Recorded wheels served on 127.0.0.1: `url("pypi")`, `url("cu121", metadata=False)`, `url("garbage")`."""

    def __init__(self, wheel_dir: Path, data: Path = DATA) -> None:
        self.wheel_dir = wheel_dir
        self.tree = build_wheels(wheel_dir, data)
        self.requests: List[str] = []  # every path asked for, in order (tests check what pip fetched)
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def _log(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def start(self) -> "LocalIndex":
        """Start serving on a free port of 127.0.0.1 in a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="local-index", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and close its socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LocalIndex":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "LocalIndex not started"
        return int(self._server.server_address[1])

    def url(self, index: str, metadata: bool = True, html_only: bool = False) -> str:
        """The simple-API base URL of an index (`http://127.0.0.1:PORT/pypi/simple`), or a variant of it."""
        if index != "garbage" and index not in self.tree:
            raise KeyError(f"no recorded index {index!r} (have: {sorted(self.tree)})")
        flags = ",".join(f for f, on in (("nometa", not metadata), ("html", html_only)) if on)
        prefix = f"{index}~{flags}" if flags else index
        return f"http://127.0.0.1:{self.port}/{prefix}/simple"

    def indexes(self) -> List[str]:
        """The recorded indexes served (not counting `garbage`)."""
        return sorted(self.tree)

    def wheel(self, index: str, name: str, version: str) -> Path:
        """The rebuilt wheel file of name==version on an index (for installing worlds --no-deps)."""
        for w in self.tree.get(index, {}).get(canonical(name), []):
            if w.version == version:
                return w.path
        raise KeyError(f"{index}: no recorded {name}=={version}")

    def versions(self, index: str, name: str) -> List[str]:
        """The versions of a project the index holds."""
        return [w.version for w in self.tree.get(index, {}).get(canonical(name), [])]
