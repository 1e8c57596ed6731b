"""_util.files: the one bounded, non-blocking reader, fed FIFOs, directories, links and endless files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from doctor._util.files import read_bytes, read_text


def test_limit_and_stop_point(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"head\n\nbody" * 1000)
    assert read_bytes(str(p), limit=7) == b"head\n\nb"
    calls = []

    def until(buf: bytearray, start: int) -> int:
        calls.append(start)
        i = buf.find(b"\n\n", max(0, start - 1))
        return i + 2 if i >= 0 else -1

    assert read_bytes(str(p), until=until, chunk=3) == b"head\n\n"
    assert calls == [0, 3]  # stopped at the chunk holding the end: the body is never read


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_fifo_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "METADATA"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        read_bytes(str(fifo))
    assert read_text(str(fifo)) == (None, "not a regular file")


def test_directory_missing_and_nofollow(tmp_path: Path) -> None:
    assert read_text(str(tmp_path)) == (None, "not a regular file")
    assert read_text(str(tmp_path / "absent")) == (None, None)
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_bytes(str(tmp_path / "link")) == b"x"
    with pytest.raises(OSError):
        read_bytes(str(tmp_path / "link"), nofollow=True)


def test_a_device_is_refused_not_read_forever() -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(OSError):  # a character device is not a regular file: refused, not read forever
        read_bytes("/dev/zero")


def test_undecodable_text(tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(b"\xff\xfe")
    assert read_text(str(tmp_path / "v")) == (None, "not valid UTF-8")
