"""A local index for the refresh tests: recorded real wheel bytes served on 127.0.0.1, with switchable faults.

Layout: `/simple/<project>/` (PEP 691 JSON, or PEP 503 HTML when `html` is on or asked for), `/files/<wheel>`
(HEAD, and GET with a Range header: 206 with exactly those bytes), `/files/<wheel>.metadata` (PEP 658).
Wheels are either recorded (record.py: the length and the byte ranges a refresh reads; zeros elsewhere) or
built here as real zips (`add_wheel`). Switches, set on the `Index` between requests:

    pep658        advertise `.metadata` files (core-metadata + data-dist-info-metadata with their sha256)
    html          PEP 503 HTML project pages whatever the Accept header says
    ranges        `Accept-Ranges: bytes` on HEAD and 206 answers; off: no header, Range ignored
    wrong_hash    advertise a wrong sha256 for the `.metadata` files whose name contains one of these
    fail          {path part: n}: that many 500 answers (-1: always) for paths containing it
    truncate      path parts whose answers promise the whole body but send half of it and close
    slow          {path part: seconds} to wait before answering

Every request is logged (method, path, Range header) and the most requests in flight at once is kept,
so tests check what was (not) downloaded and the concurrency limit.

A client that hangs up mid-answer (it timed out on a slow answer, or stopped after another request failed)
is expected here, not a server error: it is not printed. `stop()` wakes the slow answers, closes every
connection and joins the handler threads, so nothing of one test's server runs on into the next test
(a handler still sleeping would otherwise write into a later test's captured stderr).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import socket
import sys
import threading
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import unquote

RECORDED = Path(__file__).resolve().parent / "recorded"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


class WheelFile:
    """Bytes of one served file: recorded ranges over zeros, or a whole real file."""

    def __init__(self, filename: str, length: int, segments: List[Tuple[int, bytes]], metadata: bytes,
                 metadata_only: bool = False) -> None:
        self.filename = filename
        self.length = length
        self.segments = segments
        self.metadata = metadata
        self.metadata_only = metadata_only  # no wheel bytes recorded: only listed when .metadata is advertised
        self.sha256 = hashlib.sha256(filename.encode()).hexdigest()  # stands in for the real file's hash

    def read(self, start: int, end: int) -> bytes:
        """Bytes start..end inclusive; unrecorded parts are zeros."""
        out = bytearray(end - start + 1)
        for off, data in self.segments:
            lo, hi = max(start, off), min(end + 1, off + len(data))
            if lo < hi:
                out[lo - start:hi - start] = data[lo - off:hi - off]
        return bytes(out)


def recorded(project: str) -> List[WheelFile]:
    """The recorded files of one project."""
    out = []
    for p in sorted((RECORDED / project).glob("*.json")):
        rec = json.loads(p.read_text())
        segs = [(int(o), zlib.decompress(base64.b64decode(d))) for o, d in rec["segments"]]
        out.append(WheelFile(rec["filename"], int(rec["length"]), segs, rec["metadata"].encode("utf-8"),
                             bool(rec.get("metadata_only"))))
    return out


def real_wheel(filename: str, members: Dict[str, bytes]) -> WheelFile:
    """A real zip built here (deflated members), served whole-file-backed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)
    raw = buf.getvalue()
    meta = next((v for k, v in members.items() if k.endswith(".dist-info/METADATA")), b"")
    return WheelFile(filename, len(raw), [(0, raw)], meta)


def wheel_metadata(name: str, version: str, requires: List[str]) -> bytes:
    """A METADATA document."""
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
    return ("\n".join(lines) + "\n\n").encode()


class Index:
    """The server and its switches (see the module docstring)."""

    def __init__(self) -> None:
        self.projects: Dict[str, List[WheelFile]] = {"xformers": recorded("xformers"), "torch": recorded("torch")}
        self.pep658 = True
        self.html = False
        self.ranges = True
        self.wrong_hash: Set[str] = set()
        self.fail: Dict[str, int] = {}
        self.truncate: Set[str] = set()
        self.slow: Dict[str, float] = {}
        self.log: List[Tuple[str, str, str]] = []  # (method, path, range header)
        self.bytes_served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # set by stop(): slow answers stop waiting
        self._server: Optional[_Server] = None

    def add_wheel(self, project: str, wheel: WheelFile) -> None:
        """Serve one more file in a project."""
        self.projects.setdefault(project, []).append(wheel)

    @property
    def url(self) -> str:
        """The simple-API root."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple"

    def start(self) -> "Index":
        """Serve on a free port of 127.0.0.1 in a daemon thread."""
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.index = self
        self._server = server
        threading.Thread(target=server.serve_forever, name="refresh-index", daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut down: no more requests, every connection closed, every handler thread finished."""
        if self._server is not None:
            self._stopping.set()
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._server = None

    def wheel_gets(self) -> List[Tuple[str, str, str]]:
        """Logged requests of wheel files (not .metadata)."""
        return [e for e in self.log if e[1].startswith("/files/") and e[1].endswith(".whl")]


class _Server(ThreadingHTTPServer):
    """A threading server that knows its handler threads and connections, so stop() can end them."""

    daemon_threads = True
    index: Index

    def __init__(self, address: Tuple[str, int], handler: type) -> None:
        super().__init__(address, handler)
        self._conns: List[Tuple[threading.Thread, socket.socket]] = []
        self._conns_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: Tuple[str, int]) -> None:  # type: ignore[override]
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self._conns_lock:
            self._conns = [(th, s) for th, s in self._conns if th.is_alive()]
            self._conns.append((t, request))
        t.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client went away (timed out, or gave up after another request failed): expected, not printed.
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)) or self.index._stopping.is_set():
            return
        super().handle_error(request, client_address)  # a real bug in this server: printed

    def close_all(self, wait: float = 5.0) -> None:
        """Close every connection (blocked reads return) and join the handler threads."""
        with self._conns_lock:
            conns = list(self._conns)
        for _, s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        for t, _ in conns:
            t.join(wait)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:
        self._wrap(head=True)

    def do_GET(self) -> None:
        self._wrap(head=False)

    def _wrap(self, head: bool) -> None:
        idx: Index = self.server.index  # type: ignore[attr-defined]
        path = unquote(self.path.split("?", 1)[0])
        with idx._lock:
            idx.log.append(("HEAD" if head else "GET", path, self.headers.get("Range", "")))
            idx.in_flight += 1
            idx.max_in_flight = max(idx.max_in_flight, idx.in_flight)
        try:
            for part, secs in idx.slow.items():
                if part in path and idx._stopping.wait(secs):
                    return  # the server is stopping: no answer
            for part, n in list(idx.fail.items()):
                if part in path and n != 0:
                    with idx._lock:
                        if n > 0:
                            idx.fail[part] = n - 1
                    return self._send(500, b"boom\n", "text/plain", head)
            self._serve(idx, path, head)
        finally:
            with idx._lock:
                idx.in_flight -= 1

    def _send(self, status: int, body: bytes, ctype: str, head: bool, extra: Optional[Dict[str, str]] = None,
              truncate: bool = False) -> None:
        idx: Index = self.server.index  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        out = body[: len(body) // 2] if truncate else body
        self.wfile.write(out)
        with idx._lock:
            idx.bytes_served += len(out)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def _serve(self, idx: Index, path: str, head: bool) -> None:
        trunc = any(part in path for part in idx.truncate)
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "simple":
            files = idx.projects.get(parts[1])
            if files is None:
                return self._send(404, b"no such project\n", "text/plain", head)
            return self._page(idx, parts[1], files, head, trunc)
        if len(parts) == 2 and parts[0] == "files":
            name = parts[1]
            meta = name.endswith(".metadata")
            wheel_name = name[: -len(".metadata")] if meta else name
            w = next((w for ws in idx.projects.values() for w in ws if w.filename == wheel_name), None)
            if w is None or (meta and not idx.pep658) or (not meta and w.metadata_only):
                return self._send(404, b"no such file\n", "text/plain", head)
            if meta:
                return self._send(200, w.metadata, "application/octet-stream", head, truncate=trunc)
            return self._wheel(idx, w, head, trunc)
        self._send(404, b"not found\n", "text/plain", head)

    def _page(self, idx: Index, project: str, files: List[WheelFile], head: bool, trunc: bool) -> None:
        shown = [w for w in files if idx.pep658 or not w.metadata_only]
        accept = self.headers.get("Accept", "")
        as_json = not idx.html and JSON_TYPE in accept

        def meta_hash(w: WheelFile) -> str:
            if any(part in w.filename for part in idx.wrong_hash):
                return "0" * 64
            return hashlib.sha256(w.metadata).hexdigest()

        if as_json:
            entries = []
            for w in shown:
                e: Dict[str, object] = {"filename": w.filename, "url": f"../../files/{w.filename}",
                                        "hashes": {"sha256": w.sha256}, "size": w.length, "yanked": False}
                if idx.pep658:
                    e["core-metadata"] = {"sha256": meta_hash(w)}
                    e["data-dist-info-metadata"] = {"sha256": meta_hash(w)}
                entries.append(e)
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": project, "files": entries}).encode()
            return self._send(200, body, JSON_TYPE, head, truncate=trunc)
        links = []
        for w in shown:
            attrs = f' data-core-metadata="sha256={meta_hash(w)}"' if idx.pep658 else ""
            links.append(f'<a href="/files/{html.escape(w.filename)}#sha256={w.sha256}"{attrs}>{html.escape(w.filename)}</a><br/>')
        body = ("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n").encode()
        self._send(200, body, "text/html", head, truncate=trunc)

    def _wheel(self, idx: Index, w: WheelFile, head: bool, trunc: bool) -> None:
        extra = {"Accept-Ranges": "bytes"} if idx.ranges else {}
        rng = self.headers.get("Range", "")
        if head:
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(w.length))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            return
        if not idx.ranges or not rng.startswith("bytes="):
            # A whole-file answer: the refresh must never ask for one (tests check the log); keep it small here.
            return self._send(200, w.read(0, min(w.length, 4096) - 1), "application/zip", head)
        spec = rng[len("bytes="):]
        a, _, b = spec.partition("-")
        if not a:
            start, end = max(0, w.length - int(b)), w.length - 1
        else:
            start, end = int(a), min(int(b) if b else w.length - 1, w.length - 1)
        if start > end or start >= w.length:
            return self._send(416, b"", "text/plain", head, {"Content-Range": f"bytes */{w.length}"})
        extra["Content-Range"] = f"bytes {start}-{end}/{w.length}"
        self._send(206, w.read(start, end), "application/zip", head, extra, truncate=trunc)
