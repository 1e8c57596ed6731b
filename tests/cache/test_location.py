"""unsloth compiled-cache location: real directories, files, FIFOs and /proc; no filesystem mocks."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from doctor.cache import location as cl
from doctor._util.timeouts import TimedOut, call_with_timeout
from doctor.cache.location import (
    check_unsloth_cache_location,
    resolve_unsloth_cache_dir,
    try_write,
)
from doctor.actions import SetEnv
from doctor.facts import Distribution, Facts, PlatformInfo, PythonInfo
from doctor.findings import Finding, Severity

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and FIFOs")


def make_facts(cwd: Path, env: Optional[Dict[str, str]] = None, dists: tuple = ("unsloth", "unsloth-zoo")) -> Facts:
    """Facts with just what this rule reads."""
    return Facts(
        python=PythonInfo("3.11.7", "CPython", sys.executable, sys.prefix, sys.base_prefix),
        platform=PlatformInfo("Linux", "x86_64", "6.0"),
        distributions={d: Distribution(d, "2026.10.9") for d in dists},
        env=dict(env or {}),
        cwd=str(cwd),
    )


def by_id(findings: List[Finding]) -> Dict[str, Finding]:
    """Findings keyed by id (each id appears once here)."""
    out = {f.id: f for f in findings}
    assert len(out) == len(findings)
    return out


def fix_value(f: Finding) -> str:
    """The value of the single set-env fix (a directory the doctor can create), named in its description."""
    [a] = f.fix
    assert isinstance(a, SetEnv) and a.directory and a.name == "UNSLOTH_COMPILE_LOCATION"
    assert f"UNSLOTH_COMPILE_LOCATION={a.value}" in a.description
    return a.value


def assert_writable_absolute(value: str) -> None:
    """A suggested location is absolute and unsloth could create/write it."""
    assert os.path.isabs(value)
    assert try_write(Path(value)).writable


# ----------------------------------------------------------------------------- resolver


def test_resolve_default_is_relative_to_cwd(tmp_path: Path) -> None:
    """Unset (or empty, like unsloth_zoo's `if _loc`) -> cwd/unsloth_compiled_cache."""
    assert resolve_unsloth_cache_dir({}, str(tmp_path)) == (tmp_path / "unsloth_compiled_cache", True)
    assert resolve_unsloth_cache_dir({"UNSLOTH_COMPILE_LOCATION": ""}, str(tmp_path))[0].name == "unsloth_compiled_cache"


def test_resolve_relative_and_absolute(tmp_path: Path) -> None:
    """Relative values join cwd (normalised); absolute values stand; `~` is not expanded."""
    env = {"UNSLOTH_COMPILE_LOCATION": "../shared/cache"}
    assert resolve_unsloth_cache_dir(env, str(tmp_path / "a")) == (tmp_path / "shared" / "cache", True)
    env = {"UNSLOTH_COMPILE_LOCATION": "/opt/cache/"}
    assert resolve_unsloth_cache_dir(env, str(tmp_path)) == (Path("/opt/cache"), False)
    env = {"UNSLOTH_COMPILE_LOCATION": "~/cache"}
    assert resolve_unsloth_cache_dir(env, str(tmp_path)) == (tmp_path / "~" / "cache", True)


# ----------------------------------------------------------------------------- rule


def test_not_installed_no_findings(tmp_path: Path) -> None:
    """Neither unsloth nor unsloth_zoo installed: the rule says nothing."""
    assert check_unsloth_cache_location(make_facts(tmp_path, dists=("transformers",))) == []


def test_zoo_alone_is_enough(tmp_path: Path) -> None:
    """unsloth_zoo without unsloth still compiles into the cache."""
    assert check_unsloth_cache_location(make_facts(tmp_path, dists=("unsloth-zoo",)))


def test_default_missing_dir_is_info_relative_and_creates_nothing(tmp_path: Path) -> None:
    """Default location, not created yet, writable: INFO relative (fix: an absolute dir) + OK writable; nothing written."""
    out = by_id(check_unsloth_cache_location(make_facts(tmp_path)))
    assert set(out) == {"cache.unsloth-relative", "cache.unsloth-location"}
    warn = out["cache.unsloth-relative"]
    assert warn.severity is Severity.INFO and warn.title == "unsloth compiled cache depends on the working directory"
    assert "why a warning" not in dict(warn.evidence)
    value = fix_value(warn)
    assert value.endswith("/unsloth_compiled_cache") and not value.startswith(str(tmp_path))
    assert_writable_absolute(value)
    ok = out["cache.unsloth-location"]
    assert ok.severity is Severity.OK and "can be created" in ok.title
    assert list(tmp_path.iterdir()) == []  # never creates the cache dir, leaves no probe file


def test_existing_relative_dir_is_pinned(tmp_path: Path) -> None:
    """An existing writable ./unsloth_compiled_cache: the fix pins that very directory; nothing left behind."""
    cache = tmp_path / "unsloth_compiled_cache"
    cache.mkdir()
    (cache / "UnslothSFTTrainer.py").write_text("x = 1\n")
    out = by_id(check_unsloth_cache_location(make_facts(tmp_path)))
    assert fix_value(out["cache.unsloth-relative"]) == str(cache)
    assert out["cache.unsloth-location"].severity is Severity.OK
    assert sorted(p.name for p in cache.iterdir()) == ["UnslothSFTTrainer.py"]


def test_absolute_writable_is_only_ok(tmp_path: Path) -> None:
    """An absolute, writable location: one OK finding."""
    env = {"UNSLOTH_COMPILE_LOCATION": str(tmp_path / "deep" / "er" / "cache")}
    [f] = check_unsloth_cache_location(make_facts(tmp_path, env))
    assert f.id == "cache.unsloth-location" and f.severity is Severity.OK
    assert dict(f.evidence)["tested"] == str(tmp_path)  # nearest existing ancestor
    assert list(tmp_path.iterdir()) == []


def test_parent_is_a_regular_file(tmp_path: Path) -> None:
    """tmp/file.txt/cache: cannot be created even by root -> unwritable (WARN: zoo's fallback unknown without the
    matrix) with a writable absolute fix."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("data")
    env = {"UNSLOTH_COMPILE_LOCATION": str(blocker / "cache" / "sub")}
    [f] = check_unsloth_cache_location(make_facts(tmp_path, env))
    assert f.id == "cache.unsloth-unwritable" and f.severity is Severity.WARN
    assert f"{blocker} is not a directory" in f.title
    assert "a regular file" in dict(f.evidence)["problem"]
    assert_writable_absolute(fix_value(f))
    assert blocker.read_text() == "data"


def test_location_is_a_file(tmp_path: Path) -> None:
    """The location exists as a file: ERROR (unsloth's makedirs raises FileExistsError)."""
    target = tmp_path / "cache"
    target.write_text("")
    [f] = check_unsloth_cache_location(make_facts(tmp_path, {"UNSLOTH_COMPILE_LOCATION": str(target)}))
    assert f.id == "cache.unsloth-unwritable" and "exists but is not a directory" in f.title


@linux_only
def test_location_is_a_fifo_does_not_block(tmp_path: Path) -> None:
    """A FIFO at the location is reported as not a directory, at once (it is never opened)."""
    fifo = tmp_path / "cache"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    [f] = check_unsloth_cache_location(make_facts(tmp_path, {"UNSLOTH_COMPILE_LOCATION": str(fifo)}), timeout=5)
    assert time.monotonic() - t0 < 1
    assert f.id == "cache.unsloth-unwritable" and "a FIFO" in dict(f.evidence)["problem"]


@linux_only
def test_under_proc_is_unwritable(tmp_path: Path) -> None:
    """/proc accepts no new files, not even from root: missing and existing directories both fail."""
    for loc, exists in (("/proc/tune-doctor-no-such-cache", "no"), ("/proc/self", "yes")):
        [f] = check_unsloth_cache_location(make_facts(tmp_path, {"UNSLOTH_COMPILE_LOCATION": loc}))
        assert f.id == "cache.unsloth-unwritable", loc
        assert dict(f.evidence)["exists"] == exists
        assert_writable_absolute(fix_value(f))


@linux_only
def test_relative_and_unwritable_gives_both(tmp_path: Path) -> None:
    """A relative setting whose parent is a file: WARN relative (because unwritable) and unwritable, same fix value."""
    (tmp_path / "f").write_text("")
    out = by_id(check_unsloth_cache_location(make_facts(tmp_path, {"UNSLOTH_COMPILE_LOCATION": "f/cache"})))
    assert set(out) == {"cache.unsloth-relative", "cache.unsloth-unwritable"}
    assert out["cache.unsloth-relative"].severity is Severity.WARN
    assert "cannot be created" in dict(out["cache.unsloth-relative"].evidence)["why a warning"]
    assert fix_value(out["cache.unsloth-relative"]) == fix_value(out["cache.unsloth-unwritable"])


def test_common_case_is_fast(tmp_path: Path) -> None:
    """Typical call (existing absolute writable dir) stays well under 50 ms."""
    env = {"UNSLOTH_COMPILE_LOCATION": str(tmp_path)}
    facts = make_facts(tmp_path, env)
    check_unsloth_cache_location(facts)  # warm imports
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        check_unsloth_cache_location(facts)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.05, times


# ----------------------------------------------------------------------------- timeout, with a real block


@pytest.fixture()
def blocking_fifo(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A FIFO with no reader: opening it for writing blocks. Unblocked (a reader opens) at teardown."""
    fifo = tmp_path / "blocker.fifo"
    os.mkfifo(fifo)
    yield fifo
    # Release any thread still stuck in open(): a non-blocking reader lets the writer's open return.
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    time.sleep(0.05)
    os.close(fd)


@linux_only
def test_call_with_timeout_returns_on_a_real_block(blocking_fifo: Path) -> None:
    """open(FIFO, 'w') with no reader really blocks; the daemon-thread runner gives up on time."""
    t0 = time.monotonic()
    with pytest.raises(TimedOut, match="0.2 s"):
        call_with_timeout(lambda: open(blocking_fifo, "wb"), 0.2)
    assert 0.15 < time.monotonic() - t0 < 1.0
    stuck = [t for t in threading.enumerate() if t.name == "tune-doctor-call"]
    assert stuck and all(t.daemon for t in stuck)


def test_call_with_timeout_passes_results_and_errors() -> None:
    """Values come back; exceptions are re-raised in the caller."""
    assert call_with_timeout(lambda: 42, 1.0) == 42
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 1.0)


@linux_only
def test_unresponsive_location_is_an_error(
    tmp_path: Path, blocking_fifo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that hangs (here: it opens the FIFO, as a stalled mount would hang) -> ERROR unresponsive."""
    real_probe = cl.try_write
    target = tmp_path / "cache"

    def hanging_probe(path: Path):  # type: ignore[no-untyped-def]
        if path == target:
            with open(blocking_fifo, "wb"):  # blocks: no reader
                pass
        return real_probe(path)

    monkeypatch.setattr(cl, "try_write", hanging_probe)
    t0 = time.monotonic()
    out = check_unsloth_cache_location(make_facts(tmp_path, {"UNSLOTH_COMPILE_LOCATION": str(target)}), timeout=0.3)
    assert time.monotonic() - t0 < 2
    [f] = out
    assert f.id == "cache.unsloth-unresponsive" and f.severity is Severity.ERROR
    assert str(target) in f.title and "0.3 s" in f.title
    assert dict(f.evidence)["timeout"] == "0.3 s"
    assert fix_value(f) != str(target)


# ----------------------------------------------------------------------------- severity by unsloth_zoo release (issue 7)


def zoo_facts(cwd: Path, zoo: str, env: Optional[Dict[str, str]] = None) -> Facts:
    """unsloth and unsloth_zoo at one release."""
    return Facts(
        python=PythonInfo("3.11.7", "CPython", sys.executable, sys.prefix, sys.base_prefix),
        platform=PlatformInfo("Linux", "x86_64", "6.0"),
        distributions={"unsloth": Distribution("unsloth", zoo), "unsloth-zoo": Distribution("unsloth-zoo", zoo)},
        env=dict(env or {}),
        cwd=str(cwd),
    )


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    """The bundled matrix (it records from which unsloth_zoo release the temp-directory fallback exists)."""
    from doctor.compat_matrix.loader import load_matrix

    m = load_matrix()
    assert m.unsloth_cache_fallback is not None and m.unsloth_cache_fallback.since == "2025.3.8"
    return m


@linux_only
def test_read_only_working_directory_with_fallback_is_a_warning(matrix) -> None:  # type: ignore[no-untyped-def]
    """The seed report: unsloth 2026.10.9 in a read-only working directory logs, falls back to the shared temp dir
    and trains. Both findings are warnings (not errors), and the fix is a per-user directory, never that temp dir."""
    import tempfile

    ro = Path("/proc/self")  # read-only for every user, root included
    out = by_id(check_unsloth_cache_location(zoo_facts(ro, "2026.10.9"), matrix))
    assert set(out) == {"cache.unsloth-relative", "cache.unsloth-unwritable"}
    unw, rel = out["cache.unsloth-unwritable"], out["cache.unsloth-relative"]
    assert unw.severity is Severity.WARN and rel.severity is Severity.WARN
    shared = os.path.join(tempfile.gettempdir(), "unsloth_compiled_cache")
    assert shared in unw.explanation and "every user" in unw.explanation and "2025.3.8" in unw.explanation
    assert dict(unw.evidence)["unsloth_zoo"] == "2026.10.9"
    value = fix_value(unw)
    assert value != shared and not value.startswith(shared + os.sep) and value == fix_value(rel)
    assert_writable_absolute(value)


@linux_only
def test_unwritable_without_fallback_is_an_error(matrix) -> None:  # type: ignore[no-untyped-def]
    """unsloth_zoo 2025.3.1 has no fallback: it fails at model load, so an unwritable location is an ERROR; it also
    does not read UNSLOTH_COMPILE_LOCATION (2025.7.11+), so the first fix says what works instead."""
    ro = Path("/proc/self")
    [f] = check_unsloth_cache_location(zoo_facts(ro, "2025.3.1", {"UNSLOTH_COMPILE_LOCATION": "/proc/self/c"}), matrix)
    assert f.id == "cache.unsloth-unwritable" and f.severity is Severity.ERROR
    assert "older than 2025.3.8" in f.explanation
    manual, pin = f.fix
    assert "does not read UNSLOTH_COMPILE_LOCATION" in manual.description and isinstance(pin, SetEnv)


@linux_only
def test_unwritable_severity_by_release(matrix) -> None:  # type: ignore[no-untyped-def]
    """2025.3.8+ shared fallback and 2025.3.2-7 random fallback: WARN; unknown or garbage release, or no matrix: WARN."""
    env = {"UNSLOTH_COMPILE_LOCATION": "/proc/self/c"}
    for zoo, m, words in (("2025.3.8", matrix, "every user"), ("2025.10.1", matrix, "every user"),
                          ("2025.3.5", matrix, "random temporary directory"),
                          ("abc", matrix, "not known"), ("2026.10.9", None, "not known")):
        [f] = check_unsloth_cache_location(zoo_facts(Path("/proc/self"), zoo, env), m)
        assert f.id == "cache.unsloth-unwritable" and f.severity is Severity.WARN, zoo
        assert words in f.explanation, (zoo, f.explanation)


def test_relative_on_a_network_filesystem_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The working directory on NFS (the mount table as /proc/self/mountinfo gives it): the relative cache is a WARN."""
    from doctor.cache import fsinfo

    line = f"36 25 0:41 / {tmp_path} rw,relatime - nfs4 filer:/export rw,vers=4.2\n"
    table = fsinfo.parse_mountinfo("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" + line)
    monkeypatch.setattr(fsinfo, "_TABLE", table)
    f = by_id(check_unsloth_cache_location(make_facts(tmp_path)))["cache.unsloth-relative"]
    assert f.severity is Severity.WARN and "network filesystem (nfs4)" in dict(f.evidence)["why a warning"]
    assert dict(f.evidence)["filesystem"].startswith("nfs4 (filer:/export")


def test_script_elsewhere_makes_the_relative_cache_a_warning(tmp_path: Path) -> None:
    """`doctor check --script` from another directory: a run started beside the script compiles elsewhere (WARN);
    a script in the working directory keeps it INFO; an absolute location has no relative finding at all."""
    (tmp_path / "work").mkdir()
    (tmp_path / "jobs").mkdir()
    facts = make_facts(tmp_path / "work")
    here = by_id(check_unsloth_cache_location(facts, scripts=["train.py"]))["cache.unsloth-relative"]
    assert here.severity is Severity.INFO
    f = by_id(check_unsloth_cache_location(facts, scripts=["../jobs/train.py"]))["cache.unsloth-relative"]
    assert f.severity is Severity.WARN
    ev = dict(f.evidence)
    assert ev[f"started in {tmp_path / 'jobs'}"] == str(tmp_path / "jobs" / "unsloth_compiled_cache")
    assert "another cache" in ev["why a warning"]
    absolute = make_facts(tmp_path / "work", {"UNSLOTH_COMPILE_LOCATION": str(tmp_path / "c")})
    assert [x.id for x in check_unsloth_cache_location(absolute, scripts=["../jobs/train.py"])] == ["cache.unsloth-location"]


def test_existing_cache_in_the_shared_temp_dir_is_never_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started in the temp dir, ./unsloth_compiled_cache IS the shared fallback: the fix is a per-user directory."""
    import tempfile

    systmp = tmp_path / "systmp"
    (systmp / "unsloth_compiled_cache").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    f = by_id(check_unsloth_cache_location(make_facts(systmp)))["cache.unsloth-relative"]
    assert fix_value(f) == str(tmp_path / "xdg" / "unsloth_compiled_cache")


def test_suggestion_is_per_user_when_the_user_cache_dir_is_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No usable ~/.cache: a temp subdirectory named with the uid; one that others may write is not offered."""
    import tempfile

    from doctor.cache.roots import suggest_location

    systmp = tmp_path / "systmp"
    systmp.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))  # below a regular file: never creatable
    mine = str(systmp / f"unsloth_compiled_cache-uid{os.geteuid()}")
    for kind, name in (("unsloth", "unsloth_compiled_cache"), ("triton", "triton"), ("doctor", "tune-doctor")):
        assert suggest_location(kind) == str(systmp / f"{name}-uid{os.geteuid()}")
    os.mkdir(mine)
    os.chmod(mine, 0o777)  # anyone could plant modules there
    assert suggest_location("unsloth") == str(blocker / "cache" / "unsloth_compiled_cache")
