"""Run a command while MOUNTPOINT is a FUSE mount whose daemon (a child process) never answers.

    python tests/cache/fuse_hang.py MOUNTPOINT -- CMD [ARGS...]

Everything happens in a private mount namespace (unshare CLONE_NEWNS, / made private), so nothing leaks
to the host. The daemon child holds /dev/fuse and sleeps: every stat/open/readdir under MOUNTPOINT blocks
in the kernel, exactly like a hung NFS server or a dead sshfs. After CMD ends (or its timeout), the daemon
is killed, which aborts the connection (blocked calls get ENOTCONN), and the mount is detached.

Prints one JSON line: {"rc": CMD's exit code or null on timeout, "seconds": wall time, "stdout": ..., "stderr": ...}.
Exit code 77 (and a reason on stderr) when this machine cannot do it: no /dev/fuse, no CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
MNT_DETACH = 2


def fail(why: str) -> "None":
    print(why, file=sys.stderr)
    raise SystemExit(77)


def main() -> int:
    if "--" not in sys.argv or sys.argv.index("--") != 2:
        fail("usage: fuse_hang.py MOUNTPOINT -- CMD...")
    mp, cmd = sys.argv[1], sys.argv[3:]
    timeout = float(os.environ.get("FUSE_HANG_TIMEOUT", "60"))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        fail(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        fail(f"making / private: {os.strerror(ctypes.get_errno())}")
    os.makedirs(mp, exist_ok=True)
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as exc:
        fail(f"/dev/fuse: {exc.strerror}")
    opts = f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()}".encode()
    if libc.mount(b"tune-doctor-hang", mp.encode(), b"fuse", 0, opts) != 0:
        fail(f"mounting fuse: {os.strerror(ctypes.get_errno())}")
    daemon = os.fork()
    if daemon == 0:  # the daemon that never answers: holds the connection, reads nothing
        while True:
            time.sleep(3600)
    os.close(fd)  # only the daemon holds it now; killing the daemon aborts the connection
    t0 = time.monotonic()
    rc = None
    out = err = ""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = "TIMEOUT"
    seconds = time.monotonic() - t0
    os.kill(daemon, signal.SIGKILL)
    os.waitpid(daemon, 0)
    libc.umount2(mp.encode(), MNT_DETACH)
    print(json.dumps({"rc": rc, "seconds": round(seconds, 3), "stdout": out, "stderr": err}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
