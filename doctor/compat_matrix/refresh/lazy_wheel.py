"""Members of a remote wheel read with HTTP Range requests, as pip's lazy wheel does: never the whole file.

1. HEAD: the length, and `Accept-Ranges: bytes` (required: without it there is no way to read a part of a
   700 MB torch wheel, and the refresh refuses rather than download it).
2. The last TAIL bytes: the end-of-central-directory record (ZIP64 when the wheel is over 4 GiB or holds
   more than 65535 files) says where the central directory is.
3. Wheels written by bdist_wheel list their .dist-info entries last, so the end of the central directory,
   already in the tail, usually lists the members wanted; a chain of entries is only trusted when it runs
   exactly to the directory's end. torch's wheels (and other repacked ones) list .dist-info FIRST: then
   the directory's first TAIL bytes are read. Only when neither holds every member the caller needs
   (`enough`) is the rest of the central directory read (~1.2 MB for torch).
4. Each wanted member: its local header and compressed bytes in one Range read, inflated, CRC-checked.

Every problem (no Range support, not a zip, a truncated answer, a member that fails its CRC) is one
RefreshFailed line naming the file.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from doctor.compat_matrix.refresh.fetch import Fetcher, RefreshFailed

TAIL = 64 * 1024  # first read from the end: EOCD (22 bytes + comment) and the last few hundred directory entries
MEMBER_LIMIT = 16 * 1024 * 1024  # uncompressed bytes of one member read this way (METADATA, cpp_lib.json: KBs)
LOCAL_SLACK = 1024  # bytes of local-header extra field read along with a member (usually 0-32 are used)

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"


class Entry(NamedTuple):
    """One central-directory entry."""

    name: str
    method: int  # 0 stored, 8 deflated
    flags: int
    crc: int
    compressed: int
    size: int
    offset: int  # of the local header


class LazyWheel:
    """A remote zip read by ranges: `members(pred)` returns the bytes of every member whose name pred accepts."""

    def __init__(self, fetcher: Fetcher, url: str, filename: str) -> None:
        self.fetcher = fetcher
        self.url = url
        self.filename = filename
        self.length = self._length()
        self.bytes_read = 0

    def _fail(self, why: str) -> RefreshFailed:
        return RefreshFailed(f"{self.filename}: {why}")

    def _length(self) -> int:
        resp = self.fetcher.head(self.url, what=self.filename)
        ranges = resp.headers.get("accept-ranges", "")
        if "bytes" not in [r.strip().lower() for r in ranges.split(",")]:
            raise self._fail(f"the server does not answer HTTP Range requests (HEAD {self.url} has no 'Accept-Ranges: "
                             f"bytes'{', it says ' + repr(ranges) if ranges else ''}); the refresh reads wheels by ranges "
                             "and will not download them whole")
        try:
            length = int(resp.headers.get("content-length", ""))
        except ValueError:
            raise self._fail(f"HEAD {self.url} gives no Content-Length") from None
        if length < 22:
            raise self._fail(f"{length} bytes: too short to be a zip")
        return length

    def _read(self, start: int, end: int) -> bytes:
        data = self.fetcher.get_range(self.url, start, end, what=self.filename)
        self.bytes_read += len(data)
        return data

    def members(self, wanted: Callable[[str], bool],
                enough: Optional[Callable[[Set[str]], bool]] = None) -> Dict[str, bytes]:
        """name -> bytes of every member `wanted` accepts (an empty dict when none is in the wheel).

        `enough(names found)` says when the wanted members found in a part of the central directory suffice
        (e.g. METADATA and cpp_lib.json both seen); without it, or while it says no, the whole directory is
        read, so a member listed elsewhere in it is never missed.
        """
        tail_start = max(0, self.length - TAIL)
        tail = self._read(tail_start, self.length - 1)
        cd_start, cd_size, count = self._directory(tail, tail_start)
        cd_end = cd_start + cd_size
        if cd_end > self.length or cd_start < 0:
            raise self._fail("central directory outside the file (truncated or not a zip)")
        if cd_start >= tail_start:  # the whole directory is in the tail
            return self._read_members(self._parse(tail[cd_start - tail_start:cd_end - tail_start], count), wanted)
        split = min(tail_start, cd_end)  # the directory is [cd_start, split) to read + [split, cd_end) in the tail
        in_tail = tail[split - tail_start:cd_end - tail_start]
        if enough is None:
            return self._read_members(self._parse(self._read(cd_start, split - 1) + in_tail, count), wanted)
        # Wheels written by bdist_wheel list .dist-info last: the end of the directory is already in the tail.
        last = [e for e in _chain_to_end(in_tail) or [] if wanted(e.name)]
        if enough({e.name for e in last}):
            return self._read_members(last, wanted)
        # Others (torch's, repacked) list .dist-info first: the directory's head, ~100 KB, not its ~1.2 MB.
        head_end = min(split, cd_start + TAIL)
        head = self._read(cd_start, head_end - 1)
        if head_end < split:
            first = [e for e in _chain_from_start(head) if wanted(e.name)]
            if enough({e.name for e in first + last}):
                return self._read_members(first + last, wanted)
            head += self._read(head_end, split - 1)
        return self._read_members(self._parse(head + in_tail, count), wanted)

    def _read_members(self, entries: List[Entry], wanted: Callable[[str], bool]) -> Dict[str, bytes]:
        return {e.name: self._member(e) for e in entries if wanted(e.name)}

    def _directory(self, tail: bytes, tail_start: int) -> Tuple[int, int, int]:
        """(offset, size, entries) of the central directory from the end records in the tail."""
        i = tail.rfind(_EOCD)
        while i >= 0 and i + 22 + struct.unpack_from("<H", tail, i + 20)[0] != len(tail):
            i = tail.rfind(_EOCD, 0, i)  # the signature inside a comment: keep looking backwards
        if i < 0:
            raise self._fail("no zip end-of-central-directory record in its last "
                             f"{len(tail)} bytes (not a zip, or truncated)")
        _, disk, _, _, count, size, offset, _ = struct.unpack_from("<IHHHHIIH", tail, i)
        if disk != 0:
            raise self._fail("a multi-disk zip")
        if offset == 0xFFFFFFFF or size == 0xFFFFFFFF or count == 0xFFFF:
            j = i - 20
            if j < 0 or tail[j:j + 4] != _ZIP64_LOCATOR:
                raise self._fail("ZIP64 sizes without a ZIP64 locator")
            z64 = struct.unpack_from("<Q", tail, j + 8)[0]
            rec = tail[z64 - tail_start:z64 - tail_start + 56] if z64 >= tail_start else self._read(z64, z64 + 55)
            if len(rec) < 56 or rec[:4] != _ZIP64_EOCD:
                raise self._fail("ZIP64 end record not where its locator says")
            count, size, offset = struct.unpack_from("<QQQ", rec, 32)
        return offset, size, count

    def _parse(self, data: bytes, count: int) -> List[Entry]:
        entries: List[Entry] = []
        pos = 0
        for _ in range(count):
            e, pos = _entry(data, pos)
            if e is None:
                raise self._fail(f"central directory entry {len(entries)} is damaged")
            entries.append(e)
        return entries

    def _member(self, e: Entry) -> bytes:
        if e.flags & 0x1:
            raise self._fail(f"{e.name} is encrypted")
        if e.size > MEMBER_LIMIT or e.compressed > MEMBER_LIMIT:
            raise self._fail(f"{e.name} is {e.size} bytes: more than the {MEMBER_LIMIT} a metadata member may be")
        if e.method not in (0, 8):
            raise self._fail(f"{e.name}: unsupported compression method {e.method}")
        end = min(self.length - 1, e.offset + 30 + len(e.name.encode("utf-8")) + LOCAL_SLACK + e.compressed - 1)
        blob = self._read(e.offset, end)
        if blob[:4] != _LOCAL:
            raise self._fail(f"{e.name}: no local file header at offset {e.offset}")
        nlen, xlen = struct.unpack_from("<HH", blob, 26)
        start = 30 + nlen + xlen
        if start + e.compressed > len(blob):  # a long local extra field: read the rest
            blob += self._read(e.offset + len(blob), e.offset + start + e.compressed - 1)
        raw = blob[start:start + e.compressed]
        try:
            data = raw if e.method == 0 else zlib.decompressobj(-15).decompress(raw, e.size + 1)
        except zlib.error as exc:
            raise self._fail(f"{e.name}: does not inflate ({exc})") from None
        if len(data) != e.size or zlib.crc32(data) != e.crc:
            raise self._fail(f"{e.name}: CRC or size mismatch (corrupt or truncated)")
        return data


def _entry(data: bytes, pos: int) -> Tuple[Optional[Entry], int]:
    """The central-directory entry at pos and the position after it; (None, pos) when it is not one."""
    if data[pos:pos + 4] != _CENTRAL or pos + 46 > len(data):
        return None, pos
    (_, _, _, flags, method, _, _, crc, csize, usize, nlen, mlen, klen, _, _, _,
     offset) = struct.unpack_from("<IHHHHHHIIIHHHHHII", data, pos)
    end = pos + 46 + nlen + mlen + klen
    if end > len(data):
        return None, pos
    raw_name = data[pos + 46:pos + 46 + nlen]
    name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
    extra = data[pos + 46 + nlen:pos + 46 + nlen + mlen]
    if 0xFFFFFFFF in (csize, usize, offset):
        usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
    return Entry(name, method, flags, crc, csize, usize, offset), end


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> Tuple[int, int, int]:
    """Sizes and offset from the ZIP64 extra field (only the ones the entry marked 0xFFFFFFFF are there)."""
    i = 0
    while i + 4 <= len(extra):
        tag, ln = struct.unpack_from("<HH", extra, i)
        if tag == 0x0001:
            vals = extra[i + 4:i + 4 + ln]
            j = 0
            if usize == 0xFFFFFFFF and j + 8 <= len(vals):
                usize, j = struct.unpack_from("<Q", vals, j)[0], j + 8
            if csize == 0xFFFFFFFF and j + 8 <= len(vals):
                csize, j = struct.unpack_from("<Q", vals, j)[0], j + 8
            if offset == 0xFFFFFFFF and j + 8 <= len(vals):
                offset = struct.unpack_from("<Q", vals, j)[0]
            break
        i += 4 + ln
    return usize, csize, offset


def _chain_from_start(part: bytes) -> List[Entry]:
    """The whole entries at the start of a piece of a central directory that begins at the directory's start."""
    out: List[Entry] = []
    pos = 0
    while True:
        e, pos = _entry(part, pos)
        if e is None:
            return out
        out.append(e)


def _chain_to_end(part: bytes) -> Optional[List[Entry]]:
    """The entries at the end of a central directory, from a piece of it that may start mid-entry.

    The earliest entry signature from which consecutive entries run exactly to the piece's end; a file
    name or comment that happens to contain the signature cannot produce such a chain by accident in
    practice (it would also have to land on every later entry's boundary).
    """
    i = part.find(_CENTRAL)
    while i >= 0:
        pos, chain = i, []
        while True:
            e, nxt = _entry(part, pos)
            if e is None:
                break
            chain.append(e)
            pos = nxt
        if chain and pos == len(part):
            return chain
        i = part.find(_CENTRAL, i + 1)
    return None
