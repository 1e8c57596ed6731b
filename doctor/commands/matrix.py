"""`doctor matrix refresh [--package NAME...] [--dry-run] [--json]`: the matrix's metadata facts, re-read from the index."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from doctor.commands import add_common, count_at_least, seconds
from doctor.errors import DoctorError
from doctor.exits import COMMON, ExitCode, epilog

ACTIONS = ("refresh",)
PACKAGES = ("xformers", "torch")  # doctor.compat_matrix.refresh.derive.TARGETS, named here so --help needs no import
HELP = """refresh re-derives, from the package index and without downloading wheels:
  xformers -> [xformers_torch]  Requires-Dist on torch of each release's Linux x86_64 wheel, and the
                                torch/CUDA build of its xformers/cpp_lib.json (HTTP Range reads)
  torch    -> [torch_triton]    Requires-Dist on triton of each release's Linux x86_64 wheel (CPython 3.11)
METADATA comes from the PEP 658 .metadata file when the index advertises one, else from the wheel by HTTP
Range reads of its zip central directory. The rows go to a user-level overlay, matrix-overlay.json in the
doctor's cache directory ($DOCTOR_CACHE_DIR, else ~/.cache/tune-doctor on Linux), written atomically, every
row with its date and wheel URL. `doctor check` lays it over the shipped data (releases the shipped data
lacks are added; its header then shows "matrix <version>+refresh.<date>") and never waits for the network;
delete the file to go back to the shipped data. A failed refresh writes nothing: the previous overlay stays.

examples:
  doctor matrix refresh                      # both tables, ~5 s and ~9 MB from the default index
  doctor matrix refresh --package xformers --dry-run
  doctor matrix refresh --json | jq '.packages[].new'

""" + epilog(COMMON + (ExitCode.CHANGE_FAILED,), notes=(
    "refresh: 1 when it wrote the overlay with warnings (e.g. a .metadata file whose sha256 did not match)",
    "refresh: 5 when the index could not be read as needed (timeout, HTTP error, no Range support, a broken "
    "wheel): nothing written",
))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor matrix` and its options."""
    m = sub.add_parser("matrix", help="the compatibility matrix: refresh its metadata facts from the package index",
                       epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("action", metavar="ACTION", help="refresh")
    m.add_argument("--package", action="append", default=None, metavar="NAME",
                   help=f"refresh only these ({', '.join(PACKAGES)}; repeatable or comma-separated; default: all)")
    m.add_argument("--dry-run", action="store_true", help="derive and compare, write nothing")
    m.add_argument("--json", action="store_true", help="machine-readable output (has a schema_version)")
    m.add_argument("--index-url", default=None, metavar="URL",
                   help="simple-API root to read (default: $DOCTOR_INDEX_URL, else https://pypi.org/simple)")
    m.add_argument("--timeout", type=seconds, default=20.0, metavar="S", help="seconds per connect/read (default 20)")
    m.add_argument("--retries", type=count_at_least(0), default=3, metavar="N",
                   help="retries of a request that timed out, was cut short or answered 5xx (default 3)")
    m.add_argument("--concurrency", type=count_at_least(1), default=8, metavar="N",
                   help="requests in flight at once (default 8)")
    add_common(m)
    m.set_defaults(run=run)


def _packages(values: Optional[List[str]]) -> Tuple[str, ...]:
    if not values:
        return PACKAGES
    out: List[str] = []
    for v in values:
        for name in (p.strip().lower() for p in v.split(",")):
            if not name:
                continue
            if name not in PACKAGES:
                raise DoctorError(f"--package {name!r}: the refresh derives {', '.join(PACKAGES)} (not {name})")
            if name not in out:
                out.append(name)
    if not out:
        raise DoctorError("--package: no package named")
    return tuple(out)


def _index_url(args: argparse.Namespace) -> str:
    from doctor.compat_matrix.refresh.simple_api import DEFAULT_INDEX
    from doctor.envvars import DOCTOR_INDEX_URL

    url = (args.index_url or os.environ.get(DOCTOR_INDEX_URL, "") or DEFAULT_INDEX).strip()
    if not url.startswith(("http://", "https://")):
        raise DoctorError(f"index URL {url!r}: expected an http(s) URL of a simple-API root")
    return url.rstrip("/")


def run(args: argparse.Namespace) -> int:
    """Run `doctor matrix ACTION`; exit codes are in HELP (doctor.exits)."""
    if args.action not in ACTIONS:
        raise DoctorError(f"unknown matrix action {args.action!r} (choose from {', '.join(ACTIONS)})")
    packages = _packages(args.package)
    index_url = _index_url(args)
    from doctor.compat_matrix.refresh.fetch import RefreshFailed
    from doctor.compat_matrix.refresh.run import refresh

    progress, stop = (None, lambda: None) if args.json else _progress(args)
    try:
        try:
            result = refresh(packages, index_url, dry_run=args.dry_run, timeout=args.timeout, retries=args.retries,
                             concurrency=args.concurrency, progress=progress)
        finally:
            stop()
    except RefreshFailed as e:
        return _failed(args, index_url, packages, str(e))
    code = ExitCode.WARNINGS if result.warnings else ExitCode.HEALTHY
    if args.json:
        from doctor.report.json import dumps

        print(dumps(refresh_document(result, int(code))))
    else:
        _text(args, result)
    return int(code)


def _failed(args: argparse.Namespace, index_url: str, packages: Tuple[str, ...], error: str) -> int:
    code = int(ExitCode.CHANGE_FAILED)
    if args.json:
        from doctor.report.json import dumps, envelope

        doc = {**envelope("matrix refresh", code, []), "index_url": index_url, "packages_asked": list(packages),
               "dry_run": bool(args.dry_run), "written": False, "error": error}
        print(dumps(doc))
    print(f"doctor: error: matrix refresh failed: {error}; nothing written (the previous overlay is unchanged)",
          file=sys.stderr)
    return code


def refresh_document(result: Any, exit_code: int) -> Dict[str, Any]:
    """`doctor matrix refresh --json`: the common envelope (doctor.report.json), then the refresh's own fields.

    index_url, dry_run, written, overlay (path), seconds, requests, bytes_downloaded, wheels_total_size,
    packages (per package: table, rows, skipped, new, differs, missing, wheels_total_size), warnings, error (null).
    """
    from doctor.report.json import envelope

    o = result.outcome
    packages = []
    for r in o.results:
        c = result.comparisons[r.target.package]
        packages.append({
            "package": r.target.package, "table": r.target.table, "requires": r.target.requires,
            "rows": [row.to_dict() for row in r.rows],
            "skipped": [{"version": s.version, "reason": s.reason} for s in r.skipped],
            "new": list(c.new), "differs": list(c.differs), "missing": list(c.missing),
            "wheels_total_size": r.wheels_total_size,
        })
    return {
        **envelope("matrix refresh", exit_code, []),
        "index_url": o.index_url, "dry_run": result.dry_run, "written": result.written, "overlay": result.overlay_path,
        "seconds": round(o.seconds, 3), "requests": o.requests, "bytes_downloaded": o.bytes_downloaded,
        "wheels_total_size": result.wheels_total_size, "packages": packages, "warnings": list(result.warnings),
        "error": None,
    }


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _text(args: argparse.Namespace, result: Any) -> None:
    from rich.text import Text

    from doctor.report.console import console

    out = console(args)
    o = result.outcome
    out.print(f"matrix refresh from {o.index_url}: {o.seconds:.1f} s, {o.requests} requests, "
              f"{_size(o.bytes_downloaded)} downloaded (instead of {_size(result.wheels_total_size)} of wheels)",
              soft_wrap=True, markup=False)
    for r in o.results:
        c = result.comparisons[r.target.package]
        new = f"{len(c.new)} not in the shipped data: {', '.join(c.new)}" if c.new else "all in the shipped data"
        skipped = f"; {len(r.skipped)} without a {r.target.requires} requirement skipped" if r.skipped else ""
        out.print(f"  {r.target.package} -> [{r.target.table}]: {len(r.rows)} releases ({new}){skipped}",
                  soft_wrap=True, markup=False)
        for d in c.differs:
            out.print(f"    differs from the shipped data (the shipped row is kept): {d}", soft_wrap=True, markup=False)
        if c.missing:
            out.print(f"    shipped rows not derived: {', '.join(c.missing)}", soft_wrap=True, markup=False)
    for w in result.warnings:
        out.print(Text("  ") + Text("warning", style="yellow") + Text(f": {w}"), soft_wrap=True)
    if result.written:
        out.print(f"overlay written: {result.overlay_path} (`doctor check` uses it from now on; delete the file to go "
                  "back to the shipped data)", soft_wrap=True, markup=False)
    else:
        out.print(f"dry run: nothing written ({result.overlay_path} unchanged)", soft_wrap=True, markup=False)


def _progress(args: argparse.Namespace) -> Tuple[Optional[Callable[[str, int, int], None]], Callable[[], None]]:
    """(callback, stop): a rich progress bar on a terminal (stderr), nothing elsewhere (CI logs get the summary)."""
    from doctor.report.console import console

    con = console(args, stderr=True)
    if not con.is_terminal:
        return None, lambda: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("[bold]refresh[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=con, transient=True)
    tasks: Dict[str, Any] = {}
    prog.start()

    def update(package: str, done: int, total: int) -> None:
        if package not in tasks:
            tasks[package] = prog.add_task(package, total=total)
        prog.update(tasks[package], completed=done, total=total)

    return update, prog.stop
