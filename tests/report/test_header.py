"""The report header says what torch is, even when only its metadata could be read."""

from __future__ import annotations

import io

from doctor.facts import Distribution, Facts, PlatformInfo, PythonInfo, TorchBuild
from doctor.report.markdown import to_markdown
from doctor.report.text import render_text
from doctor.report_data import ReportData


def _report(torch: TorchBuild, dists=("torch",)) -> ReportData:  # type: ignore[no-untyped-def]
    facts = Facts(python=PythonInfo("3.11.7", "CPython", "/v/bin/python", "/v", "/usr"),
                  platform=PlatformInfo("Linux", "x86_64", "6.1"),
                  distributions={n: Distribution(n, "2.8.0") for n in dists}, torch=torch)
    return ReportData(facts, "test", (), ())


def _text(report: ReportData) -> str:
    from rich.console import Console

    out = io.StringIO()
    render_text(report, Console(file=out, width=200, no_color=True))
    return out.getvalue()


def test_unreadable_version_py_is_not_torch_not_installed() -> None:
    """Metadata says 2.8.0, version.py could not be read: the header says so."""
    r = _report(TorchBuild(None, path="/v/lib/torch/version.py", error="permission denied"))
    assert "torch 2.8.0 (build info unreadable)" in _text(r)
    assert "not installed" not in _text(r) and "not installed" not in to_markdown(r)
    assert "2.8.0 (build info unreadable)" in to_markdown(r)


def test_a_readable_build_and_no_torch_at_all() -> None:
    """The build's own version when there is one; 'not installed' only without torch."""
    assert "torch 2.8.0+cu128" in _text(_report(TorchBuild("2.8.0+cu128", cuda="12.8")))
    assert "torch not installed" in _text(_report(None, dists=()))  # type: ignore[arg-type]
