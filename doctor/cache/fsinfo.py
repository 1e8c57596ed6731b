"""Which filesystem a path lives on, from /proc/self/mountinfo (read as text: a hung mount cannot block it).

Network and cluster filesystems are flagged: stale file handles after another node rewrites a file,
attribute caching that shows a half-written file as complete, and lock semantics that differ from a
local disk (flock is emulated with byte-range locks on NFS, needs lockd, and is absent on some FUSE
filesystems, where filelock falls back to lock files whose mere existence means "held").
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional

# Filesystem types (mountinfo's "fstype" or "fstype.subtype" for FUSE) that live on another machine.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "coda",
    "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "ocfs2", "gfs2", "orangefs", "pvfs2", "panfs", "wekafs",
    "fuse.sshfs", "fuse.glusterfs", "fuse.ceph", "fuse.cephfs", "fuse.ceph-fuse", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.goofys", "fuse.rclone", "fuse.mountpoint-s3", "fuse.juicefs", "fuse.blobfuse", "fuse.blobfuse2",
    "fuse.davfs2", "davfs", "fuse.geesefs",
})


class Mount(NamedTuple):
    """One line of the mount table."""

    mount_point: str
    fs_type: str  # "ext4", "nfs4", "fuse.sshfs"
    source: str  # device or server:/export

    @property
    def network(self) -> bool:
        """True for network/cluster filesystems (see NETWORK_FS)."""
        return is_network(self.fs_type)


def is_network(fs_type: str) -> bool:
    """Whether a filesystem type is remote; unknown FUSE subtypes are not assumed to be."""
    return fs_type in NETWORK_FS or fs_type.split(".", 1)[0] in NETWORK_FS


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1:i + 4]
        if field[i] == "\\" and len(octal) == 3 and octal.isdigit():
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> List[Mount]:
    """Mounts from /proc/self/mountinfo text (format in proc(5)); bad lines are skipped."""
    out: List[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        out.append(Mount(_unescape(lf[4]), rf[0], _unescape(rf[1])))
    return out


def parse_proc_mounts(text: str) -> List[Mount]:
    """Mounts from /proc/mounts text (source mountpoint fstype options ...)."""
    out: List[Mount] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3:
            out.append(Mount(_unescape(f[1]), f[2], _unescape(f[0])))
    return out


_TABLE: Optional[List[Mount]] = None


def mount_table(refresh: bool = False) -> List[Mount]:
    """This process's mounts (cached per process); empty where /proc is not available."""
    global _TABLE
    if _TABLE is not None and not refresh:
        return _TABLE
    table: List[Mount] = []
    for path, parse in (("/proc/self/mountinfo", parse_mountinfo), ("/proc/mounts", parse_proc_mounts)):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                table = parse(fh.read())
        except OSError:
            continue
        if table:
            break
    _TABLE = table
    return table


def mount_for(path: str, table: Optional[List[Mount]] = None) -> Optional[Mount]:
    """The mount holding `path` (absolute; matched lexically: pass a resolved path to see through symlinks)."""
    table = mount_table() if table is None else table
    path = os.path.normpath(path)
    best: Optional[Mount] = None
    for m in table:  # later lines mount over earlier ones at the same point, so ties go to the last
        mp = m.mount_point
        if path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = m
    return best
