"""Concurrency stress on the doctor's own cache: N processes x M iterations writing, reading and importing
the same entries at once. Prints the counts; exits 1 on any ImportError or torn read.

Every entry is seeded before the workers start, so a read that finds nothing usable is a torn read, not a
miss. JSON payloads and generated modules carry the sha256 of their payload, checked on every read/import.
With --corrupt-every K, a worker overwrites a generated module IN PLACE with garbage every K iterations (the
way a crashed non-atomic writer would leave it); get_or_create_module must take that as a miss and
regenerate it, never raise.

    python benchmarks/cache_stress.py                    # 16 processes x 200 iterations
    python benchmarks/cache_stress.py --procs 4 --iters 50 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
COUNTERS = ("json_writes", "json_reads", "torn_reads", "module_writes", "imports", "import_errors", "torn_imports",
            "get_or_create", "regenerations", "corruptions_injected")


def _payload(rng: random.Random) -> str:
    """A few KB of text that differs between writes."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(256, 4096)))


def _digest(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _module_source(writer: int, i: int, payload: str) -> str:
    """A generated module whose content checks itself."""
    return f"WRITER = {writer}\nITERATION = {i}\nPAYLOAD = {payload!r}\nDIGEST = {_digest(payload)!r}\n"


def worker(root: str, wid: int, iters: int, entries: int, corrupt_every: int) -> Dict[str, int]:
    """One process's share of the stress; returns its counts."""
    sys.path.insert(0, str(REPO))  # the doctor package, when run from a checkout without installing
    from doctor.cache.own import DoctorCache

    cache = DoctorCache(Path(root))
    rng = random.Random(wid * 7919 + 1)
    c = {k: 0 for k in COUNTERS}
    errors: List[str] = []
    print("ready", flush=True)
    sys.stdin.readline()  # the go signal: all workers start together
    for i in range(iters):
        e = (wid + i) % entries
        other = (e + 1 + wid) % entries
        p = _payload(rng)
        cache.write_json("stress", f"j{e}", {"writer": wid, "i": i, "payload": p, "sha": _digest(p)})
        c["json_writes"] += 1
        data = cache.read_json("stress", f"j{other}")
        c["json_reads"] += 1
        if data is None or _digest(str(data.get("payload"))) != data.get("sha"):
            c["torn_reads"] += 1
        cache.write_module("stressmod", f"m{e}", _module_source(wid, i, p))
        c["module_writes"] += 1
        try:
            mod = cache.import_module("stressmod", f"m{other}", f"stress_m{other}_{wid}")
        except Exception as exc:  # ImportError, SyntaxError: what this whole design must prevent
            c["import_errors"] += 1
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            c["imports"] += 1
            if mod is None or _digest(mod.PAYLOAD) != mod.DIGEST:
                c["torn_imports"] += 1
        if i % 5 == 0:
            g = i % entries
            if corrupt_every and i % corrupt_every == 0 and wid % 2 == 0:
                path = cache.module_path("stressgen", f"g{g}")
                try:
                    with open(path, "r+b") as fh:  # in place, like a non-atomic writer dying halfway
                        fh.seek(0)
                        fh.write(b"def broken(:\n")
                    c["corruptions_injected"] += 1
                except OSError:
                    pass

            def generate(g: int = g, i: int = i) -> str:
                c["regenerations"] += 1
                return _module_source(wid, i, f"generated-{g}")

            try:
                mod = cache.get_or_create_module("stressgen", f"g{g}", generate, f"stress_g{g}_{wid}")
                c["get_or_create"] += 1
                if _digest(mod.PAYLOAD) != mod.DIGEST:
                    c["torn_imports"] += 1
            except Exception as exc:
                c["import_errors"] += 1
                errors.append(f"get_or_create: {type(exc).__name__}: {exc}")
    if errors:
        print("errors: " + " | ".join(errors[:3]), file=sys.stderr)
    return c


def run(procs: int, iters: int, entries: int, root: str, corrupt_every: int, timeout: float) -> Dict[str, object]:
    """Seed the entries, start the workers together, wait, and add up their counts."""
    sys.path.insert(0, str(REPO))
    from doctor.cache.own import DoctorCache

    cache = DoctorCache(Path(root))
    seed = random.Random(0)
    for e in range(entries):
        p = _payload(seed)
        cache.write_json("stress", f"j{e}", {"writer": -1, "i": -1, "payload": p, "sha": _digest(p)})
        cache.write_module("stressmod", f"m{e}", _module_source(-1, -1, p))
        cache.write_module("stressgen", f"g{e}", _module_source(-1, -1, f"generated-{e}"))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    children = [subprocess.Popen([sys.executable, __file__, "--worker", root, str(w), str(iters), str(entries),
                                  str(corrupt_every)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env) for w in range(procs)]
    for ch in children:
        assert ch.stdout is not None
        if ch.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker failed to start: {ch.stderr.read() if ch.stderr else ''}")
    t0 = time.perf_counter()
    for ch in children:  # go
        assert ch.stdin is not None
        ch.stdin.write("go\n")
        ch.stdin.flush()
    totals = {k: 0 for k in COUNTERS}
    stderr: List[str] = []
    for ch in children:
        out, err = ch.communicate(timeout=timeout)
        if ch.returncode != 0:
            raise SystemExit(f"worker exited {ch.returncode}: {err[-2000:]}")
        counts = json.loads(out.strip().splitlines()[-1])
        for k in COUNTERS:
            totals[k] += counts[k]
        if err.strip():
            stderr.append(err.strip())
    elapsed = time.perf_counter() - t0
    return {"procs": procs, "iterations": iters, "entries": entries, "seconds": round(elapsed, 2), **totals,
            "worker_stderr": stderr[:3]}


def main() -> int:
    """Parse arguments; run as the coordinator, or as one worker (--worker)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        root, wid, iters, entries, corrupt = sys.argv[2], *map(int, sys.argv[3:7])
        print(json.dumps(worker(root, wid, iters, entries, corrupt)), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--entries", type=int, default=4, help="distinct keys per entry type, shared by all workers")
    ap.add_argument("--corrupt-every", type=int, default=50, help="in-place corruption of a generated module (0: never)")
    ap.add_argument("--root", default=None, help="cache directory (default: a fresh temp dir, removed afterwards)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    args = ap.parse_args()
    tmp = None
    if args.root is None:
        tmp = tempfile.TemporaryDirectory(prefix="tune-doctor-stress-")
        root = tmp.name
    else:
        root = args.root
    try:
        res = run(args.procs, args.iters, args.entries, root, args.corrupt_every, args.timeout)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(res))
    else:
        print(f"cache stress: {res['procs']} processes x {res['iterations']} iterations on {res['entries']} shared "
              f"entries per type, {res['seconds']} s")
        for k in COUNTERS:
            print(f"  {k:22s} {res[k]}")
    bad = int(res["import_errors"]) + int(res["torn_reads"]) + int(res["torn_imports"])  # type: ignore[call-overload]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
