"""probes.store.probing: one process per machine probes an environment; the others wait, then read its verdicts.

Real processes on a real lock file in a temporary DOCTOR_CACHE_DIR: `doctor run` under torchrun starts one process
per GPU at once, and each would otherwise run the whole probe suite side by side with the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from doctor.cache.own import DoctorCache
from doctor.probes import store
from tests.conftest import REPO

FP = "fp-test-probing"

# A process that takes the probing lock, and either probes (saves a verdict after a while) or, having waited,
# reports what the other one saved. It prints one line: "probed" or "waited: <ids in the store>".
CHILD = textwrap.dedent("""
    import sys, time
    from doctor.probes import store
    from doctor.verdicts import ProbeResult
    with store.probing(sys.argv[1], on_wait=lambda: print("waiting", file=sys.stderr, flush=True)) as waited:
        if waited:
            print("waited: " + ",".join(sorted(store.load(sys.argv[1]))), flush=True)
        else:
            open(sys.argv[2], "w").close()  # the other process may start now
            time.sleep(float(sys.argv[3]))
            store.save(sys.argv[1], [ProbeResult("kernels.rms_norm", "doctor-triton", "pass", op="rms_norm")], {})
            print("probed", flush=True)
""")


def _child(tmp: Path, marker: Path, hold: float) -> "subprocess.Popen[str]":
    env = {**os.environ, "DOCTOR_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, FP, str(marker), str(hold)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_the_second_process_waits_and_reads_the_first_ones_verdicts(tmp_path: Path) -> None:
    first = _child(tmp_path, tmp_path / "first-holds", hold=2.0)
    _wait_for(tmp_path / "first-holds")
    second = _child(tmp_path, tmp_path / "second-holds", hold=0.0)
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == second.returncode == 0, err1 + err2
    assert out1.strip() == "probed"
    assert out2.strip() == "waited: kernels.rms_norm" and "waiting" in err2  # it said why it waits
    assert not (tmp_path / "second-holds").exists()  # it never probed


def test_one_process_alone_probes_without_waiting(tmp_path: Path) -> None:
    cache = DoctorCache(tmp_path / "cache")
    with store.probing(FP, cache=cache) as waited:
        assert waited is False
    with store.probing(FP, cache=cache) as waited:  # released: free again
        assert waited is False


def test_a_lock_held_too_long_lets_the_waiter_probe_by_itself(tmp_path: Path) -> None:
    """A stuck prober (a hung GPU) must not stall every rank forever: past `wait`, probe anyway."""
    first = _child(tmp_path, tmp_path / "first-holds", hold=5.0)
    try:
        _wait_for(tmp_path / "first-holds")
        t = time.monotonic()
        with store.probing(FP, cache=DoctorCache(tmp_path / "cache"), wait=0.3) as waited:
            assert waited is False
        assert time.monotonic() - t < 3
    finally:
        first.kill()
        first.wait(timeout=30)


def test_an_unwritable_cache_probes_without_a_lock(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with store.probing(FP, cache=DoctorCache(blocker / "cache")) as waited:  # mkdir under a file fails
        assert waited is False
