"""Whole-process wall time of `doctor pin` offline (target: <= 0.3 s), and where the time goes.

Runs each command N times (alternated, so drift hits all alike) with the interpreter running this script and
prints the median and the worst run, then a markdown row for benchmarks/RESULTS.md. In-process, it splits one
run into reading the environment (distributions, torch/xformers build files), loading the matrix, and
computing the pins.

    python benchmarks/pin_speed.py --runs 15
    python benchmarks/pin_speed.py --python /path/to/venv/bin/python   # pins for another environment
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

TARGET_S = 0.3


def timed(cmd: List[str], timeout: float = 120) -> float:
    """Seconds one command takes from spawn to exit (output discarded); a failing command is an error."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                         stdin=subprocess.DEVNULL, check=False)
    took = time.perf_counter() - t0
    if res.returncode not in (0, 1):  # 1: a package without a fitting release, still a complete answer
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.decode(errors='replace')[-300:]}")
    return took


def in_process(python: Optional[str]) -> Dict[str, float]:
    """One run's parts, in seconds, measured inside this process (imports included in the first part)."""
    t0 = time.perf_counter()
    from doctor.resolve.pin_files import constraint_lines
    from doctor.resolve.pins import known_good_pins, pin_facts

    facts = pin_facts(python)
    t1 = time.perf_counter()
    from doctor.compat_matrix.loader import load_matrix

    matrix = load_matrix()
    t2 = time.perf_counter()
    ps = known_good_pins(facts, matrix)
    constraint_lines(ps)
    t3 = time.perf_counter()
    return {"environment": t1 - t0, "matrix": t2 - t1, "pins": t3 - t2}


def main(argv: Optional[List[str]] = None) -> int:
    """Time `doctor pin` as a user runs it and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--python", default=None, help="pin for this interpreter's environment (doctor pin --python)")
    args = ap.parse_args(argv)
    target = ["--python", args.python] if args.python else []
    commands = {
        "doctor pin": [sys.executable, "-m", "doctor", "pin", *target],
        "doctor pin --format json": [sys.executable, "-m", "doctor", "pin", "--format", "json", *target],
        "doctor pin --status": [sys.executable, "-m", "doctor", "pin", "--status", *target],
    }
    times: Dict[str, List[float]] = {k: [] for k in commands}
    timed(commands["doctor pin"])  # warm the page cache and the bytecode
    for _ in range(max(1, args.runs)):
        for name, cmd in commands.items():
            times[name].append(timed(cmd))
    parts = in_process(args.python)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; {args.runs} runs each")
    for name, ts in times.items():
        med = statistics.median(ts)
        verdict = "ok" if med <= TARGET_S else f"OVER the {TARGET_S} s target"
        print(f"  {name:28s} median {med * 1000:6.1f} ms   worst {max(ts) * 1000:6.1f} ms   {verdict}")
    print("  in-process: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in parts.items()))
    med = statistics.median(times["doctor pin"])
    print(f"\n| doctor pin (offline, whole process) | {med * 1000:.0f} ms median, {max(times['doctor pin']) * 1000:.0f} ms "
          f"worst of {args.runs} | target <= {TARGET_S * 1000:.0f} ms |")
    return 0 if med <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
