"""Where each cache is, resolved the way its owner resolves it; which filesystem it lives on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from doctor.cache.fsinfo import is_network, mount_for, parse_mountinfo, parse_proc_mounts
from doctor.cache.roots import (
    KINDS,
    doctor_root,
    inductor_root,
    parse_which,
    resolve_roots,
    triton_root,
    unsloth_roots,
)
from doctor.errors import DoctorError


def test_unsloth_default_relative_and_fallback(tmp_path: Path) -> None:
    """Unset: ./unsloth_compiled_cache (cwd-relative) + <tmp>/unsloth_compiled_cache as unsloth_zoo's fallback."""
    primary, fallback = unsloth_roots({}, str(tmp_path), tempdir="/var/tmpx")
    assert primary.path == str(tmp_path / "unsloth_compiled_cache") and primary.relative
    assert primary.env_var == "UNSLOTH_COMPILE_LOCATION" and "working directory" in primary.source
    assert fallback.path == "/var/tmpx/unsloth_compiled_cache" and fallback.role == "fallback"


def test_unsloth_absolute_has_no_separate_fallback(tmp_path: Path) -> None:
    """os.path.join(tempdir, '/abs') is '/abs': the fallback is the same directory, listed once."""
    roots = unsloth_roots({"UNSLOTH_COMPILE_LOCATION": "/opt/uc"}, str(tmp_path), tempdir="/tmp")
    assert [r.path for r in roots] == ["/opt/uc"] and not roots[0].relative


def test_triton_resolution_order(tmp_path: Path) -> None:
    """TRITON_CACHE_DIR (stripped, empty = unset), then TRITON_HOME/.triton/cache, then ~/.triton/cache."""
    cwd = str(tmp_path)
    assert triton_root({"TRITON_CACHE_DIR": "/c", "TRITON_HOME": "/h"}, cwd).path == "/c"
    assert triton_root({"TRITON_CACHE_DIR": "  ", "TRITON_HOME": "/h"}, cwd).path == "/h/.triton/cache"
    r = triton_root({}, cwd, home="/home/u")
    assert r.path == "/home/u/.triton/cache" and r.source.startswith("default")
    rel = triton_root({"TRITON_CACHE_DIR": "tc"}, cwd)
    assert rel.path == str(tmp_path / "tc") and rel.relative


def test_inductor_resolution(tmp_path: Path) -> None:
    """TORCHINDUCTOR_CACHE_DIR made absolute; default <tempdir>/torchinductor_<user> with unsafe chars replaced."""
    assert inductor_root({"TORCHINDUCTOR_CACHE_DIR": "ic"}, str(tmp_path)).path == str(tmp_path / "ic")
    r = inductor_root({}, str(tmp_path), tempdir="/tmp", user='dom\\al:ice')
    assert r.path == "/tmp/torchinductor_dom_al_ice"


def test_doctor_root(tmp_path: Path) -> None:
    """DOCTOR_CACHE_DIR, else the per-user cache dir."""
    assert doctor_root({"DOCTOR_CACHE_DIR": str(tmp_path / "d")}, "/").path == str(tmp_path / "d")
    assert doctor_root({}, "/").path.endswith("tune-doctor")


def test_resolve_roots_order_and_which(tmp_path: Path) -> None:
    """KINDS order, unsloth's fallback right after its primary, --which filters."""
    env = {"TRITON_CACHE_DIR": "/t", "TORCHINDUCTOR_CACHE_DIR": "/i", "DOCTOR_CACHE_DIR": "/d"}
    kinds = [r.kind for r in resolve_roots(env, str(tmp_path))]
    assert kinds[:2] == ["unsloth", "unsloth"] and kinds[2:] == ["triton", "inductor", "doctor"]
    assert [r.kind for r in resolve_roots(env, str(tmp_path), ("triton",))] == ["triton"]


def test_parse_which() -> None:
    """Comma lists, 'all', and a clear error for unknown names."""
    assert parse_which(None) == KINDS and parse_which("all") == KINDS
    assert parse_which("triton, unsloth") == ("unsloth", "triton")
    with pytest.raises(DoctorError, match="unknown cache frob"):
        parse_which("triton,frob")


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /home rw,relatime - nfs4 fs:/export/home rw,vers=4.2
41 40 0:51 / /home/u/my\\040mount rw - fuse.sshfs u@host:/x rw
42 27 0:52 / /scratch rw - lustre 10.0.0.1@tcp:/scratch rw
43 27 0:53 / /mnt/fuse rw - fuse.mystery src rw
"""


def test_mountinfo_longest_prefix_and_escapes() -> None:
    """The deepest mount wins; \\040 is a space; network types are flagged, unknown FUSE is not."""
    table = parse_mountinfo(MOUNTINFO)
    assert mount_for("/home/u/.triton/cache", table).fs_type == "nfs4"
    m = mount_for("/home/u/my mount/cache", table)
    assert m.mount_point == "/home/u/my mount" and m.fs_type == "fuse.sshfs" and m.network
    assert mount_for("/homework", table).fs_type == "ext4"  # prefix match is per path component
    assert mount_for("/scratch/x", table).network
    assert not mount_for("/mnt/fuse/x", table).network
    assert not is_network("ext4") and is_network("cifs") and is_network("nfs")


def test_proc_mounts_format() -> None:
    """/proc/mounts is the fallback format."""
    t = parse_proc_mounts("srv:/e /data nfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\n")
    assert mount_for("/data/c", t).fs_type == "nfs"


@pytest.mark.skipif(not os.path.exists("/proc/self/mountinfo"), reason="needs /proc")
def test_real_mount_table_knows_root() -> None:
    """This machine's table answers for any path."""
    assert mount_for("/") is not None
