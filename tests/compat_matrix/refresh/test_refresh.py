"""`doctor matrix refresh` against a real local HTTP server serving recorded index bytes: no network, no mocks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from doctor.cli import main
from doctor.compat_matrix import loader
from doctor.compat_matrix.refresh import overlay as ov
from tests.compat_matrix.refresh.server import Index, real_wheel, wheel_metadata

FAST = ["--retries", "1", "--timeout", "5"]
XF_ROWS = {
    "0.0.20": ("==2.0.1", "2.0.1+cu118", "11.8"),
    "0.0.28.post3": ("==2.5.1", "2.5.1+cu121", "12.1"),  # built for cu121 although torch 2.5.1 there is cu124
    "0.0.35": (">=2.10", "2.10.0+cu128", "12.8"),
}


def refresh(capsys: pytest.CaptureFixture[str], index: Index, *extra: str) -> Tuple[int, Dict[str, Any], str]:
    """Run the command with --json; (exit code, document, stderr)."""
    code = main(["matrix", "refresh", "--index-url", index.url, "--json", *FAST, *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def rows(doc: Dict[str, Any], package: str) -> Dict[str, Dict[str, Any]]:
    pkg = next(p for p in doc["packages"] if p["package"] == package)
    return {r["version"]: r for r in pkg["rows"]}


def overlay_file(cache_dir: Path) -> Path:
    return cache_dir / ov.FILE_NAME


def seed_overlay(cache_dir: Path) -> bytes:
    """A valid previous overlay; returns its bytes (a failed refresh must leave them as they are)."""
    row = ov.OverlayRow("0.0.1", "==0.1", "2026-01-01", "seed")
    doc = ov.document({"xformers_torch": [row]}, {"xformers_torch": "http://seed"}, {"xformers_torch": "2026-01-01"},
                      "2026-01-01T00:00:00Z", "0")
    ov.write_overlay(overlay_file(cache_dir), doc)
    return overlay_file(cache_dir).read_bytes()


# --- the happy paths ---------------------------------------------------------------------------------------


def test_pep658_on_rows_overlay_and_no_wheel_download(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = refresh(capsys, index)
    assert code == 0, err
    assert doc["schema_version"] >= 2 and doc["command"] == "matrix refresh" and doc["status"] == "healthy"
    xf = rows(doc, "xformers")
    for v, (spec, build, cuda) in XF_ROWS.items():
        assert (xf[v]["spec"], xf[v]["wheel_torch"], xf[v]["wheel_cuda"], xf[v]["via"]) == (spec, build, cuda, "pep658")
    tt = rows(doc, "torch")
    assert tt["2.15.0"]["spec"] == "~=3.9.0"
    # 2.2.1: the cp311 wheel is read (its triton requirement has a python<3.12 marker)
    assert tt["2.2.1"]["spec"] == "==2.2.0" and "cp311" in tt["2.2.1"]["wheel"]
    # torch needs no wheel member: with PEP 658 not one byte of a torch wheel is read
    assert not [e for e in index.wheel_gets() if "torch-" in e[1]]
    # no wheel is ever fetched whole
    assert all(e[0] == "HEAD" or e[2].startswith("bytes=") for e in index.wheel_gets())
    assert doc["bytes_downloaded"] < doc["wheels_total_size"] / 1000

    written = json.loads(overlay_file(cache_dir).read_text())
    for table in ("xformers_torch", "torch_triton"):
        for r in written["tables"][table]["rows"]:
            assert r["date"] and r["source"].startswith(index.url.rsplit("/", 1)[0])  # every row: date and source
    assert doc["written"] is True and doc["overlay"] == str(overlay_file(cache_dir))


def test_pep658_off_reads_metadata_by_range_same_rows(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.pep658 = False
    code, doc, err = refresh(capsys, index)
    assert code == 0, err
    xf = rows(doc, "xformers")
    for v, (spec, build, cuda) in XF_ROWS.items():
        assert (xf[v]["spec"], xf[v]["wheel_torch"], xf[v]["wheel_cuda"], xf[v]["via"]) == (spec, build, cuda, "range")
    assert rows(doc, "torch")["2.15.0"]["spec"] == "~=3.9.0"
    assert not any(e[1].endswith(".metadata") for e in index.log)


def test_html_pages(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.html = True
    code, doc, err = refresh(capsys, index)
    assert code == 0, err
    assert {v: r["spec"] for v, r in rows(doc, "xformers").items()} == {v: s for v, (s, _, _) in XF_ROWS.items()}


def test_new_release_reaches_the_loaded_matrix(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A release the shipped data lacks shows up in load_matrix() after a refresh, without a code change."""
    cpp = json.dumps({"version": {"cuda": 1302, "torch": "2.99.0+cu132", "python": "3.11.9"}}).encode()
    index.add_wheel("xformers", real_wheel("xformers-0.0.99-cp39-abi3-manylinux_2_28_x86_64.whl", {
        "xformers/__init__.py": b"", "xformers/cpp_lib.json": cpp,
        "xformers-0.0.99.dist-info/METADATA": wheel_metadata("xformers", "0.0.99", ["torch==2.99.0", "numpy"]),
    }))
    code, doc, err = refresh(capsys, index, "--package", "xformers")
    assert code == 0, err
    assert next(p for p in doc["packages"] if p["package"] == "xformers")["new"] == ["0.0.99"]
    m = loader.load_matrix()
    row = next(r for r in m.xformers_torch if r.version == "0.0.99")
    assert (str(row.spec), row.source, row.wheel_torch, row.wheel_cuda) == ("==2.99.0", ov.SOURCE_KEY, "2.99.0+cu132", "13.2")
    assert ov.SOURCE_KEY in m.sources
    # shipped rows stay as shipped (with their sources and notes)
    assert next(r for r in m.xformers_torch if r.version == "0.0.35").source == "WHEEL"


def test_dry_run_writes_nothing(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = seed_overlay(cache_dir)
    code, doc, _ = refresh(capsys, index, "--dry-run")
    assert code == 0 and doc["written"] is False and doc["dry_run"] is True
    assert overlay_file(cache_dir).read_bytes() == before


def test_refreshing_one_package_keeps_the_other_table(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refresh(capsys, index)[0] == 0
    assert refresh(capsys, index, "--package", "xformers")[0] == 0
    tables = json.loads(overlay_file(cache_dir).read_text())["tables"]
    assert set(tables) == {"xformers_torch", "torch_triton"} and tables["torch_triton"]["rows"]


def test_text_output(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["matrix", "refresh", "--index-url", index.url, *FAST])
    out = capsys.readouterr().out
    assert code == 0
    assert "xformers -> [xformers_torch]: 3 releases" in out and f"overlay written: {overlay_file(cache_dir)}" in out


def test_concurrency_limit(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.slow = {"/files/": 0.05}  # long enough for requests to overlap
    code, _, err = refresh(capsys, index, "--concurrency", "2")
    assert code == 0, err
    assert 1 <= index.max_in_flight <= 2


# --- failures: one clear line, exit 5, nothing written, the previous overlay intact --------------------------


def failed(capsys: pytest.CaptureFixture[str], index: Index, cache_dir: Path, *extra: str) -> str:
    before = seed_overlay(cache_dir)
    code, doc, err = refresh(capsys, index, *extra)
    assert code == 5, (doc, err)
    assert doc["written"] is False and doc["status"] == "a change failed" and doc["error"]
    assert overlay_file(cache_dir).read_bytes() == before
    assert [p.name for p in cache_dir.iterdir()] == [ov.FILE_NAME]  # no temp file left behind
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("doctor: error: matrix refresh failed: ")
    assert "nothing written" in lines[0]
    return lines[0]


def test_range_off_is_a_clear_error(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.pep658 = False
    index.ranges = False
    line = failed(capsys, index, cache_dir)
    assert "Accept-Ranges: bytes" in line and ".whl" in line
    assert all(e[0] == "HEAD" for e in index.wheel_gets())  # it never fell back to downloading a wheel


def test_range_off_with_pep658(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torch needs only METADATA (PEP 658 suffices); xformers' cpp_lib.json needs Range reads."""
    index.ranges = False
    code, doc, err = refresh(capsys, index, "--package", "torch")
    assert code == 0, err and rows(doc, "torch")["2.15.0"]["spec"] == "~=3.9.0"
    line = failed(capsys, index, cache_dir, "--package", "xformers")
    assert "Accept-Ranges" in line


def test_permanent_500(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.fail = {"/simple/torch/": -1}
    line = failed(capsys, index, cache_dir)
    assert "HTTP 500" in line and "after 2 tries" in line and "/simple/torch/" in line


def test_transient_500s_are_retried(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.fail = {"xformers-0.0.35-py39-none-manylinux_2_28_x86_64.whl": 2}
    code, _, err = refresh(capsys, index, "--retries", "3")
    assert code == 0, err
    assert index.fail["xformers-0.0.35-py39-none-manylinux_2_28_x86_64.whl"] == 0


def test_truncated_range_body(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.pep658 = False
    index.truncate = {"xformers-0.0.20-"}
    line = failed(capsys, index, cache_dir)
    assert "xformers-0.0.20-" in line and "truncated" in line


def test_truncated_metadata_file(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.truncate = {".whl.metadata"}
    line = failed(capsys, index, cache_dir)
    assert ".metadata" in line and "truncated" in line


def test_zip_without_metadata(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.pep658 = False
    index.add_wheel("xformers", real_wheel("xformers-0.0.99-cp39-abi3-manylinux_2_28_x86_64.whl", {
        "xformers/__init__.py": b"", "xformers/cpp_lib.json": b"{}"}))
    line = failed(capsys, index, cache_dir, "--package", "xformers")
    assert "xformers-0.0.99-cp39-abi3-manylinux_2_28_x86_64.whl" in line and "no *.dist-info/METADATA" in line


def test_not_a_zip(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.pep658 = False
    from tests.compat_matrix.refresh.server import WheelFile

    index.add_wheel("xformers", WheelFile("xformers-0.0.99-cp39-abi3-manylinux_2_28_x86_64.whl", 5000, [(0, b"x" * 5000)], b""))
    line = failed(capsys, index, cache_dir, "--package", "xformers")
    assert "end-of-central-directory" in line


def test_corrupt_member_fails_its_crc(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.pep658 = False
    meta = wheel_metadata("xformers", "0.0.99", ["torch==2.99.0"]) * 20
    w = real_wheel("xformers-0.0.99-cp39-abi3-manylinux_2_28_x86_64.whl", {"xformers-0.0.99.dist-info/METADATA": meta})
    raw = bytearray(w.segments[0][1])
    raw[30 + len("xformers-0.0.99.dist-info/METADATA") + 5] ^= 0xFF  # inside the member's deflated bytes
    w.segments = [(0, bytes(raw))]
    index.add_wheel("xformers", w)
    line = failed(capsys, index, cache_dir, "--package", "xformers")
    assert "METADATA" in line and ("CRC" in line or "inflate" in line)


def test_slow_server_past_the_timeout(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index.slow = {"/simple/xformers/": 2.0}
    t0 = time.monotonic()
    line = failed(capsys, index, cache_dir, "--timeout", "0.3", "--retries", "1")
    assert "no answer within 0.3 s" in line and "project page of xformers" in line
    assert time.monotonic() - t0 < 10


def test_hash_mismatch_is_a_warning_naming_the_file(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PyTorch's index has served mismatching .metadata files: tolerated, with a warning that names the file."""
    index.wrong_hash = {"xformers-0.0.35-"}
    code, doc, err = refresh(capsys, index)
    assert code == 1 and doc["status"] == "warnings", err
    assert len(doc["warnings"]) == 1
    assert doc["warnings"][0].startswith("xformers-0.0.35-py39-none-manylinux_2_28_x86_64.whl.metadata: sha256")
    assert rows(doc, "xformers")["0.0.35"]["spec"] == ">=2.10" and doc["written"] is True


def test_missing_project(index: Index, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    del index.projects["torch"]
    line = failed(capsys, index, cache_dir)
    assert "project page of torch" in line and "404" in line


def test_unreachable_index(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["matrix", "refresh", "--index-url", f"http://127.0.0.1:{port}/simple", "--retries", "0"])
    err = capsys.readouterr().err
    assert code == 5 and "ConnectError" in err and not overlay_file(cache_dir).exists()


# --- usage -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["matrix", "refresh", "--package", "flash-attn"],
    ["matrix", "rebuild"],
    ["matrix", "refresh", "--index-url", "ftp://x/simple"],
    ["matrix", "refresh", "--concurrency", "0"],
    ["matrix", "refresh", "--timeout", "abc"],
])
def test_usage_errors_exit_3(argv: List[str], cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert e.value.code == 3 and len(err.strip().splitlines()) == 1 and err.startswith("doctor: error:")
    assert not overlay_file(cache_dir).exists()


def test_the_test_index_stops_whole(capfd: pytest.CaptureFixture[str]) -> None:
    """A handler still sleeping on a slow answer must not outlive its test and print into a later test's stderr."""
    import httpx

    idx = Index().start()
    server = idx._server
    assert server is not None
    idx.slow = {"/simple/": 3.0}
    with pytest.raises(httpx.TimeoutException):
        httpx.get(idx.url + "/xformers/", timeout=0.2)
    t0 = time.monotonic()
    idx.stop()
    assert time.monotonic() - t0 < 2.0  # the sleeper was woken, not waited for
    assert server._conns and not [t for t, _ in server._conns if t.is_alive()]
    assert capfd.readouterr().err == ""


def test_doctor_check_offers_a_release_only_the_refresh_knows(index: Index, cache_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """End to end, no code change: torch 2.99 with xformers 0.0.34 installed; before the refresh the fix can only
    remove xformers, after it (the index gained xformers 0.0.99 built for torch 2.99) it installs 0.0.99."""
    import os
    import subprocess
    import sys

    from doctor.envvars import DOCTOR_MATRIX_DIR

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, timeout=120)
    site = next((tmp_path / "venv").glob("lib/python*/site-packages"))
    for name, version, req in (("torch", "2.99.0", "triton==3.99.0"), ("triton", "3.99.0", ""),
                               ("xformers", "0.0.34", "torch==2.10.0")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_bytes(wheel_metadata(name, version, [req] if req else []))
        (info / "RECORD").write_text(f"{info.name}/METADATA,,\n")
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text("__version__ = '2.99.0+cu130'\ncuda = '13.0'\n")

    def check() -> Dict[str, Any]:
        env = {**os.environ, "DOCTOR_CACHE_DIR": str(cache_dir), "DOCTOR_GPUS": "none", "NO_COLOR": "1"}
        env.pop(DOCTOR_MATRIX_DIR, None)
        out = subprocess.run([sys.executable, "-m", "doctor", "check", "--python", str(tmp_path / "venv"), "--json",
                              "--no-probes"], env=env, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 2, out.stderr
        doc: Dict[str, Any] = json.loads(out.stdout)
        return doc

    before = check()
    assert "0.0.99" not in json.dumps(before) and "+refresh." not in before["matrix_version"]

    cpp = json.dumps({"version": {"cuda": 1300, "torch": "2.99.0+cu130", "python": "3.11.9"}}).encode()
    index.add_wheel("xformers", real_wheel("xformers-0.0.99-cp39-abi3-manylinux_2_28_x86_64.whl", {
        "xformers/cpp_lib.json": cpp,
        "xformers-0.0.99.dist-info/METADATA": wheel_metadata("xformers", "0.0.99", ["torch==2.99.0"]),
    }))
    code, _, err = refresh(capsys, index, "--package", "xformers")
    assert code == 0, err

    after = check()
    mismatch = next(f for f in after["findings"] if f["id"] == "xformers.torch-mismatch")
    assert "xformers==0.0.99" in json.dumps(mismatch)
    refreshed = json.loads(overlay_file(cache_dir).read_text())["tables"]["xformers_torch"]["refreshed"]
    assert after["matrix_version"] == before["matrix_version"] + "+refresh." + refreshed
