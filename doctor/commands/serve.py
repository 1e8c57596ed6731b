"""`doctor serve`: the resolution service (FastAPI + uvicorn, extra `serve`), loopback unless told otherwise."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from doctor.commands import add_common, count_at_least
from doctor.errors import DoctorError
from doctor.exits import ExitCode, epilog

EXIT_CODES = epilog((ExitCode.HEALTHY, ExitCode.BAD_INPUT, ExitCode.INTERNAL, ExitCode.INTERRUPTED), notes=(
    "3 also: the `serve` extra is not installed (the line says how to install it), the token file is unreadable, "
    "the port is taken, --index-url (or DOCTOR_INDEX_URL) is not an http(s) index URL or carries credentials",
))

INSTALL_HINT = "pip install 'tune-doctor[serve]'"


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor serve` and its options."""
    p = sub.add_parser("serve", help="the resolution service: findings, pins and plans over HTTP for a fleet (extra `serve`)",
                       description="Serve POST /v1/resolve, GET /v1/matrix, /healthz, /metrics and /openapi.json. "
                                   "Stateless and read-only; answers from the matrix (offline-matrix mode), or with "
                                   "--index-url plans resolved by pip against that index and verified (index mode; "
                                   "offline-matrix with a note when the index cannot answer). Binds to "
                                   "127.0.0.1 unless --host says otherwise; TLS is the reverse proxy's job.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=count_at_least(0), default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--workers", type=count_at_least(1), default=1, help="worker processes (default 1)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="require `Authorization: Bearer TOKEN` (the token is this file's content) on every path but /healthz")
    p.add_argument("--cache-size", type=count_at_least(0), default=256, metavar="N",
                   help="answers kept per worker for repeated identical requests (default 256; 0: none)")
    p.add_argument("--index-url", default=None, metavar="URL",
                   help="index mode: plans resolved by pip against this package index (PEP 503/691 simple API) for "
                        "each client's Python and platform, and verified (default: $DOCTOR_INDEX_URL; unset: offline-matrix)")
    p.add_argument("--no-request-log", action="store_true", help="no JSON line per request (start-up and errors still log)")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the options and the extra, then run uvicorn until interrupted."""
    if args.port > 65535:
        raise DoctorError(f"--port {args.port}: at most 65535")
    try:
        import fastapi  # noqa: F401  (only to know the extra is there)
        import uvicorn
    except ImportError:
        raise DoctorError(f"`doctor serve` needs the serve extra (FastAPI + uvicorn): {INSTALL_HINT}") from None
    from doctor.envvars import DOCTOR_SERVE_SETTINGS
    from doctor.service.app import Settings, read_token
    from doctor.service.logs import log_config

    token_file = os.path.abspath(args.token_file) if args.token_file else None
    if token_file:
        read_token(token_file)  # one line and exit 3 now, not a traceback in every worker
    elif not _loopback(args.host):
        print(f"doctor serve: warning: binding {args.host} without --token-file: anyone who can reach it may ask",
              file=sys.stderr)
    from doctor.envvars import DOCTOR_INDEX_URL, DOCTOR_TORCH_INDEX_URL

    index_url = _index_url(args.index_url, "--index-url") if args.index_url else \
        _index_url(os.environ.get(DOCTOR_INDEX_URL, "").strip(), DOCTOR_INDEX_URL)
    torch_index_url = _index_url(os.environ.get(DOCTOR_TORCH_INDEX_URL, "").strip(), DOCTOR_TORCH_INDEX_URL)
    settings = Settings(token_file=token_file, cache_size=args.cache_size, log_requests=not args.no_request_log,
                        index_url=index_url, torch_index_url=torch_index_url)
    os.environ[DOCTOR_SERVE_SETTINGS] = settings.to_env()  # the workers (separate processes) read it in create_app
    try:
        uvicorn.run("doctor.service.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                    log_config=log_config(), access_log=False, server_header=False, proxy_headers=False)
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind; its own JSON line said why
        return int(ExitCode.BAD_INPUT) if exc.code else int(ExitCode.HEALTHY)
    return int(ExitCode.HEALTHY)


def _index_url(value: str, where: str) -> "str | None":
    """An http(s) index URL without credentials or whitespace (None for empty); DoctorError otherwise."""
    from urllib.parse import urlsplit

    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise DoctorError(f"{where} {value!r}: expected an http(s) URL of a package index (…/simple)")
    if parts.username or parts.password:  # the URL is in every answer's log line and the settings variable
        raise DoctorError(f"{where}: credentials in the URL are not accepted (use pip's keyring or netrc)")
    return value


def _loopback(host: str) -> bool:
    """Whether `host` is a loopback address or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
