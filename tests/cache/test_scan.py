"""Cheap cache findings on real files: headers, empty files, modes, locks, Triton groups, odd file types, bad roots."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from doctor.cache.diagnose import check_caches, diagnose, plan
from doctor.actions import Manual, MoveToQuarantine, RemoveStaleLock, SetEnv, TightenMode
from doctor.cache.roots import resolve_roots
from doctor.cache.scan import Expect, scan_roots
from doctor.cache.scan.unsloth import parse_unsloth_header
from doctor.cache.scan.walk import lock_state
from doctor.facts import GPU
from doctor.findings import Severity
from tests.cache.conftest import INSTALLED, by_id, header, ids, make_facts, module, old, triton_kernel

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, flock and FIFOs")
H100 = GPU(0, "NVIDIA H100", (9, 0))


def unsloth_dir(caches) -> Path:  # type: ignore[no-untyped-def]
    caches.unsloth.mkdir(exist_ok=True)
    return caches.unsloth


# ----------------------------------------------------------------------------- unsloth headers


def test_parse_header_states() -> None:
    """ok / none (moe_utils) / truncated inside the docstring / malformed."""
    h = header().encode()
    assert parse_unsloth_header(h + b"x=1\n", len(h) + 4) == ("ok", ("2026.10.9", "2026.10.9", "5.17.0", "1.15.0"))
    assert parse_unsloth_header(b"import torch\n", 13)[0] == "none"
    assert parse_unsloth_header(h[:20], 20)[0] == "truncated"
    assert parse_unsloth_header(b'"""\n1\n2\n__UNSLOTH_VERSIONING__\n"""\n', 30)[0] == "malformed"


def test_current_modules_are_clean_and_moe_utils_is_not_stale(caches) -> None:  # type: ignore[no-untyped-def]
    """Matching headers and a header-less moe_utils.py: no problem findings, an OK summary pointing at verify."""
    d = unsloth_dir(caches)
    (d / "UnslothSFTTrainer.py").write_text(module("UnslothSFTTrainer"))
    (d / "moe_utils.py").write_text("import os\n")
    os.chmod(d / "moe_utils.py", 0o644)
    fs = check_caches(make_facts(caches.cwd))
    assert [f.id for f in fs if f.severity > Severity.OK] == []
    [summary] = [f for f in fs if f.id == "cache.root" and f.subject == str(d)]
    assert "2 modules" in summary.title and "doctor cache verify" in summary.title


def test_stale_headers_one_finding_with_versions(caches) -> None:  # type: ignore[no-untyped-def]
    """Two modules for older transformers/trl: one WARN listing both, a quarantine action for each."""
    d = unsloth_dir(caches)
    (d / "UnslothSFTTrainer.py").write_text(module("UnslothSFTTrainer", transformers="5.16.0"))
    (d / "UnslothGRPOTrainer.py").write_text(module("UnslothGRPOTrainer", trl="1.13.0"))
    (d / "UnslothDPOTrainer.py").write_text(module("UnslothDPOTrainer"))
    [f] = by_id(check_caches(make_facts(caches.cwd)), "cache.unsloth-stale-module")
    assert f.severity is Severity.WARN and f.title.startswith("2 unsloth compiled modules")
    ev = dict(f.evidence)
    assert "transformers 5.16.0 (installed 5.17.0)" in ev["stale"] and "trl 1.13.0 (installed 1.15.0)" in ev["stale"]
    assert ev["installed"] == "unsloth_zoo 2026.10.9, unsloth 2026.10.9, transformers 5.17.0, trl 1.15.0"
    [a] = f.fix  # one action for the whole finding (`doctor check --fix` runs a finding's first action)
    assert isinstance(a, MoveToQuarantine) and a.destructive and a.root == str(d) and not a.whole_root
    assert sorted(a.paths) == [str(d / "UnslothGRPOTrainer.py"), str(d / "UnslothSFTTrainer.py")]


def test_stale_needs_unsloth_installed(caches) -> None:  # type: ignore[no-untyped-def]
    """Without unsloth/unsloth_zoo there is nothing to be stale against (and check skips the cache)."""
    d = unsloth_dir(caches)
    (d / "UnslothSFTTrainer.py").write_text(module("UnslothSFTTrainer", trl="0.1"))
    facts = make_facts(caches.cwd, dists={"transformers": "5.17.0"})
    assert "cache.unsloth-stale-module" not in ids(diagnose(facts, ("unsloth",), mode="status").findings)
    assert not [f for f in check_caches(facts) if "unsloth" in f.id]


def test_truncated_header_is_broken(caches) -> None:  # type: ignore[no-untyped-def]
    """A module cut inside its version docstring: ERROR broken-module, cheap (no import needed)."""
    d = unsloth_dir(caches)
    (d / "UnslothSFTTrainer.py").write_text(header()[:25])
    [f] = by_id(check_caches(make_facts(caches.cwd)), "cache.unsloth-broken-module")
    assert f.severity is Severity.ERROR and "truncated" in f.title and f.subject == str(d / "UnslothSFTTrainer.py")


def test_zero_byte_module(caches) -> None:  # type: ignore[no-untyped-def]
    """An empty Conv3d.py (what an interrupted in-place write leaves): WARN with a quarantine fix."""
    d = unsloth_dir(caches)
    (d / "Conv3d.py").write_bytes(b"")
    [f] = by_id(check_caches(make_facts(caches.cwd)), "cache.zero-byte")
    assert dict(f.evidence)["files"] == "Conv3d.py"
    assert [(type(a), a.root, a.paths) for a in f.fix] == [(MoveToQuarantine, str(d), (str(d / "Conv3d.py"),))]


def test_world_writable_moe_utils_gets_chmod_0644(caches) -> None:  # type: ignore[no-untyped-def]
    """moe_utils.py at 0666 (as unsloth 2026.10 writes it): WARN, fix chmod 0644 (the file is ours)."""
    d = unsloth_dir(caches)
    p = d / "moe_utils.py"
    p.write_text("import os\n")
    os.chmod(p, 0o666)
    [f] = by_id(check_caches(make_facts(caches.cwd)), "cache.world-writable")
    assert "0666" in dict(f.evidence)["files"]
    assert [(type(a), a.root, a.targets) for a in f.fix] == [(TightenMode, str(d), ((str(p), 0o644),))]


@linux_only
def test_fifo_named_like_a_module_does_not_block(caches) -> None:  # type: ignore[no-untyped-def]
    """A FIFO called Conv3d.py would freeze unsloth's read; the doctor reports it at once and never opens it blocking."""
    d = unsloth_dir(caches)
    os.mkfifo(d / "Conv3d.py")
    t0 = time.monotonic()
    [f] = by_id(check_caches(make_facts(caches.cwd)), "cache.not-regular")
    assert time.monotonic() - t0 < 1.5
    assert f.severity is Severity.ERROR and "a FIFO" in f.title


def test_symlink_pointing_outside_is_reported_not_followed(caches, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A module symlinked to a file outside the cache: WARN, no automatic action, the target is not read."""
    d = unsloth_dir(caches)
    outside = tmp_path / "outside.py"
    outside.write_text(header()[:10])  # would be "truncated" if it were followed
    (d / "Evil.py").symlink_to(outside)
    fs = check_caches(make_facts(caches.cwd))
    [f] = by_id(fs, "cache.symlink")
    assert f.severity is Severity.WARN and str(outside) in dict(f.evidence)["links"]
    assert all(isinstance(a, Manual) for a in f.fix)
    assert "cache.unsloth-broken-module" not in ids(fs)


# ----------------------------------------------------------------------------- locks


@linux_only
def test_stale_and_live_locks(caches, lock_holder) -> None:  # type: ignore[no-untyped-def]
    """An old lock nobody holds is stale (INFO: flock works here); one held by a live child process is not."""
    d = unsloth_dir(caches)
    locks = d / ".locks"
    locks.mkdir()
    dead, live = locks / ".lock.UnslothSFTTrainer.py", locks / ".lock.UnslothDPOTrainer.py"
    dead.write_bytes(b"")
    lock_holder(live)
    old(dead)
    old(live)
    assert lock_state(str(live)) == "held" and lock_state(str(dead)) == "free"
    d_ = diagnose(make_facts(caches.cwd), ("unsloth",), mode="status")
    [f] = by_id(d_.findings, "cache.stale-lock")
    assert f.severity is Severity.INFO and dict(f.evidence)["locks"] == ".locks/.lock.UnslothSFTTrainer.py"
    assert [(type(a), a.root, a.paths) for a in f.fix] == [(RemoveStaleLock, str(d), (str(dead),))]
    [scan] = [s for s in d_.scans if s.root.path == str(d)]
    assert scan.live_locks == 1


@linux_only
def test_young_lock_is_not_stale(caches) -> None:  # type: ignore[no-untyped-def]
    """A free lock younger than the threshold is left alone (a writer may be about to take it)."""
    d = unsloth_dir(caches)
    (d / ".locks").mkdir()
    (d / ".locks" / ".lock.X.py").write_bytes(b"")
    assert "cache.stale-lock" not in ids(diagnose(make_facts(caches.cwd), ("unsloth",), mode="status").findings)


def test_lock_state_never_blocks_on_missing_file(tmp_path: Path) -> None:
    """A vanished lock is an error string, not an exception."""
    assert lock_state(str(tmp_path / "nope")).startswith("error")


# ----------------------------------------------------------------------------- Triton


def test_triton_group_that_does_not_parse(caches) -> None:  # type: ignore[no-untyped-def]
    """Broken __grp__ JSON: ERROR, the fix moves the whole kernel directory."""
    kd = triton_kernel(caches.triton, "KEYA", group_text='{"child_paths": {"kernel.json": ')
    triton_kernel(caches.triton, "KEYB")
    [f] = by_id(check_caches(make_facts(caches.cwd, dists={"triton": "3.4.0"})), "cache.triton-broken-group")
    assert f.severity is Severity.ERROR and "KEYA/__grp__kernel.json: does not parse" in dict(f.evidence)["entries"]
    assert [(type(a), a.root, a.paths) for a in f.fix] == [(MoveToQuarantine, str(caches.triton), (str(kd),))]


def test_triton_group_nested_past_the_decoder(caches) -> None:  # type: ignore[no-untyped-def]
    """`[[[[...` in __grp__ JSON (RecursionError in json) is a group that does not parse, not a crash."""
    triton_kernel(caches.triton, "KEYA", group_text="[" * 200000)
    [f] = by_id(check_caches(make_facts(caches.cwd, dists={"triton": "3.4.0"})), "cache.triton-broken-group")
    assert f.severity is Severity.ERROR and "KEYA/__grp__kernel.json: does not parse" in dict(f.evidence)["entries"]


def test_triton_group_missing_binary_is_error_missing_metadata_is_warn(caches) -> None:  # type: ignore[no-untyped-def]
    """Metadata present but cubin gone = a cache hit that cannot load (ERROR); metadata gone = recompile (WARN)."""
    triton_kernel(caches.triton, "KEYA", missing=("kernel.cubin",))
    fs = check_caches(make_facts(caches.cwd))
    [f] = by_id(fs, "cache.triton-broken-group")
    assert f.severity is Severity.ERROR and "missing files: kernel.cubin" in dict(f.evidence)["entries"]
    (caches.triton / "KEYA").rename(caches.triton.parent / "moved")
    triton_kernel(caches.triton, "KEYB", missing=("kernel.json",))
    [f] = by_id(check_caches(make_facts(caches.cwd)), "cache.triton-broken-group")
    assert f.severity is Severity.WARN


def test_triton_foreign_arch_and_version_are_info(caches) -> None:  # type: ignore[no-untyped-def]
    """sm_80 kernels on an H100 and kernels stamped by another Triton: INFO only (never loaded here)."""
    triton_kernel(caches.triton, "K80", arch=80, triton_version="3.4.0")
    triton_kernel(caches.triton, "K90", arch=90, triton_version="3.1.0")
    triton_kernel(caches.triton, "OK", arch=90, triton_version="3.4.0")
    fs = check_caches(make_facts(caches.cwd, dists={"triton": "3.4.0"}, gpus=[H100]))
    [arch] = by_id(fs, "cache.triton-foreign-arch")
    [ver] = by_id(fs, "cache.triton-foreign-version")
    assert arch.severity is ver.severity is Severity.INFO
    assert dict(arch.evidence)["built for"] == "sm_80 (1)" and dict(arch.evidence)["this machine"] == "sm_90"
    assert dict(ver.evidence)["built for"] == "3.1.0 (1)"


def test_triton_arch_unknown_without_gpu_info(caches) -> None:  # type: ignore[no-untyped-def]
    """No GPU facts: the arch cannot be judged, so nothing is said about it."""
    triton_kernel(caches.triton, "K80", arch=80)
    assert "cache.triton-foreign-arch" not in ids(check_caches(make_facts(caches.cwd)))


def test_inductor_triton_subtree_and_zero_byte(caches) -> None:  # type: ignore[no-untyped-def]
    """Inductor's <root>/triton/<device>/<key>/ kernels get the Triton checks; empty generated files are flagged."""
    triton_kernel(caches.inductor / "triton" / "0", "KEY", group_text="not json")
    (caches.inductor / "ab").mkdir()
    (caches.inductor / "ab" / "cabc123.py").write_bytes(b"")
    (caches.inductor / "locks").mkdir()
    (caches.inductor / "locks" / "x.lock").write_bytes(b"")  # lock files are empty by design
    fs = check_caches(make_facts(caches.cwd, dists={"torch": "2.11.0"}))
    assert [f.subject for f in by_id(fs, "cache.triton-broken-group")] == [str(caches.inductor)]
    [z] = by_id(fs, "cache.zero-byte")
    assert dict(z.evidence)["files"] == "ab/cabc123.py"


# ----------------------------------------------------------------------------- the doctor's own cache


def test_own_cache_corrupt_entries_and_leftovers(caches) -> None:  # type: ignore[no-untyped-def]
    """Corrupt JSON/module entries are INFO (reads treat them as misses); old temp files of killed writers too."""
    from doctor.cache.own import DoctorCache

    c = DoctorCache(caches.doctor)
    c.write_json("probe", "good", {"x": 1})
    c.write_module("gen", "good", "X = 1\n")
    c.path("probe", "bad").write_text('{"format": 1, "da')
    mp = c.module_path("gen", "bad")
    mp.write_text(c.module_path("gen", "good").read_text().replace("X = 1", "X = 2"))  # hash no longer matches
    tmp = caches.doctor / "probe" / ".good.json.abc.tmp"
    tmp.write_text("partial")
    old(tmp)
    fs = diagnose(make_facts(caches.cwd), ("doctor",), mode="status").findings
    [corrupt] = by_id(fs, "cache.doctor-corrupt-entry")
    assert corrupt.severity is Severity.INFO
    assert isinstance(corrupt.fix[0], MoveToQuarantine) and corrupt.fix[0].root == str(caches.doctor)
    assert set(corrupt.fix[0].paths) == {str(c.path("probe", "bad")), str(mp)}
    [left] = by_id(fs, "cache.temp-leftover")
    assert isinstance(left.fix[0], MoveToQuarantine) and left.fix[0].paths == (str(tmp),)


# ----------------------------------------------------------------------------- roots that cannot be used


def test_missing_cache_dir_is_not_an_error(caches) -> None:  # type: ignore[no-untyped-def]
    """Caches that do not exist yet: status says so (and that they can be created); check says nothing bad."""
    facts = make_facts(caches.cwd, dists={**{"triton": "3.4.0", "torch": "2.11.0"}})
    d = diagnose(facts, ("triton", "inductor", "doctor"), mode="status")
    assert {s.status for s in d.scans} == {"missing"}
    assert all(s.write_check is not None and s.write_check.writable for s in d.scans)
    assert [f for f in d.findings if f.severity > Severity.OK] == []
    assert [f for f in check_caches(facts) if f.severity > Severity.OK] == []
    assert not caches.triton.exists()  # never created by looking


def test_cache_under_a_regular_file(caches, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """TRITON_CACHE_DIR below a regular file cannot be created, not even by root: ERROR with a location fix."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(blocker / "triton"))
    [f] = by_id(check_caches(make_facts(caches.cwd, {"TRITON_CACHE_DIR": str(blocker / "triton")},
                                        dists={"triton": "3.4.0"})), "cache.unwritable")
    assert f.severity is Severity.ERROR
    [a] = f.fix
    assert isinstance(a, SetEnv) and a.directory and a.name == "TRITON_CACHE_DIR" and os.path.isabs(a.value)


@linux_only
def test_read_only_directory_procfs(caches) -> None:  # type: ignore[no-untyped-def]
    """A real directory no one may create files in, root included (/proc/self/fdinfo): unwritable."""
    env = {"TORCHINDUCTOR_CACHE_DIR": "/proc/self/fdinfo"}
    [f] = by_id(check_caches(make_facts(caches.cwd, env, dists={"torch": "2.11.0"})), "cache.unwritable")
    assert f.severity is Severity.ERROR and "is not writable" in f.title


def _set_immutable(path: Path, on: bool) -> None:
    """chattr +i / -i through the FS_IOC_SETFLAGS ioctl (needs CAP_LINUX_IMMUTABLE and ext4/xfs/btrfs)."""
    import array
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, 0x80086601, buf, True)  # FS_IOC_GETFLAGS
        buf[0] = (buf[0] | 0x10) if on else (buf[0] & ~0x10)  # FS_IMMUTABLE_FL
        fcntl.ioctl(fd, 0x40086602, buf, True)  # FS_IOC_SETFLAGS
    finally:
        os.close(fd)


@linux_only
def test_read_only_directory_immutable(caches) -> None:  # type: ignore[no-untyped-def]
    """An existing Triton cache made immutable (chattr +i): even root cannot add a kernel there -> ERROR."""
    caches.triton.mkdir()
    try:
        _set_immutable(caches.triton, True)
    except OSError as exc:
        pytest.skip(f"cannot set the immutable flag here ({exc.strerror}): no CAP_LINUX_IMMUTABLE or fs support")
    try:
        with pytest.raises(OSError):
            (caches.triton / "probe").write_text("x")  # really read-only, for root too
        [f] = by_id(check_caches(make_facts(caches.cwd, dists={"triton": "3.4.0"})), "cache.unwritable")
        assert "Operation not permitted" in dict(f.evidence)["problem"]
    finally:
        _set_immutable(caches.triton, False)


@linux_only
def test_read_only_directory_as_unprivileged_user(tmp_path: Path) -> None:
    """A 0555 cache dir seen by an unprivileged uid (the doctor run as nobody, via the CLI): ERROR unwritable."""
    import subprocess
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged uid")
    base = Path(tempfile.mkdtemp(prefix="tune-doctor-ro-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        ro = base / "triton"
        ro.mkdir(mode=0o555)
        os.chmod(ro, 0o555)
        repo = Path(__file__).resolve().parents[2]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(base), "TRITON_CACHE_DIR": str(ro),
               "TORCHINDUCTOR_CACHE_DIR": str(base / "ind"), "DOCTOR_CACHE_DIR": str(base / "doc"),
               "PYTHONPATH": str(repo), "DOCTOR_GPUS": "none", "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            proc = subprocess.run([sys.executable, "-m", "doctor", "cache", "status", "--which", "triton", "--json"],
                                  capture_output=True, text=True, timeout=60, env=env, cwd=str(base), user=65534)
        except (PermissionError, OSError) as exc:
            pytest.skip(f"cannot run as uid 65534 here: {exc}")
        if proc.returncode == 3 or not proc.stdout.strip():
            pytest.skip(f"uid 65534 cannot run the doctor from this checkout: {proc.stderr.strip()[-300:]}")
        doc = json.loads(proc.stdout)
        [root] = doc["roots"]
        assert root["writable"] is False
        assert "cache.unwritable" in [f["id"] for f in doc["findings"]]
    finally:
        os.chmod(base / "triton", 0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- plan


def test_plan_dedupes_and_converts_location_env(caches) -> None:  # type: ignore[no-untyped-def]
    """One action per target; the location rule's set-env fix becomes a set-location repair."""
    d = unsloth_dir(caches)
    (d / "UnslothSFTTrainer.py").write_text(header()[:20])  # broken (and would be quarantined once)
    fs = diagnose(make_facts(caches.cwd), ("unsloth",), mode="status").findings
    acts = plan(fs)
    assert [isinstance(a, SetEnv) and a.directory for a in acts].count(True) == 1  # cwd-relative location pinned
    assert [(type(a), a.root, a.paths) for a in acts if isinstance(a, MoveToQuarantine)].count(
        (MoveToQuarantine, str(d), (str(d / "UnslothSFTTrainer.py"),))) == 1


def test_scan_budget_marks_partial(caches) -> None:  # type: ignore[no-untyped-def]
    """A walk that runs out of time says it is partial instead of taking longer."""
    for i in range(300):
        triton_kernel(caches.triton, f"K{i:03d}")
    [s] = scan_roots(resolve_roots(None, None, ("triton",)), Expect({}, None, frozenset(), str(caches.cwd)),
                     budget=0.0005)
    assert s.status == "ok" and not s.complete and s.entries < 300
    [full] = scan_roots(resolve_roots(None, None, ("triton",)), Expect({}, None, frozenset(), str(caches.cwd)),
                        budget=30, full=True)
    assert full.complete and full.entries == 300 and full.files == 300 * 5


def test_network_filesystem_finding(caches) -> None:  # type: ignore[no-untyped-def]
    """A root on NFS (the scan's mount record as /proc/self/mountinfo would give it): WARN with a local location fix."""
    from doctor.cache.diagnose import root_findings
    from doctor.cache.fsinfo import Mount

    triton_kernel(caches.triton, "KEY")
    [s] = scan_roots(resolve_roots(None, None, ("triton",)), Expect({}, None, frozenset(), str(caches.cwd)))
    assert s.mount is not None and not s.mount.network  # this machine's real answer for tmp_path
    nfs = s._replace(mount=Mount(str(caches.triton.parent), "nfs4", "filer:/export"))
    [f] = by_id(root_findings(nfs, make_facts(caches.cwd, dists={"triton": "3.4.0"}), "check"), "cache.network-fs")
    assert f.severity is Severity.WARN and "nfs4 (filer:/export" in dict(f.evidence)["filesystem"]
    [a] = f.fix
    assert isinstance(a, SetEnv) and a.directory and a.name == "TRITON_CACHE_DIR"
    assert not a.value.startswith(str(caches.triton))


def test_check_stays_cheap_on_a_used_cache(caches) -> None:  # type: ignore[no-untyped-def]
    """15 compiled modules + 400 Triton kernels: the check-depth scan stays well inside its budget."""
    d = unsloth_dir(caches)
    for i in range(14):
        (d / f"UnslothT{i}Trainer.py").write_text(module(f"UnslothT{i}Trainer", body="x = 1\n" * 2000))
    (d / "moe_utils.py").write_text("import os\n")
    for i in range(400):
        triton_kernel(caches.triton, f"K{i:03d}")
    facts = make_facts(caches.cwd, dists={**INSTALLED, "triton": "3.4.0", "torch": "2.11.0"})
    check_caches(facts)  # warm imports
    t0 = time.perf_counter()
    fs = check_caches(facts)
    took = time.perf_counter() - t0
    print(f"\ncheck_caches on 15 modules + 400 kernels: {took * 1000:.0f} ms")
    assert took < 0.4
    assert [f for f in fs if f.severity > Severity.OK] == []


def test_location_fixes_name_the_variable_and_a_per_user_directory(caches, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Unusable TRITON_CACHE_DIR and DOCTOR_CACHE_DIR: each fix is VAR=<absolute per-user dir>, said in its text, and
    the Triton one is a sibling in the user cache dir, never inside the doctor's own cache (scanned and cleared as ours)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    env = {"TRITON_CACHE_DIR": str(blocker / "triton"), "DOCTOR_CACHE_DIR": str(blocker / "doctor")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs = by_id(check_caches(make_facts(caches.cwd, env, dists={"triton": "3.4.0"})), "cache.unwritable")
    fixes = {f.fix[0].name: f.fix[0] for f in fs}
    assert set(fixes) == {"TRITON_CACHE_DIR", "DOCTOR_CACHE_DIR"}
    assert fixes["TRITON_CACHE_DIR"].value == str(xdg / "triton")
    assert fixes["DOCTOR_CACHE_DIR"].value == str(xdg / "tune-doctor")
    for var, a in fixes.items():
        assert isinstance(a, SetEnv) and a.directory and os.path.isabs(a.value)
        assert f"{var}={a.value}" in a.description and a.command() == f"export {var}={a.value}"
