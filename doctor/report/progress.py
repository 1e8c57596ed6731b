"""Progress while probes run: a live bar on a terminal, one line per verdict in CI logs."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from doctor.report.tables import short_detail


def live_progress(console, total: int):  # type: ignore[no-untyped-def]
    """(callback, stop): a rich progress bar on a terminal, one line per verdict elsewhere (CI logs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not console.is_terminal:
        from rich.text import Text

        def line(pid: str, result) -> None:  # type: ignore[no-untyped-def]
            if result is not None:  # one line per verdict: the first line of its detail, cut
                detail = short_detail(result.detail, 100) if result.status != "pass" else ""
                console.print(Text(f"probe {pid}: {result.status}" + (f" ({detail})" if detail else "")))
        return line, lambda: None
    prog = Progress(SpinnerColumn(), TextColumn("[bold]probing[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)
    task = prog.add_task("starting (import torch)", total=total)
    prog.start()

    def update(pid: str, result) -> None:  # type: ignore[no-untyped-def]
        if result is None:
            prog.update(task, description=pid)
        else:
            prog.advance(task)
            style = {"pass": "green", "skipped": "dim"}.get(result.status, "red")
            prog.console.print(f"  [{style}]{result.status:>12}[/{style}]  {pid}")
    return update, prog.stop


class LazyProgress:
    """A progress callback that builds its display on first use (cached verdicts never pay for rich.progress)."""

    def __init__(self, make: Callable[[], Tuple[Callable[[str, Any], None], Callable[[], None]]]) -> None:
        self._make = make  # builds (callback, stop) for the display
        self._cb: Optional[Callable[[str, Any], None]] = None
        self._stop: Optional[Callable[[], None]] = None

    def __call__(self, pid: str, result: Any) -> None:
        if self._cb is None:
            self._cb, self._stop = self._make()
        self._cb(pid, result)

    def stop(self) -> None:
        """Close the display if it was opened."""
        if self._stop is not None:
            self._stop()
