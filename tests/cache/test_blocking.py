"""A cache root that blocks gives a finding within the timeout instead of hanging the doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doctor.actions import SetEnv
from doctor.cache.diagnose import check_caches
from doctor.cache.roots import resolve_roots
from doctor.cache.scan import Expect, scan_roots
from doctor.cache import location as cl
from tests.cache.conftest import by_id, make_facts

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, FUSE and mount namespaces")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture()
def blocking_fifo(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A FIFO with no reader: opening it for writing blocks in the kernel. Released at teardown."""
    fifo = tmp_path / "never-answers.fifo"
    os.mkfifo(fifo)
    yield fifo
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader appears: the stuck open() returns
    time.sleep(0.05)
    os.close(fd)


@linux_only
def test_scan_thread_blocked_in_the_kernel_is_abandoned(caches, blocking_fifo: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The Triton root's first filesystem call blocks for real (a FIFO open with no peer): unresponsive in ~timeout."""
    real_probe = cl.try_write

    def stuck_probe(path):  # type: ignore[no-untyped-def]
        if str(path) == str(caches.triton):
            with open(blocking_fifo, "wb"):  # blocks, like a stat on a dead NFS server
                pass
        return real_probe(path)

    monkeypatch.setattr(cl, "try_write", stuck_probe)
    t0 = time.monotonic()
    scans = scan_roots(resolve_roots(None, None, ("triton", "doctor")), Expect({}, None, frozenset(), str(caches.cwd)),
                       timeout=0.5, write_check=("triton", "doctor"))
    assert time.monotonic() - t0 < 3
    tri, doc = scans
    assert tri.status == "unresponsive" and "0.5 s" in tri.detail
    assert doc.status == "missing" and doc.write_check.writable  # the other root was not held up
    fs = check_caches(make_facts(caches.cwd, dists={"triton": "3.4.0"}))  # default 2 s limit
    [f] = by_id(fs, "cache.unresponsive")
    assert f.subject == str(caches.triton) and isinstance(f.fix[0], SetEnv) and f.fix[0].directory
    assert f.fix[0].name == "TRITON_CACHE_DIR"


def _fuse(cmd, env, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run a doctor command with the Triton cache on a FUSE mount that never answers; its result dict."""
    mnt = tmp_path / "hung"
    e = {**os.environ, **env, "TRITON_CACHE_DIR": str(mnt / "cache"), "FUSE_HANG_TIMEOUT": "40"}
    proc = subprocess.run([sys.executable, str(HERE / "fuse_hang.py"), str(mnt), "--", sys.executable, "-m", "doctor", *cmd],
                          capture_output=True, text=True, timeout=90, env=e, cwd=str(REPO))
    if proc.returncode == 77:
        pytest.skip(f"cannot mount an unresponsive FUSE filesystem here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@linux_only
def test_unresponsive_fuse_mount_status_and_check(tmp_path: Path) -> None:
    """A real mount whose daemon (a child process) never answers: status and check both finish, with the finding."""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind"), "DOCTOR_CACHE_DIR": str(tmp_path / "doc"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg"), "DOCTOR_GPUS": "none"}
    res = _fuse(["cache", "status", "--json", "--timeout", "1"], env, tmp_path)
    assert res["stderr"] != "TIMEOUT" and res["seconds"] < 10, res
    doc = json.loads(res["stdout"])
    assert res["rc"] == 2 and doc["exit_code"] == 2
    [tri] = [r for r in doc["roots"] if r["kind"] == "triton"]
    assert tri["status"] == "unresponsive" and tri["fs_type"] == "fuse"
    assert [f["id"] for f in doc["findings"] if f["severity"] == "error"] == ["cache.unresponsive"]
    res = _fuse(["check", "--json"], env, tmp_path)
    assert res["stderr"] != "TIMEOUT" and res["seconds"] < 12, res
    assert "cache.unresponsive" in [f["id"] for f in json.loads(res["stdout"])["findings"]]
