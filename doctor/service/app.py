"""The FastAPI application of `doctor serve` (extra `serve`): create_app().

    POST /v1/resolve   Facts (doctor.service.schema) -> findings, pins, plan (index or offline-matrix mode, said so)
    GET  /v1/matrix    data version and ETag; If-None-Match -> 304
    GET  /healthz      liveness and the matrix version (no token needed: load balancers probe it)
    GET  /metrics      Prometheus text (doctor.service.metrics)
    GET  /openapi.json the schema (the request body's JSON Schema is schema.REQUEST_SCHEMA)

Stateless and read-only: nothing a request sends is kept beyond the answer cache (derived data, per worker).
Contract: a request is answered 2xx, 304, 401, 404/405, 413 or 422 with a reason; never 500. The body is
read here with its own limit (413 before any parsing), validated by schema.parse_request (422 naming the
field), and answered by answer.Answerer; an unexpected exception is logged and counted and still a 422.
One ASGI layer (Guard) does the size limit, the bearer token (constant-time compare), the timing, the
metrics and the JSON request log, without Starlette's BaseHTTPMiddleware (which costs per request).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, NamedTuple, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import Response

from doctor._version import __version__
from doctor.envvars import DOCTOR_SERVE_SETTINGS
from doctor.errors import DoctorError
from doctor.resolve.options import IndexConfig
from doctor.service.answer import Answerer
from doctor.service.logs import logger, request_line
from doctor.service.metrics import Metrics
from doctor.service.schema import MAX_BODY_BYTES, REQUEST_SCHEMA, RequestError, parse_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
OPEN_PATHS = ("/healthz",)  # answered without the token


class Settings(NamedTuple):
    """How one worker runs (`doctor serve` passes them to its workers through DOCTOR_SERVE_SETTINGS)."""

    token_file: Optional[str] = None  # a file holding the bearer token; None: no token asked
    cache_size: int = 256  # answers kept per worker (0: none)
    max_body: int = MAX_BODY_BYTES  # bytes; above it: 413
    log_requests: bool = True  # one JSON line per request
    index_url: Optional[str] = None  # index mode: plans resolved by pip against this index; None: offline-matrix
    torch_index_url: Optional[str] = None  # base of the PyTorch CUDA-family indexes (<base>/cu121); None: the matrix's

    def to_env(self) -> str:
        """The settings as the JSON value of DOCTOR_SERVE_SETTINGS."""
        return json.dumps(self._asdict())


def settings_from_env() -> Settings:
    """Settings from DOCTOR_SERVE_SETTINGS (set by `doctor serve`), else the defaults."""
    raw = os.environ.get(DOCTOR_SERVE_SETTINGS, "").strip()
    if not raw:
        return Settings()
    try:
        doc = json.loads(raw)
        return Settings(**{k: v for k, v in doc.items() if k in Settings._fields})
    except (ValueError, TypeError) as exc:
        raise DoctorError(f"{DOCTOR_SERVE_SETTINGS}: not valid settings ({exc})") from None


def read_token(path: str) -> bytes:
    """The bearer token from a file (surrounding whitespace dropped); DoctorError when unreadable or empty."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4097)
    except OSError as exc:
        raise DoctorError(f"--token-file {path}: unreadable ({exc.strerror or exc})") from None
    token = raw.strip()
    if not token or len(raw) > 4096 or any(c < 0x21 or c > 0x7E for c in token):
        raise DoctorError(f"--token-file {path}: expected one token of printable ASCII (at most 4 KiB)")
    return token


def _json(doc: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status, headers=headers, media_type=JSON)


def _problem_body(detail: str, field: str = "") -> bytes:
    doc: Dict[str, Any] = {"detail": detail}
    if field:
        doc["field"] = field
    return json.dumps(doc, separators=(",", ":")).encode()


def _problem(status: int, detail: str, field: str = "") -> Response:
    return Response(_problem_body(detail, field), status, media_type=JSON)


def create_app(settings: Optional[Settings] = None) -> Any:
    """The ASGI application: FastAPI routes inside the Guard layer. Loads the matrix and the rules now."""
    settings = settings if settings is not None else settings_from_env()
    token = read_token(settings.token_file) if settings.token_file else None
    index = IndexConfig(settings.index_url, settings.torch_index_url) if settings.index_url else None
    answerer = Answerer(cache_size=settings.cache_size, index=index)
    mode = answerer.mode
    metrics = Metrics()
    log = logger()
    info = answerer.info
    labels = {"version": __version__, "matrix_version": info.data_version, "etag": info.etag.strip('"'), "mode": mode}

    api = FastAPI(title="tune-doctor resolution service", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Findings, known-good pins and a plan for a Facts document (mode index: resolved by "
                              "pip against the service's index and verified; mode offline-matrix: exact pins from the "
                              "matrix, not verified against the index). "
                              "Requests carry no paths, hostnames, user names or environment values.")

    def answer_body(body: bytes) -> Tuple[int, bytes]:
        """(status, JSON body) for one /v1/resolve body: the cached answer, a 422 with the reason, or the answer."""
        key, hit = answerer.cached(body)
        metrics.cache_result(hit is not None)
        if hit is not None:
            return 200, hit
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return 422, _problem_body(f"not JSON ({' '.join(str(exc).split())[:160]})")
        try:
            req = parse_request(doc)
        except RequestError as exc:
            return 422, _problem_body(str(exc)[:400], exc.where)
        try:
            return 200, answerer.answer(key, req, body)
        except DoctorError as exc:  # the matrix cannot serve it (an unknown --torch build): the request's problem
            return 422, _problem_body(" ".join(str(exc).split())[:400])
        except Exception:  # a gap in the doctor, not the client's fault: logged and counted, still never a 500
            log.exception("resolve failed", extra={"fields": {"event": "error", "path": "/v1/resolve"}})
            metrics.error("/v1/resolve", "exception")
            return 422, _problem_body("this document could not be answered (the service logged why)")

    # The Guard answers POST /v1/resolve itself with answer_body (FastAPI's routing and dependency solving cost
    # more than a cached answer); the route stays for the OpenAPI schema and for callers of the bare FastAPI app.
    @api.post("/v1/resolve", summary="Findings, pins and a plan for a Facts document",
              openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": REQUEST_SCHEMA}}}},
              responses={200: {"description": "the answer; `mode` says which made it (index: verified against the index; "
                                                "offline-matrix: exact pins from the matrix, not verified; `note` says why)"},
                         413: {"description": "the body is larger than the limit"},
                         422: {"description": "the document does not validate; `detail` says why, `field` where"}})
    async def resolve(request: Request) -> Response:
        status, payload = answer_body(await request.body())
        return Response(payload, status, media_type=JSON)

    @api.get("/v1/matrix", summary="The matrix served: data version and ETag (If-None-Match -> 304)",
             responses={200: {"description": "data version, ETag, origin, rows per table"},
                        304: {"description": "not modified"}})
    async def matrix(request: Request) -> Response:
        headers = {"ETag": info.etag, "Cache-Control": "public, max-age=60"}
        if _matches(request.headers.get("if-none-match", ""), info.etag):
            return Response(status_code=304, headers=headers)
        return Response(answerer.matrix_document(), headers=headers, media_type=JSON)

    @api.get("/healthz", summary="Liveness")
    async def healthz() -> Response:
        return _json({"status": "ok", "version": __version__, "matrix_version": info.data_version, "mode": mode})

    @api.get("/metrics", summary="Prometheus text")
    async def prometheus() -> Response:
        return Response(metrics.render(labels), media_type="text/plain; version=0.0.4; charset=utf-8")

    api.openapi()  # build the schema once now, not on the first /openapi.json
    # index mode runs pip (seconds): off the event loop, so /healthz and cached answers are not held up
    return Guard(api, token, settings.max_body, metrics, log if settings.log_requests else None, answer_body,
                 offload=index is not None)


def _matches(header: str, etag: str) -> bool:
    """If-None-Match against our ETag: a list, weak forms and * included (RFC 9110 weak comparison)."""
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or (tag[2:] if tag.startswith("W/") else tag) == etag:
            return True
    return False


class Guard:
    """The ASGI layer around the routes: size limit, bearer token, timing, metrics, the JSON request log."""

    def __init__(self, app: ASGIApp, token: Optional[bytes], max_body: int, metrics: Metrics,
                 log: Optional[Any], resolve: Optional[Callable[[bytes], Tuple[int, bytes]]] = None,
                 offload: bool = False) -> None:
        self.app, self.token, self.max_body, self.metrics, self.log = app, token, max_body, metrics, log
        self.resolve = resolve  # the hot path: POST /v1/resolve answered here
        self.offload = offload  # answer in a worker thread (index mode: pip runs for seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection event (lifespan passes through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, method = scope.get("path", ""), scope.get("method", "")
        state = {"status": 0, "out": 0, "in": 0}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            early = self._refuse(scope)
            body: Optional[bytes] = None
            if early is None and method in ("POST", "PUT", "PATCH"):
                body = await self._read(receive)
                if body is None:
                    early = _problem(413, f"the body is larger than {self.max_body} bytes")
                else:
                    state["in"] = len(body)
            if early is not None:
                await early(scope, receive, sending)
            elif body is not None and self.resolve is not None and path == "/v1/resolve" and method == "POST":
                if self.offload:
                    status, payload = await asyncio.to_thread(self.resolve, body)
                else:
                    status, payload = self.resolve(body)
                await sending({"type": "http.response.start", "status": status,
                               "headers": [(b"content-type", b"application/json"),
                                           (b"content-length", str(len(payload)).encode())]})
                await sending({"type": "http.response.body", "body": payload})
            elif body is not None:
                await self.app(scope, _replay(body, receive), sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe(method, path, state["status"] or 500, seconds)
            if self.log is not None:
                request_line(self.log, {"method": method, "path": path, "status": state["status"],
                                        "ms": round(seconds * 1000, 3), "bytes_in": state["in"], "bytes_out": state["out"]})

    def _refuse(self, scope: Scope) -> Optional[Response]:
        """401 without the right token, 413 when Content-Length says too much; None to go on."""
        headers = dict(scope.get("headers") or [])
        if self.token is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            # compare_digest: the time taken does not tell how much of a guessed token was right
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                return _json({"detail": "a bearer token is required"}, 401, {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return _problem(413, f"the body is larger than {self.max_body} bytes")
            except ValueError:
                return _problem(422, "Content-Length is not a number")
        return None

    async def _read(self, receive: Receive) -> Optional[bytes]:
        """The whole body, or None once it passes the limit (chunked bodies have no Content-Length)."""
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the body read by the Guard to the app once, then waits on the real one."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
