"""A real `doctor serve` (uvicorn) on 127.0.0.1, started by the tests in a subprocess and torn down after.

    def test_x(service):              # one server for the session
        httpx.get(service.url + "/healthz")
    service.log()                     # what it wrote on stderr (JSON lines)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import httpx
import pytest

START_TIMEOUT = 30.0


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server(NamedTuple):
    """A running `doctor serve` subprocess."""

    url: str
    proc: "subprocess.Popen[bytes]"
    stderr: Path

    def log(self) -> List[str]:
        """Its stderr lines so far."""
        return self.stderr.read_text(encoding="utf-8", errors="replace").splitlines()


def start_server(tmp: Path, *extra: str, env: Optional[dict] = None) -> Server:
    """`python -m doctor serve --port P *extra`, waited on until /healthz answers (or fails the test)."""
    port = free_port()
    err = tmp / f"serve-{port}.log"
    # index mode only when a test asks for it: a DOCTOR_INDEX_URL meant for the client must not turn it on
    full_env = {**{k: v for k, v in os.environ.items() if k != "DOCTOR_INDEX_URL"}, **(env or {})}
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "doctor", "serve", "--port", str(port), *extra],
                                stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"doctor serve exited {proc.returncode}: {err.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return Server(url, proc, err)
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(proc)
    raise AssertionError(f"doctor serve did not answer within {START_TIMEOUT} s: {err.read_text()[-2000:]}")


def stop_server(proc: "subprocess.Popen[bytes]") -> None:
    """SIGTERM, then SIGKILL when it does not end within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One plain server (no token) for the session."""
    srv = start_server(tmp_path_factory.mktemp("serve"))
    yield srv
    stop_server(srv.proc)


# The resolver tests' local index and recorded worlds (real venvs), for the client's end-to-end --fix test.
from tests.resolve.conftest import local_index, world  # noqa: E402,F401
