"""LazyWheel on real zips served by the local index: the tail shortcut, the whole-directory path, ZIP64, comments."""

from __future__ import annotations

import io
import os
import zipfile
from typing import Dict

import pytest

from doctor.compat_matrix.refresh import lazy_wheel as lw
from doctor.compat_matrix.refresh.fetch import Fetcher, RefreshFailed
from tests.compat_matrix.refresh.server import Index, WheelFile, real_wheel, recorded

META = "demo-1.0.dist-info/METADATA"


def serve(index: Index, name: str, members: Dict[str, bytes]) -> str:
    index.add_wheel("demo", real_wheel(name, members))
    return index.url.rsplit("/", 1)[0] + "/files/" + name


def many(n: int) -> Dict[str, bytes]:
    """n small members with long names: a central directory far bigger than the tail read."""
    return {f"demo/{'x' * 80}/{i:05d}.py": b"pass\n" for i in range(n)}


def test_metadata_last_is_found_in_the_tail(index: Index) -> None:
    members = {**many(2000), META: b"Name: demo\nVersion: 1.0\n"}
    url = serve(index, "demo-1.0-py3-none-any.whl", members)
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, url, "demo-1.0-py3-none-any.whl")
        got = w.members(lambda n: n == META, lambda found: META in found)
        assert got == {META: b"Name: demo\nVersion: 1.0\n"}
        assert w.bytes_read < lw.TAIL + 2 * lw.LOCAL_SLACK  # the ~270 KB directory was not read
    ranges = [e[2] for e in index.wheel_gets() if e[0] == "GET"]
    assert len(ranges) == 2  # the tail, then the member


def test_metadata_first_is_found_in_the_directory_head(index: Index) -> None:
    """torch's wheels list .dist-info first: the directory's head is read, not the whole ~1.2 MB directory."""
    members = {META: b"Name: demo\nVersion: 1.0\n", **many(2000)}
    url = serve(index, "demo-1.0-py3-none-any.whl", members)
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, url, "demo-1.0-py3-none-any.whl")
        assert w.members(lambda n: n == META, lambda found: META in found)[META].startswith(b"Name: demo")
        assert w.bytes_read < 2 * lw.TAIL + 2 * lw.LOCAL_SLACK  # tail + head + member, not the ~270 KB directory
    assert len([e for e in index.wheel_gets() if e[0] == "GET"]) == 3


def test_without_enough_the_whole_directory_is_read(index: Index) -> None:
    members = {META: b"Name: demo\nVersion: 1.0\n", **many(2000)}
    url = serve(index, "demo-1.0-py3-none-any.whl", members)
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, url, "demo-1.0-py3-none-any.whl")
        assert w.members(lambda n: n == META)[META].startswith(b"Name: demo")
        assert w.bytes_read > 250_000  # the rest of the directory was read
        assert w.members(lambda n: n == "missing") == {}


def test_a_member_in_the_middle_is_not_missed(index: Index) -> None:
    """METADATA at the end, cpp_lib.json mid-directory: the tail alone is not enough, the whole directory is read."""
    cpp = "xformers/cpp_lib.json"
    members = {**many(1000), cpp: b"{}", **{f"z/{'y' * 80}/{i:05d}.py": b"" for i in range(1000)},
               META: b"Name: demo\nVersion: 1.0\n"}
    url = serve(index, "demo-1.0-py3-none-any.whl", members)
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, url, "demo-1.0-py3-none-any.whl")
        got = w.members(lambda n: n in (META, cpp), lambda found: {META, cpp} <= found)
    assert set(got) == {META, cpp} and got[cpp] == b"{}"
    # a release that lacks the member is only known to lack it once the whole directory was listed
    index.projects["demo"].clear()
    members.pop(cpp)
    url = serve(index, "demo-1.0-py3-none-any.whl", members)
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, url, "demo-1.0-py3-none-any.whl")
        assert set(w.members(lambda n: n in (META, cpp), lambda found: {META, cpp} <= found)) == {META}
        assert w.bytes_read > 250_000


def test_small_zip_with_a_comment_and_stored_members(index: Index) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(META, b"Name: demo\nVersion: 1.0\n", compress_type=zipfile.ZIP_STORED)
        zf.comment = b"PK\x05\x06 a comment that looks like an end record"
    index.add_wheel("demo", WheelFile("demo-1.0-py3-none-any.whl", len(buf.getvalue()), [(0, buf.getvalue())], b""))
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, index.url.rsplit("/", 1)[0] + "/files/demo-1.0-py3-none-any.whl", "demo")
        assert w.members(lambda n: n == META)[META] == b"Name: demo\nVersion: 1.0\n"


def test_zip64(index: Index, tmp_path: "os.PathLike[str]") -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(70000):  # more than 65535 entries: ZIP64 end records
            zf.writestr(f"d/{i}", b"")
        zf.writestr(META, b"Name: demo\nVersion: 1.0\n")
    raw = buf.getvalue()
    assert b"PK\x06\x06" in raw[-200:]
    index.add_wheel("demo", WheelFile("demo-1.0-py3-none-any.whl", len(raw), [(0, raw)], b""))
    with Fetcher(retries=0) as f:
        w = lw.LazyWheel(f, index.url.rsplit("/", 1)[0] + "/files/demo-1.0-py3-none-any.whl", "demo")
        assert w.members(lambda n: n == META)[META] == b"Name: demo\nVersion: 1.0\n"


def test_recorded_xformers_wheel_gives_its_cpp_lib(index: Index) -> None:
    w = next(x for x in recorded("xformers") if x.filename.startswith("xformers-0.0.28.post3-"))
    with Fetcher(retries=0) as f:
        lazy = lw.LazyWheel(f, index.url.rsplit("/", 1)[0] + "/files/" + w.filename, w.filename)
        got = lazy.members(lambda n: n == "xformers/cpp_lib.json")
    assert b'"torch": "2.5.1+cu121"' in got["xformers/cpp_lib.json"].replace(b" ", b"").replace(b'":"', b'": "')
    assert lazy.length == w.length and lazy.bytes_read < 100_000


def test_head_without_length_or_short_file(index: Index) -> None:
    index.add_wheel("demo", WheelFile("tiny-1.0-py3-none-any.whl", 10, [(0, b"0123456789")], b""))
    with Fetcher(retries=0) as f, pytest.raises(RefreshFailed, match="too short to be a zip"):
        lw.LazyWheel(f, index.url.rsplit("/", 1)[0] + "/files/tiny-1.0-py3-none-any.whl", "tiny-1.0-py3-none-any.whl")
