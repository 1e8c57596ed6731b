"""apply_cache_action on real files: moves to quarantine, lock removal, modes, locations, clear, and refusals."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

from doctor.cache import apply_cache_action
from doctor.cache.repair import (
    chmod_action,
    clear_action,
    quarantine_action,
    remove_lock_action,
    set_location_action,
)
from doctor.actions import Manual, MoveToQuarantine, PipInstall, RemoveStaleLock, SetEnv, TightenMode
from doctor.errors import DoctorError
from tests.cache.conftest import old, tree, triton_kernel

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock semantics")
STAMP = re.compile(r"^\d{8}T\d{6}Z$")


def test_quarantine_keeps_relative_path_under_a_utc_stamp(caches) -> None:  # type: ignore[no-untyped-def]
    """A Triton kernel dir moves to <root>.quarantine/<UTC stamp>/<key>, whole and intact."""
    kd = triton_kernel(caches.triton, "KEYA")
    before = tree(kd)
    msg = apply_cache_action(quarantine_action(str(caches.triton), str(kd)))
    assert not kd.exists() and msg.startswith("moved ")
    q = caches.triton.parent / "triton.quarantine"
    [stamp] = os.listdir(q)
    assert STAMP.match(stamp)
    assert tree(q / stamp / "KEYA") == before


def test_dry_run_changes_nothing(caches) -> None:  # type: ignore[no-untyped-def]
    """--dry-run validates and describes; the file system is untouched."""
    caches.unsloth.mkdir()
    p = caches.unsloth / "Conv3d.py"
    p.write_bytes(b"")
    msg = apply_cache_action(quarantine_action(str(caches.unsloth), str(p)), dry_run=True)
    assert msg.startswith("would move") and p.exists()
    assert not (caches.cwd / "unsloth_compiled_cache.quarantine").exists()


def test_quarantine_of_vanished_entry_is_a_no_op(caches) -> None:  # type: ignore[no-untyped-def]
    """Already gone (another repair, the owner regenerated): say so, do nothing."""
    caches.triton.mkdir()
    assert apply_cache_action(quarantine_action(str(caches.triton), str(caches.triton / "X"))).startswith("nothing to do")


def test_refuses_paths_outside_roots_and_dotdot(caches, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Outside the root, '..' (even one that stays inside), relative paths, unknown roots, the root itself: refused."""
    caches.triton.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cases = [
        quarantine_action(str(caches.triton), str(victim)),
        quarantine_action(str(caches.triton), str(caches.triton / ".." / "victim.txt")),
        quarantine_action(str(caches.triton), str(caches.triton / "a" / ".." / "b")),
        quarantine_action(str(caches.triton), "relative/path"),
        quarantine_action(str(tmp_path), str(victim)),  # not a cache root
        quarantine_action("/", "/etc/passwd"),
        quarantine_action(str(caches.triton), str(caches.triton)),
        MoveToQuarantine(str(tmp_path), whole_root=True),  # clear of a directory that is not a cache root
    ]
    for a in cases:
        with pytest.raises(DoctorError, match="refused"):
            apply_cache_action(a)
    assert victim.read_text() == "keep me"


def test_symlink_pointing_outside_is_refused_and_target_untouched(caches, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A module symlinked outside the root: quarantine and chmod are refused; the outside file keeps content and mode."""
    caches.unsloth.mkdir()
    outside = tmp_path / "outside.py"
    outside.write_text("x = 1\n")
    os.chmod(outside, 0o666)
    link = caches.unsloth / "Evil.py"
    link.symlink_to(outside)
    for a in (quarantine_action(str(caches.unsloth), str(link)), chmod_action(str(caches.unsloth), (str(link), 0o644)),
              remove_lock_action(str(caches.unsloth), str(link))):
        with pytest.raises(DoctorError, match="refused"):
            apply_cache_action(a)
    assert link.is_symlink() and outside.read_text() == "x = 1\n"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o666


def test_symlinked_directory_leading_outside_is_refused(caches, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """<root>/sub -> /elsewhere: a path through it escapes the root, even though it looks inside."""
    caches.triton.mkdir()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "KEY").mkdir(parents=True)
    (elsewhere / "KEY" / "__grp__k.json").write_text("{bad")
    (caches.triton / "sub").symlink_to(elsewhere)
    with pytest.raises(DoctorError, match="through a symlink"):
        apply_cache_action(quarantine_action(str(caches.triton), str(caches.triton / "sub" / "KEY")))
    assert (elsewhere / "KEY" / "__grp__k.json").read_text() == "{bad"


def test_symlink_inside_root_is_moved_as_a_link(caches) -> None:  # type: ignore[no-untyped-def]
    """A link to another file in the same cache may be moved: the link moves, its target stays."""
    caches.unsloth.mkdir()
    (caches.unsloth / "Real.py").write_text("x = 1\n")
    (caches.unsloth / "Alias.py").symlink_to(caches.unsloth / "Real.py")
    apply_cache_action(quarantine_action(str(caches.unsloth), str(caches.unsloth / "Alias.py")))
    assert (caches.unsloth / "Real.py").read_text() == "x = 1\n" and not os.path.lexists(caches.unsloth / "Alias.py")


@linux_only
def test_remove_lock_refuses_a_live_holder_and_removes_a_dead_lock(caches, lock_holder) -> None:  # type: ignore[no-untyped-def]
    """The lock of a running process is never removed; once it exits, the same lock goes."""
    locks = caches.unsloth / ".locks"
    locks.mkdir(parents=True)
    lock = locks / ".lock.UnslothSFTTrainer.py"
    h = lock_holder(lock)
    old(lock)
    a = remove_lock_action(str(caches.unsloth), str(lock))
    with pytest.raises(DoctorError, match="held by a running process"):
        apply_cache_action(a)
    with pytest.raises(DoctorError, match="held by a running process"):
        apply_cache_action(a, dry_run=True)
    assert lock.exists()
    h.stop()
    assert "would remove" in apply_cache_action(a, dry_run=True) and lock.exists()
    assert apply_cache_action(a).startswith("removed stale lock") and not lock.exists()


@linux_only
def test_quarantine_refuses_a_module_being_written(caches, lock_holder) -> None:  # type: ignore[no-untyped-def]
    """unsloth holds .locks/.lock.<name> while writing <name>: the doctor does not move it from under the writer."""
    (caches.unsloth / ".locks").mkdir(parents=True)
    mod = caches.unsloth / "UnslothSFTTrainer.py"
    mod.write_text("x")
    lock_holder(caches.unsloth / ".locks" / ".lock.UnslothSFTTrainer.py")
    with pytest.raises(DoctorError, match="being written"):
        apply_cache_action(quarantine_action(str(caches.unsloth), str(mod)))
    assert mod.exists()


def test_chmod_only_tightens_and_only_own_files(caches) -> None:  # type: ignore[no-untyped-def]
    """0666 -> 0644 works; a mode that adds write for others, or a file of another uid, is refused."""
    caches.unsloth.mkdir()
    p = caches.unsloth / "moe_utils.py"
    p.write_text("x = 1\n")
    os.chmod(p, 0o666)
    assert "0666 -> 0644" in apply_cache_action(chmod_action(str(caches.unsloth), (str(p), 0o644)))
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    with pytest.raises(DoctorError, match="writable by others"):
        apply_cache_action(TightenMode(str(caches.unsloth), ((str(p), 0o666),)))
    with pytest.raises(DoctorError, match="bad mode"):
        apply_cache_action(TightenMode(str(caches.unsloth), ((str(p), 0o1644),)))
    if os.geteuid() == 0:
        os.chown(p, 12345, 12345)
        os.chmod(p, 0o666)
        with pytest.raises(DoctorError, match="belongs to uid 12345"):
            apply_cache_action(chmod_action(str(caches.unsloth), (str(p), 0o644)))
        assert stat.S_IMODE(p.stat().st_mode) == 0o666


def test_set_location_creates_the_dir_and_sets_this_process(caches, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Creates the directory, sets the variable here, says how to persist it; also accepts a plain SetEnv."""
    monkeypatch.delenv("UNSLOTH_COMPILE_LOCATION", raising=False)
    target = tmp_path / "abs" / "unsloth_compiled_cache"
    a = set_location_action("UNSLOTH_COMPILE_LOCATION", str(target))
    assert a == SetEnv("UNSLOTH_COMPILE_LOCATION", str(target), a.description, directory=True) and a.automatic
    dry = apply_cache_action(a, dry_run=True)
    assert "would create" in dry and not target.exists()
    msg = apply_cache_action(SetEnv("UNSLOTH_COMPILE_LOCATION", str(target)))
    assert target.is_dir() and os.environ["UNSLOTH_COMPILE_LOCATION"] == str(target)
    assert f"export UNSLOTH_COMPILE_LOCATION={target}" in msg and "%env" in msg
    for bad in (("PATH", "/tmp"), ("UNSLOTH_COMPILE_LOCATION", "relative"), ("TRITON_CACHE_DIR", str(tmp_path / "a/../b"))):
        with pytest.raises(DoctorError, match="refused"):
            apply_cache_action(set_location_action(*bad))
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(DoctorError, match="not a directory"):
        apply_cache_action(set_location_action("TRITON_CACHE_DIR", str(f)))


def test_clear_moves_the_whole_cache_and_leaves_an_empty_one(caches) -> None:  # type: ignore[no-untyped-def]
    """clear: the cache goes to its quarantine in one rename (never deleted); an empty root with its mode remains."""
    triton_kernel(caches.triton, "KEYA")
    os.chmod(caches.triton, 0o750)
    before = tree(caches.triton)
    assert "would move" in apply_cache_action(clear_action(str(caches.triton)), dry_run=True)
    assert tree(caches.triton) == before
    msg = apply_cache_action(clear_action(str(caches.triton)))
    assert "moved" in msg and os.listdir(caches.triton) == []
    assert stat.S_IMODE(caches.triton.stat().st_mode) == 0o750
    q = caches.triton.parent / "triton.quarantine"
    [stamp] = os.listdir(q)
    assert tree(q / stamp / "triton") == before


def test_malformed_actions(caches) -> None:  # type: ignore[no-untyped-def]
    """Wrong arity cannot be built; non-cache kinds and things that are not actions (an argv tuple) are bad input."""
    for build in (lambda: MoveToQuarantine(str(caches.triton), ()), lambda: RemoveStaleLock(str(caches.triton), ()),
                  lambda: TightenMode(str(caches.triton), ()),
                  lambda: MoveToQuarantine(str(caches.triton), (str(caches.triton / "x"),), whole_root=True)):
        with pytest.raises(ValueError):
            build()
    for a in (("quarantine", str(caches.triton)), ("frobnicate",), "clear", None, PipInstall(("torch==2.8.0",)),
              SetEnv("PATH", "/x"), SetEnv("PATH", "/x", directory=True), Manual("do it by hand")):
        with pytest.raises(DoctorError):
            apply_cache_action(a)


def test_shared_folders_are_never_treated_as_a_cache(caches, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """UNSLOTH_COMPILE_LOCATION=. or TORCHINDUCTOR_CACHE_DIR=/tmp: a WARN, no per-file findings, clear refused."""
    from doctor.cache.diagnose import diagnose
    from tests.cache.conftest import by_id, make_facts

    (caches.cwd / "__init__.py").write_bytes(b"")
    (caches.cwd / "train.py").write_bytes(b"")  # the user's own (empty) file: never the doctor's business
    monkeypatch.setenv("UNSLOTH_COMPILE_LOCATION", ".")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp")
    facts = make_facts(caches.cwd, dists={"unsloth": "2026.10.9", "torch": "2.11.0"})
    fs = diagnose(facts, ("unsloth", "inductor"), mode="status").findings
    shared = by_id(fs, "cache.shared-directory")
    assert {f.subject for f in shared} == {str(caches.cwd), "/tmp"}  # /tmp twice: unsloth falls back to <tmp>/.
    assert all(isinstance(f.fix[0], SetEnv) and f.fix[0].directory for f in shared)
    assert not by_id(fs, "cache.zero-byte")
    for root, path in ((str(caches.cwd), str(caches.cwd / "train.py")), ("/tmp", "/tmp/whatever")):
        with pytest.raises(DoctorError, match="refused: cache root .* is the (working|system temp) directory"):
            apply_cache_action(quarantine_action(root, path))
        with pytest.raises(DoctorError, match="refused"):
            apply_cache_action(clear_action(root))
    assert (caches.cwd / "train.py").exists()


@linux_only
def test_one_action_many_targets_all_or_nothing(caches, tmp_path: Path, lock_holder) -> None:  # type: ignore[no-untyped-def]
    """A multi-target action: one unsafe target refuses the whole action; a busy one is skipped, the rest done."""
    caches.unsloth.mkdir()
    a, b = caches.unsloth / "A.py", caches.unsloth / "B.py"
    a.write_text("")
    b.write_text("")
    outside = tmp_path / "outside.py"
    outside.write_text("keep")
    with pytest.raises(DoctorError, match="outside the cache root"):
        apply_cache_action(quarantine_action(str(caches.unsloth), str(a), str(outside), str(b)))
    assert a.exists() and b.exists() and outside.read_text() == "keep"  # nothing was moved
    (caches.unsloth / ".locks").mkdir()
    lock_holder(caches.unsloth / ".locks" / ".lock.B.py")  # B is being written right now
    msg = apply_cache_action(quarantine_action(str(caches.unsloth), str(a), str(b), str(caches.unsloth / "gone.py")))
    assert not a.exists() and b.exists()
    assert "moved" in msg and "nothing to do" in msg and "skipped 1 in use" in msg and "\n" not in msg
    c = caches.unsloth / "C.py"
    c.write_text("")
    for f in (b, c):
        os.chmod(f, 0o666)
    apply_cache_action(chmod_action(str(caches.unsloth), (str(b), 0o644), (str(c), 0o600)))
    assert stat.S_IMODE(b.stat().st_mode) == 0o644 and stat.S_IMODE(c.stat().st_mode) == 0o600
