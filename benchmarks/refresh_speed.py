"""`doctor matrix refresh` against the REAL package index: wall time, bytes downloaded vs the wheels' size, and
whether it reproduces every row of [xformers_torch] and [torch_triton] in ../shared/facts/compat-facts.toml.

Needs the network (the package index). Writes its overlay into a temporary $DOCTOR_CACHE_DIR, never into the
user's. Each run is a whole `doctor matrix refresh --json` process; the rows of the first run are compared with
the facts (extra rows, older or newer releases, are allowed and listed). Exit 1 when a fact row is missing or
differs.

    python benchmarks/refresh_speed.py                      # xformers and torch, 3 runs
    python benchmarks/refresh_speed.py --package xformers   # the issue's figure
    python benchmarks/refresh_speed.py --facts PATH --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
FACTS = (REPO / ".." / "shared" / "facts" / "compat-facts.toml").resolve()
TABLES = {"xformers": "xformers_torch", "torch": "torch_triton"}


def run_once(packages: List[str], index_url: str) -> Tuple[float, Dict[str, Any]]:
    """(wall seconds, --json document) of one refresh process with a fresh cache directory."""
    with tempfile.TemporaryDirectory(prefix="refresh-bench-") as cache:
        env = {**os.environ, "DOCTOR_CACHE_DIR": cache}
        cmd = [sys.executable, "-m", "doctor", "matrix", "refresh", "--json", "--index-url", index_url]
        for p in packages:
            cmd += ["--package", p]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - t0
    if res.returncode not in (0, 1):
        raise SystemExit(f"refresh failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return took, json.loads(res.stdout)


def facts_rows(path: Path) -> Dict[str, Dict[str, str]]:
    """table -> {version: specifier} of the two tables the refresh must reproduce."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return {t: {str(k): str(v) for k, v in doc[t].items()} for t in TABLES.values()}


def compare(doc: Dict[str, Any], facts: Dict[str, Dict[str, str]]) -> Tuple[List[str], List[str], Dict[str, List[str]]]:
    """(reproduced lines, problems, extra releases per table)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    ok: List[str] = []
    problems: List[str] = []
    extra: Dict[str, List[str]] = {}
    for pkg in doc["packages"]:
        table = pkg["table"]
        got = {Version(r["version"]): r["spec"] for r in pkg["rows"]}
        want = facts.get(table, {})
        for v_text, spec in want.items():
            v = Version(v_text)
            if v not in got:
                problems.append(f"[{table}] {v_text}: not derived (facts: {spec})")
            elif SpecifierSet(got[v]) != SpecifierSet(spec):
                problems.append(f"[{table}] {v_text}: derived {got[v]}, facts {spec}")
            else:
                ok.append(f"[{table}] {v_text} = {spec}")
        extra[table] = [str(v) for v in sorted(got) if str(v) not in want and v not in {Version(w) for w in want}]
    return ok, problems, extra


def size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", choices=sorted(TABLES), help="default: both")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--index-url", default="https://pypi.org/simple")
    ap.add_argument("--facts", type=Path, default=FACTS)
    args = ap.parse_args()
    packages = args.package or ["xformers", "torch"]

    times: List[float] = []
    first: Dict[str, Any] = {}
    for i in range(args.runs):
        took, doc = run_once(packages, args.index_url)
        times.append(took)
        first = first or doc
        print(f"run {i + 1}: {took:.2f} s wall, {doc['requests']} requests, {size(doc['bytes_downloaded'])} downloaded")

    doc = first
    total = doc["wheels_total_size"]
    print(f"\npackages: {', '.join(packages)}; index: {args.index_url}")
    print(f"wall time: median {statistics.median(times):.2f} s, min {min(times):.2f} s over {len(times)} runs")
    print(f"downloaded: {size(doc['bytes_downloaded'])} in {doc['requests']} requests; the wheels read total "
          f"{size(total)} ({total / max(doc['bytes_downloaded'], 1):.0f}x more)")
    for pkg in doc["packages"]:
        print(f"  {pkg['package']}: {len(pkg['rows'])} releases, wheels {size(pkg['wheels_total_size'])}, via "
              f"{sorted({r['via'] for r in pkg['rows']})}; {len(pkg['skipped'])} skipped (no requirement)")
        # against the data the doctor ships (doctor/compat_matrix/data): specs AND cpp_lib.json builds
        for d in pkg["differs"]:
            print(f"    differs from the shipped data: {d}")
        if pkg["missing"]:
            print(f"    shipped rows not derived: {', '.join(pkg['missing'])}")
    if doc["warnings"]:
        print("warnings:\n  " + "\n  ".join(doc["warnings"]))

    if not args.facts.is_file():
        print(f"\nno facts file at {args.facts}: comparison skipped")
        return 0
    ok, problems, extra = compare(doc, facts_rows(args.facts))
    print(f"\nfacts ({args.facts.name}): {len(ok)} rows reproduced, {len(problems)} not")
    for p in problems:
        print(f"  MISSING/DIFFERS {p}")
    for table, versions in extra.items():
        print(f"  extra rows in [{table}] (allowed): {', '.join(versions) or 'none'}")
    print("\nRESULTS.md row:")
    print(f"| {time.strftime('%Y-%m-%d')} | {', '.join(packages)} | {statistics.median(times):.2f} s | "
          f"{doc['requests']} | {size(doc['bytes_downloaded'])} | {size(total)} | {total / max(doc['bytes_downloaded'], 1):.0f}x | "
          f"{len(ok)}/{len(ok) + len(problems)} | {platform.python_version()} |")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
