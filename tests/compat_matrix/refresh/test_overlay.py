"""The overlay as `doctor check` reads it: laid over the bundled data, never the network, malformed -> one warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from doctor.compat_matrix import loader
from doctor.compat_matrix.refresh import overlay as ov
from doctor.envvars import DOCTOR_CACHE_DIR, DOCTOR_MATRIX_DIR

REPO = Path(__file__).resolve().parents[3]


def write(cache_dir: Path, xformers_rows: Any = None, triton_rows: Any = None) -> Path:
    tables: Dict[str, Any] = {}
    if xformers_rows is not None:
        tables["xformers_torch"] = xformers_rows
    if triton_rows is not None:
        tables["torch_triton"] = triton_rows
    urls = {t: "http://127.0.0.1/simple" for t in tables}
    dates = {t: "2026-12-01" for t in tables}
    path = cache_dir / ov.FILE_NAME
    ov.write_overlay(path, ov.document(tables, urls, dates, "2026-12-01T00:00:00Z", "0"))
    loader.clear_cache()
    return path


def test_no_overlay_is_the_bundled_matrix(cache_dir: Path) -> None:
    assert loader.load_matrix() is loader.load_matrix(None)
    assert ov.SOURCE_KEY not in loader.load_matrix().sources


def test_adds_new_releases_keeps_shipped_rows(cache_dir: Path) -> None:
    write(cache_dir,
          [ov.OverlayRow("0.0.99", "==2.99.0", "2026-12-01", "http://x/xformers-0.0.99.whl (METADATA by HTTP Range)",
                         "2.99.0+cu132", "13.2"),
           ov.OverlayRow("0.0.35", "==9.9", "2026-12-01", "http://x/other")],  # conflicts with the shipped row
          [ov.OverlayRow("2.99.0", "~=3.99.0", "2026-12-01", "http://x/torch-2.99.0.whl")])
    m = loader.load_matrix()
    new = next(r for r in m.xformers_torch if r.version == "0.0.99")
    assert (str(new.spec), new.source, new.wheel_torch, new.wheel_source) == ("==2.99.0", "REFRESH", "2.99.0+cu132", "REFRESH")
    assert m.xformers_torch[-1].version == "0.0.99"  # still oldest first
    shipped = next(r for r in m.xformers_torch if r.version == "0.0.35")
    assert str(shipped.spec) == ">=2.10" and shipped.source == "WHEEL"  # curated data wins on conflicts
    assert next(r for r in m.torch_triton if r.version == "2.99.0").source == "REFRESH"
    assert "REFRESH" in m.sources
    # lookups see it like any row
    from doctor.compat_matrix.lookup import torch_requirement_of_xformers, triton_pin_for_torch

    assert str(torch_requirement_of_xformers(m, "0.0.99").spec) == "==2.99.0"  # type: ignore[union-attr]
    assert str(triton_pin_for_torch(m, "2.99.0").spec) == "~=3.99.0"  # type: ignore[union-attr]


def test_fills_a_missing_wheel_build(cache_dir: Path) -> None:
    base = loader.load_matrix()
    bare = tuple(r._replace(wheel_torch="", wheel_cuda="", wheel_source="") if r.version == "0.0.20" else r
                 for r in base.xformers_torch)
    m = ov.merge(base._replace(xformers_torch=bare), ov.Overlay("p", "", {"xformers_torch": (
        ov.OverlayRow("0.0.20", "==2.0.1", "2026-12-01", "s", "2.0.1+cu118", "11.8"),)}, {}, {}))
    row = next(r for r in m.xformers_torch if r.version == "0.0.20")
    assert (row.wheel_torch, row.wheel_cuda, row.wheel_source, row.source) == ("2.0.1+cu118", "11.8", "REFRESH", "WHEEL")


def test_explicit_data_dirs_are_not_overlaid(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(cache_dir, [ov.OverlayRow("0.0.99", "==2.99.0", "2026-12-01", "s")])
    from doctor.compat_matrix.files import DEFAULT_DIR

    assert not any(r.version == "0.0.99" for r in loader.load_matrix(DEFAULT_DIR).xformers_torch)
    monkeypatch.setenv(DOCTOR_MATRIX_DIR, str(DEFAULT_DIR))
    assert not any(r.version == "0.0.99" for r in loader.load_matrix().xformers_torch)


def test_rewritten_overlay_is_reread(cache_dir: Path) -> None:
    write(cache_dir, [ov.OverlayRow("0.0.98", "==2.98.0", "2026-12-01", "s")])
    assert any(r.version == "0.0.98" for r in loader.load_matrix().xformers_torch)
    path = cache_dir / ov.FILE_NAME
    doc = ov.document({"xformers_torch": [ov.OverlayRow("0.0.99", "==2.99.0", "2026-12-02", "s")]},
                      {"xformers_torch": "u"}, {"xformers_torch": "2026-12-02"}, "2026-12-02T00:00:00Z", "0")
    ov.write_overlay(path, doc)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-timestamp filesystems
    versions = {r.version for r in loader.load_matrix().xformers_torch}
    assert "0.0.99" in versions and "0.0.98" not in versions


@pytest.mark.parametrize("content, reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "format"),
    (json.dumps({"format": ov.FORMAT, "schema_version": 99, "tables": {}}).encode(), "schema_version"),
    (json.dumps({"format": ov.FORMAT, "schema_version": 1, "tables": {"nope": {"rows": []}}}).encode(), "unknown table"),
    (json.dumps({"format": ov.FORMAT, "schema_version": 1, "tables": {"xformers_torch": {
        "index_url": "u", "refreshed": "2026-12-01",
        "rows": [{"xformers": "0.0.99", "torch": "==2.x", "date": "2026-12-01", "source": "s"}]}}}).encode(),
     "invalid specifier"),
    (json.dumps({"format": ov.FORMAT, "schema_version": 1, "tables": {"torch_triton": {
        "index_url": "u", "refreshed": "2026-12-01",
        "rows": [{"torch": "2.99.0", "triton": "==3.0", "source": "s"}]}}}).encode(), "date"),
    (json.dumps({"format": ov.FORMAT, "schema_version": 1, "tables": {"xformers_torch": {
        "index_url": "u", "refreshed": "2026-12-01",
        "rows": [{"xformers": "0.0.99", "torch": "==2.9", "date": "2026-12-01", "source": "s", "wheel_torch": "2.9.0+cu128"}]}}}).encode(),
     "go together"),
])
def test_malformed_overlay_is_one_warning_and_ignored(cache_dir: Path, capsys: pytest.CaptureFixture[str],
                                                      content: bytes, reason: str) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / ov.FILE_NAME).write_bytes(content)
    m = loader.load_matrix()
    assert ov.SOURCE_KEY not in m.sources and m.xformers_torch == loader.load_matrix(loader.DEFAULT_DIR).xformers_torch
    loader.load_matrix()  # warned once per file version, not per load
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("doctor: warning: matrix overlay ignored: ") and reason in err and ov.FILE_NAME in err


def test_write_refuses_what_the_reader_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ov.OverlayError):
        ov.write_overlay(tmp_path / ov.FILE_NAME, {"format": "other"})
    assert list(tmp_path.iterdir()) == []


def test_check_reads_overlay_without_network_code(cache_dir: Path) -> None:
    """`doctor check`'s process with an overlay present: the rows are there, httpx and the refresh's fetcher are not."""
    write(cache_dir, [ov.OverlayRow("0.0.99", "==2.99.0", "2026-12-01", "s")])
    code = ("import sys; from doctor.compat_matrix.loader import load_matrix; m = load_matrix(); "
            "print(any(r.version == '0.0.99' for r in m.xformers_torch), "
            "'httpx' in sys.modules, 'doctor.compat_matrix.refresh.fetch' in sys.modules)")
    env = {**os.environ, DOCTOR_CACHE_DIR: str(cache_dir)}
    env.pop(DOCTOR_MATRIX_DIR, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr


def test_doctor_check_runs_with_overlay(cache_dir: Path) -> None:
    write(cache_dir, [ov.OverlayRow("0.0.99", "==2.99.0", "2026-12-01", "s")])
    env = {**os.environ, DOCTOR_CACHE_DIR: str(cache_dir), "DOCTOR_GPUS": "none", "NO_COLOR": "1"}
    env.pop(DOCTOR_MATRIX_DIR, None)
    out = subprocess.run([sys.executable, "-m", "doctor", "check", "--json", "--no-probes"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1, 2), out.stderr
    assert "warning: matrix overlay" not in out.stderr
    json.loads(out.stdout)


def test_data_version_says_the_overlay_is_used(cache_dir: Path) -> None:
    """Reports show which data they used: the check header, pins and the service read data_version."""
    bundled = loader.load_matrix(None).data_version
    write(cache_dir, [ov.OverlayRow("0.0.35", ">=2.10", "2026-12-01", "s")])  # adds nothing: the same data
    assert loader.load_matrix().data_version == bundled
    write(cache_dir, [ov.OverlayRow("0.0.99", "==2.99.0", "2026-12-01", "s")])
    assert loader.load_matrix().data_version == f"{bundled}+refresh.2026-12-01"
