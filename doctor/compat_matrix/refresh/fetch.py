"""HTTP for the refresh: one httpx client with timeouts, retries with backoff, a connection limit, a byte count.

Retried: timeouts, connection errors, bodies cut short (the peer closed before Content-Length was reached),
429 and 5xx answers. Not retried: any other status (404 means what it says). After the last try the failure
is ONE RefreshFailed line naming the URL and what happened, so the command can say it and write nothing.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, TypeVar

if TYPE_CHECKING:
    import httpx

TIMEOUT = 20.0  # seconds for connecting and for each read; a stalled index must not hang the refresh
RETRIES = 3  # tries after the first one
BACKOFF = 0.5  # seconds before the first retry, doubled for each further one
CONCURRENCY = 8  # requests in flight at once (threads and pooled connections)
USER_AGENT = "tune-doctor-matrix-refresh"
_F = TypeVar("_F", bound="Fetcher")


class RefreshFailed(Exception):
    """The refresh could not derive what it was asked for: one line naming the URL or file and the reason."""


class _Retry(Exception):
    """A try that may succeed when repeated (timeouts, resets, 5xx); carries the line to show if none does."""


class Fetcher:
    """GETs, HEADs and Range reads through one pooled httpx client; counts requests and body bytes."""

    def __init__(self, timeout: float = TIMEOUT, retries: int = RETRIES, backoff: float = BACKOFF,
                 concurrency: int = CONCURRENCY, sleep: Callable[[float], None] = time.sleep) -> None:
        import httpx  # lazy: only a refresh pays for it

        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.concurrency = concurrency
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            trust_env=True,  # proxies and certificates as the user's environment sets them
        )
        self._lock = threading.Lock()
        self.bytes_downloaded = 0  # response bodies only (headers are not counted)
        self.requests = 0  # tries, retries included

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self: _F) -> _F:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, headers: Optional[Dict[str, str]] = None, what: str = "") -> "httpx.Response":
        """GET that must answer 200 (after redirects); the response with its body read."""
        return self._with_retries("GET", url, headers or {}, (200,), what)

    def head(self, url: str, what: str = "") -> "httpx.Response":
        """HEAD that must answer 200."""
        return self._with_retries("HEAD", url, {}, (200,), what)

    def get_range(self, url: str, start: int, end: int, what: str = "") -> bytes:
        """Bytes start..end (inclusive) of url by an HTTP Range request; anything but exactly those is an error."""
        want = end - start + 1

        def check(resp: "httpx.Response") -> None:
            if resp.status_code != 206:  # a 200 would be the whole file: exactly what the refresh must not download
                raise RefreshFailed(f"{what or url}: asked for bytes {start}-{end}, the server answered "
                                    f"{resp.status_code} instead of 206 Partial Content (no Range support)")
            got_range = _content_range(resp.headers.get("content-range", ""))
            if got_range is not None and got_range[:2] != (start, end):
                raise RefreshFailed(f"{what or url}: asked for bytes {start}-{end}, got {got_range[0]}-{got_range[1]}")
            if len(resp.content) != want:  # a short body is a truncated transfer: worth another try
                raise _Retry(f"truncated body: asked for {want} bytes ({start}-{end}), got {len(resp.content)}")

        resp = self._with_retries("GET", url, {"Range": f"bytes={start}-{end}"}, (206, 200), what, check)
        return resp.content

    def _with_retries(self, method: str, url: str, headers: Dict[str, str], ok: Tuple[int, ...], what: str,
                      check: Optional[Callable[["httpx.Response"], None]] = None) -> "httpx.Response":
        import httpx

        label = what or url
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff * (2 ** (attempt - 1)))
            with self._lock:
                self.requests += 1
            try:
                resp = self._client.request(method, url, headers=headers)
                with self._lock:
                    self.bytes_downloaded += len(resp.content)
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise _Retry(f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
                if resp.status_code not in ok:
                    status = f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip()
                    raise RefreshFailed(f"{label}: {status}" + (f" ({url})" if what else ""))
                if check is not None:
                    check(resp)
                return resp
            except _Retry as e:
                last = str(e)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s"
            except httpx.RemoteProtocolError as e:  # e.g. the peer closed before the promised Content-Length
                last = f"truncated or malformed answer ({_first_line(e)})"
            except httpx.TransportError as e:  # connection refused / reset, DNS
                last = f"{type(e).__name__}: {_first_line(e)}"
            except httpx.InvalidURL as e:
                raise RefreshFailed(f"{label}: invalid URL {url!r} ({e})") from None
        tries = self.retries + 1
        raise RefreshFailed(f"{label}: {last} (after {tries} {'try' if tries == 1 else 'tries'}; {url})")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _content_range(value: str) -> Optional[Tuple[int, int, Optional[int]]]:
    """(start, end, total) of a `Content-Range: bytes a-b/n` header; None when absent or not understood."""
    unit, _, rest = value.strip().partition(" ")
    if unit.lower() != "bytes" or "-" not in rest:
        return None
    span, _, total = rest.partition("/")
    a, _, b = span.partition("-")
    try:
        return int(a), int(b), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None
