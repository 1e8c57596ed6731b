"""One refresh, end to end: derive the asked-for tables, compare them with the shipped data, write the overlay.

All or nothing: the overlay is written only after every package was derived (a RefreshFailed anywhere leaves
the previous overlay exactly as it was), and never in a dry run. Tables not refreshed this time are carried
over from the previous overlay when it is valid.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from doctor.compat_matrix.refresh import overlay as ov
from doctor.compat_matrix.refresh.derive import TARGETS, Outcome, PackageResult, Progress, Row, derive
from doctor.compat_matrix.refresh.fetch import BACKOFF, CONCURRENCY, RETRIES, TIMEOUT, Fetcher


class Comparison(NamedTuple):
    """A derived table against the shipped (embedded) one."""

    new: Tuple[str, ...]  # releases the shipped data lacks
    differs: Tuple[str, ...]  # "0.0.35: index >=2.10, shipped ==2.10.0" (the shipped row is kept on load)
    missing: Tuple[str, ...]  # shipped releases the refresh did not derive


class RefreshResult(NamedTuple):
    """What `doctor matrix refresh` reports."""

    outcome: Outcome
    comparisons: Dict[str, Comparison]  # package -> comparison with the shipped table
    overlay_path: str
    written: bool
    dry_run: bool
    warnings: Tuple[str, ...]

    @property
    def wheels_total_size(self) -> int:
        """Bytes of the wheels read, had they been downloaded whole."""
        return sum(r.wheels_total_size for r in self.outcome.results)


def refresh(packages: Sequence[str], index_url: str, dry_run: bool = False, timeout: float = TIMEOUT,
            retries: int = RETRIES, concurrency: int = CONCURRENCY, backoff: float = BACKOFF,
            progress: Optional[Progress] = None, today: Optional[Callable[[], datetime.datetime]] = None,
            overlay_path: Optional[Path] = None) -> RefreshResult:
    """Derive `packages` (keys of derive.TARGETS) from index_url and write the overlay (not in a dry run).

    RefreshFailed when anything could not be read; nothing is written then.
    """
    from doctor._version import __version__

    unknown = [p for p in packages if p not in TARGETS]
    if unknown:
        raise ValueError(f"unknown package {unknown[0]!r}")
    with Fetcher(timeout=timeout, retries=retries, backoff=backoff, concurrency=concurrency) as fetcher:
        outcome = derive(packages, index_url, fetcher, progress)
    now = (today or (lambda: datetime.datetime.now(datetime.timezone.utc)))()
    date = now.strftime("%Y-%m-%d")
    path = overlay_path if overlay_path is not None else ov.overlay_path()
    warnings: List[str] = [w for r in outcome.results for w in r.warnings]

    tables: Dict[str, Tuple[ov.OverlayRow, ...]] = {}
    urls: Dict[str, str] = {}
    refreshed: Dict[str, str] = {}
    try:
        previous: Optional[ov.Overlay] = ov.read_overlay(path) if path.exists() else None
    except ov.OverlayError as e:
        previous = None
        warnings.append(f"the previous overlay is replaced whole: {e}")
    if previous is not None:
        for table, rows in previous.tables.items():
            tables[table], urls[table], refreshed[table] = rows, previous.index_urls[table], previous.refreshed[table]
    for result in outcome.results:
        table = result.target.table
        tables[table] = tuple(_overlay_row(r, date) for r in result.rows)
        urls[table], refreshed[table] = index_url, date

    written = False
    if not dry_run:
        doc = ov.document(tables, urls, refreshed, now.strftime("%Y-%m-%dT%H:%M:%SZ"), __version__)
        ov.write_overlay(path, doc)
        written = True
        from doctor.compat_matrix import loader

        loader.clear_cache()  # this process's later load_matrix() sees the new rows
    comparisons = {r.target.package: compare(r) for r in outcome.results}
    return RefreshResult(outcome, comparisons, str(path), written, dry_run, tuple(warnings))


def _overlay_row(row: Row, date: str) -> ov.OverlayRow:
    how = "PEP 658 .metadata" if row.via == "pep658" else "METADATA by HTTP Range"
    if row.wheel_torch:
        how += " + xformers/cpp_lib.json by HTTP Range"
    return ov.OverlayRow(row.version, row.spec, date, f"{row.url} ({how})", row.wheel_torch, row.wheel_cuda)


def compare(result: PackageResult) -> Comparison:
    """The derived rows against the shipped table of the same name (the bundled data, no overlay)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from doctor.compat_matrix.files import DEFAULT_DIR
    from doctor.compat_matrix.loader import load_matrix

    shipped = {Version(r.version): r for r in getattr(load_matrix(DEFAULT_DIR), result.target.table)}
    derived = {Version(r.version): r for r in result.rows}
    new = tuple(r.version for v, r in sorted(derived.items()) if v not in shipped)
    differs = []
    for v, r in sorted(derived.items()):
        s = shipped.get(v)
        if s is None:
            continue
        if SpecifierSet(r.spec) != s.spec:
            differs.append(f"{r.version}: index {r.spec or '(any)'}, shipped {s.spec}")
        if s.wheel_torch and r.wheel_torch and (s.wheel_torch, s.wheel_cuda) != (r.wheel_torch, r.wheel_cuda):
            differs.append(f"{r.version}: index build {r.wheel_torch} (CUDA {r.wheel_cuda}), shipped {s.wheel_torch} "
                           f"(CUDA {s.wheel_cuda})")
    missing = tuple(s.version for v, s in sorted(shipped.items()) if v not in derived)
    return Comparison(new, tuple(differs), missing)
