"""The doctor's own cache: stamped generated modules imported through an explicit spec; corruption is a miss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.cache.own import MODULE_STAMP, DoctorCache, module_text, verify_module_text

REPO = Path(__file__).resolve().parents[2]


def test_module_round_trip_without_sys_path_or_bytecode(tmp_path: Path) -> None:
    """write_module + import_module: the code runs, sys.path is untouched, no __pycache__ appears."""
    c = DoctorCache(tmp_path)
    path_before = list(sys.path)
    p = c.write_module("dispatch", "k1", "X = 41\ndef f():\n    return X + 1\n")
    assert p == tmp_path / "dispatch" / "k1.py" and p.read_text().startswith(MODULE_STAMP)
    mod = c.import_module("dispatch", "k1", "tune_doctor_test_k1")
    assert mod is not None and mod.f() == 42 and mod.__file__ == str(p)
    assert mod.__spec__.origin == str(p) and sys.modules["tune_doctor_test_k1"] is mod
    assert sys.path == path_before
    assert not (p.parent / "__pycache__").exists()


def test_missing_and_foreign_entries_are_misses(tmp_path: Path) -> None:
    """Absent, other kind/key, other format or doctor version, plain Python without a stamp: all None."""
    c = DoctorCache(tmp_path)
    assert c.import_module("gen", "absent", "m") is None
    c.write_module("gen", "a", "X = 1\n")
    text = c.module_path("gen", "a").read_text()
    c.module_path("gen", "b").write_text(text)  # copied under another key
    assert c.import_module("gen", "b", "m") is None
    stamp = json.loads(text.splitlines()[0][len(MODULE_STAMP):])
    for field, value in (("format", 99), ("doctor", "0.0.0")):
        bad = dict(stamp, **{field: value})
        c.module_path("gen", "a").write_text(MODULE_STAMP + json.dumps(bad) + "\n" + text.split("\n", 1)[1])
        assert c.import_module("gen", "a", "m") is None
    c.module_path("gen", "a").write_text("X = 1\n")
    assert c.import_module("gen", "a", "m") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "binary"])
def test_corrupt_entry_is_a_miss_and_is_regenerated(tmp_path: Path, damage: str) -> None:
    """A torn, edited, empty or binary entry never imports; get_or_create_module rewrites it from the generator."""
    c = DoctorCache(tmp_path)
    c.write_module("gen", "k", "VALUE = 'original'\n")
    p = c.module_path("gen", "k")
    raw = p.read_bytes()
    p.write_bytes({"truncate": raw[: len(raw) - 5], "flip": raw.replace(b"original", b"modified"),
                   "empty": b"", "binary": b"\xff\xfe\x00garbage"}[damage])
    assert c.import_module("gen", "k", "m") is None
    calls = []
    mod = c.get_or_create_module("gen", "k", lambda: calls.append(1) or "VALUE = 'regenerated'\n", "tune_doctor_regen")
    assert mod.VALUE == "regenerated" and calls == [1]
    assert verify_module_text(p.read_bytes(), "gen", "k") is not None
    mod2 = c.get_or_create_module("gen", "k", lambda: calls.append(1) or "VALUE = 'again'\n", "tune_doctor_regen")
    assert mod2.VALUE == "regenerated" and calls == [1]  # a good entry is not regenerated


def test_entry_that_raises_is_regenerated_but_a_bad_generator_raises(tmp_path: Path) -> None:
    """Stored code that fails (stale against the doctor) is replaced; if fresh code fails too, that is a bug: raise."""
    c = DoctorCache(tmp_path)
    c.write_module("gen", "k", "raise ImportError('stale helper')\n")
    with pytest.raises(ImportError, match="stale helper"):
        c.import_module("gen", "k", "tune_doctor_raises")
    assert "tune_doctor_raises" not in sys.modules  # a failed import leaves nothing half-registered
    assert c.get_or_create_module("gen", "k", lambda: "OK = True\n", "tune_doctor_raises").OK is True
    with pytest.raises(SyntaxError):
        c.get_or_create_module("gen", "k2", lambda: "def broken(:\n", "tune_doctor_bad_gen")


def test_module_text_stamp_covers_the_body() -> None:
    """The stamp line carries the body's sha256; any byte of the body changed fails verification."""
    t = module_text("k", "key", "A = 1")
    assert t.endswith("A = 1\n") and verify_module_text(t.encode(), "k", "key") == t
    assert verify_module_text(t.replace("A = 1", "A = 2").encode(), "k", "key") is None


def test_json_api_unchanged(tmp_path: Path) -> None:
    """The existing JSON entries keep working next to modules."""
    c = DoctorCache(tmp_path)
    c.write_json("probe", "fp", {"verdict": "pass"})
    assert c.read_json("probe", "fp") == {"verdict": "pass"}
    c.path("probe", "fp").write_text("{torn")
    assert c.read_json("probe", "fp") is None


def test_concurrency_stress_16x200() -> None:
    """16 processes x 200 iterations writing, reading and importing the same entries: 0 ImportErrors, 0 torn reads."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cache_stress.py"), "--procs", "16",
                           "--iters", "200", "--json"], capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\ncache stress: {res['procs']} procs x {res['iterations']} iters in {res['seconds']} s: "
          f"json writes {res['json_writes']}, json reads {res['json_reads']}, torn reads {res['torn_reads']}, "
          f"module writes {res['module_writes']}, imports {res['imports']}, import errors {res['import_errors']}, "
          f"torn imports {res['torn_imports']}, get_or_create {res['get_or_create']}, "
          f"in-place corruptions {res['corruptions_injected']}, regenerations {res['regenerations']}")
    assert res["json_reads"] == res["imports"] == 16 * 200
    assert res["import_errors"] == 0 and res["torn_reads"] == 0 and res["torn_imports"] == 0, res
    assert res["corruptions_injected"] > 0 and res["regenerations"] > 0  # corruption was met and healed
    assert proc.returncode == 0


def test_json_nested_past_the_decoder_is_a_miss(tmp_path: Path) -> None:
    """`[[[[...` deeper than json recurses (RecursionError, not ValueError) is a corrupt entry, not a crash."""
    c = DoctorCache(tmp_path)
    c.write_json("probe", "fp", {"verdict": "pass"})
    c.path("probe", "fp").write_text("[" * 200000)
    assert c.read_json("probe", "fp") is None
