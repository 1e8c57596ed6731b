"""Whole-process wall time: `doctor check --json` (no probes) vs `python -m torch.utils.collect_env`.

Same interpreter and environment, runs alternated so drift hits both alike; prints medians and the ratio
and, with --write, records them with the machine described in benchmarks/RESULTS.md.

    python benchmarks/check_speed.py --runs 15 --write

Bytecode matters: a pip install compiles the doctor's modules to .pyc; an editable install under
PYTHONDONTWRITEBYTECODE=1 (or a uv install without --compile-bytecode) compiles them from source on every
run, about 35-40 ms more on a 2-core box. The bytecode state is printed and recorded; --compile writes the
.pyc files first (compileall, as pip does at install time).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
# What `doctor check --json --no-probes` cannot run without, outside its own code (read off `-X importtime`):
# the CLI's argparse, json for the output, dataclasses/typing, and packaging for versions, specifiers and the
# Requires-Dist lines (packaging.requirements pulls markers, utils, tags, logging, platform, sysconfig).
FLOOR_MODULES = ("argparse", "json", "re", "dataclasses", "typing", "packaging.version", "packaging.specifiers",
                 "packaging.requirements")
RESULTS = HERE / "RESULTS.md"


def timed(cmd: List[str], timeout: float = 300) -> float:
    """Seconds one command takes from spawn to exit (output discarded).

    The wait is a blocking waitpid, with the timeout as a watchdog that kills the command. Not
    subprocess.run(timeout=...): with a timeout, Popen.wait polls with sleeps of 1, 2, 4 ... 32, then 50 ms,
    so an exit is only seen 1, 3, 7, 15, 31, 63, 113, 163 ... ms after the spawn, and every run between
    63 and 113 ms read as 113 ms (the 114 ms rows in RESULTS.md before 2026-12-01 were that step).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        proc.wait()
    finally:
        watchdog.cancel()
    return time.perf_counter() - t0


# `python -c` body that runs `doctor` from a source tree (argv[1]) instead of the installed one: an editable
# install's finder sits in sys.meta_path ahead of PYTHONPATH, so it is taken out first.
_FROM_TREE = ("import runpy, sys; tree = sys.argv.pop(1); "
              "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
              "sys.path.insert(0, tree); sys.argv[0] = 'doctor'; runpy.run_module('doctor', run_name='__main__', alter_sys=True)")


def doctor_bytecode() -> str:
    """Whether the doctor's modules have .pyc files: 'pyc' or 'source (N of M modules without .pyc)'."""
    import importlib.util

    spec = importlib.util.find_spec("doctor")
    if spec is None or not spec.submodule_search_locations:
        return "doctor not found"
    root = Path(list(spec.submodule_search_locations)[0])
    sources = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    missing = [p for p in sources if not Path(importlib.util.cache_from_source(str(p))).exists()]
    dont = " (PYTHONDONTWRITEBYTECODE set)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    return ("pyc" if not missing else f"source ({len(missing)} of {len(sources)} modules without .pyc)") + dont


def compile_doctor() -> None:
    """Write the doctor's .pyc files, as pip does when it installs a wheel."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("doctor")
    if spec is not None and spec.submodule_search_locations:
        compileall.compile_dir(list(spec.submodule_search_locations)[0], quiet=1)


def machine() -> str:
    """One line describing where this ran."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        tv = version("torch")
    except Exception:
        tv = "?"
    ndists = sum(1 for _ in __import__("importlib.metadata").metadata.distributions())
    return (f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"torch {tv}, {ndists} distributions installed")


def main() -> int:
    """Run the comparison and print (and optionally record) the result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--write", action="store_true", help=f"append the result to {RESULTS.name}")
    ap.add_argument("--label", default="", help="machine label for the results table")
    ap.add_argument("--compile", action="store_true", help="write the doctor's .pyc files first (as a pip install has them)")
    ap.add_argument("--floor", action="store_true",
                    help="also time, in the same alternation, `python -c pass` and a process importing only what the "
                         "doctor cannot do without (" + ", ".join(FLOOR_MODULES) + "): the part of the time that is not the doctor's")
    ap.add_argument("--tree", action="append", default=[], metavar="DIR",
                    help="run the doctor from this source tree (a folder holding doctor/, e.g. `git archive <commit> doctor "
                         "| tar -x -C DIR`) instead of the installed one; repeat to compare trees in the same alternation")
    args = ap.parse_args()
    if args.write and args.tree:
        ap.error("--write records the installed doctor; leave out --tree")
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ImportError
    except ImportError:
        print("torch is not installed in this interpreter: collect_env needs it (pip install torch==2.13.0)", file=sys.stderr)
        return 3
    if args.compile:
        compile_doctor()
        for tree in args.tree:
            import compileall

            compileall.compile_dir(str(Path(tree) / "doctor"), quiet=1)
    check = ["check", "--json", "--no-probes"]
    doctors = [[sys.executable, "-m", "doctor", *check]] if not args.tree else \
        [[sys.executable, "-c", _FROM_TREE, tree, *check] for tree in args.tree]
    collect = [sys.executable, "-m", "torch.utils.collect_env"]
    for cmd in doctors:
        timed(cmd)
    timed(collect)  # warm the file cache for all, as a user's second run would be
    ds: List[List[float]] = [[] for _ in doctors]
    floors = [("python -c pass", [sys.executable, "-c", "pass"]),
              ("imports the doctor needs", [sys.executable, "-c", "import " + ", ".join(FLOOR_MODULES)])] if args.floor else []
    fl: Dict[str, List[float]] = {name: [] for name, _ in floors}
    c: List[float] = []
    for _ in range(args.runs):
        for i, cmd in enumerate(doctors):
            ds[i].append(timed(cmd))
        c.append(timed(collect))
        for name, cmd in floors:
            fl[name].append(timed(cmd))
    mc = statistics.median(c)
    desc = (args.label or machine()) + f"; doctor bytecode: {doctor_bytecode()}"
    print(f"machine: {desc}")
    for i, d in enumerate(ds):
        md = statistics.median(d)
        name = f"doctor ({args.tree[i]})" if args.tree else "doctor check --json --no-probes"
        print(f"{name:<32} median {md * 1000:7.1f} ms  (min {min(d) * 1000:.1f}, max {max(d) * 1000:.1f}, n={len(d)}); "
              f"collect_env / doctor = {mc / md:.1f}x")
    print(f"torch.utils.collect_env          median {mc * 1000:7.0f} ms  (min {min(c) * 1000:.0f}, max {max(c) * 1000:.0f}, n={len(c)})")
    for name, times in fl.items():
        print(f"{name:<32} median {statistics.median(times) * 1000:7.1f} ms  (min {min(times) * 1000:.1f}, "
              f"max {max(times) * 1000:.1f}, n={len(times)})")
    md = statistics.median(ds[0])
    if fl:
        own = md - statistics.median(fl["imports the doctor needs"])
        print(f"the doctor's own part (its median minus the imports'): {own * 1000:.1f} ms")
    print(f"ratio: doctor is {mc / md:.1f}x faster; target >= 15x and <= 0.15 s (issue 7)")
    if args.write:
        row = (f"| {_dt.date.today()} | {desc} | {md * 1000:.0f} ms | {mc * 1000:.0f} ms | {mc / md:.1f}x | {len(ds[0])} |\n")
        if not RESULTS.exists() or "## doctor check speed" not in RESULTS.read_text():
            with RESULTS.open("a") as fh:
                fh.write("\n## doctor check speed (benchmarks/check_speed.py)\n\n"
                         "Whole-process wall time, median of alternating runs, same interpreter and environment.\n\n"
                         "| date | machine | doctor check --json | collect_env | ratio | runs |\n|---|---|---|---|---|---|\n")
        text = RESULTS.read_text()
        marker = "| date | machine | doctor check --json | collect_env | ratio | runs |\n|---|---|---|---|---|---|\n"
        i = text.index(marker) + len(marker)
        # keep rows of this table together, newest last
        j = i
        while j < len(text) and text[j] == "|":
            j = text.index("\n", j) + 1
        tmp = RESULTS.with_suffix(".md.tmp")
        tmp.write_text(text[:j] + row + text[j:])
        os.replace(tmp, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
