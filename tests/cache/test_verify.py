"""`doctor cache verify`: compiled modules imported in child processes; hangs and crashes pinned on their module."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from doctor.cache.verify import verify_modules
from doctor.findings import Severity
from tests.cache.conftest import by_id, header, make_facts, module

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and process groups")


def write(d: Path, name: str, text: str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return str(d / name)


def installed_lib_missing_a_dependency(site: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed package (on the children's PYTHONPATH) whose own import needs a module that is not installed."""
    write(site / "tune_doctor_fake_lib", "__init__.py", "import tune_doctor_missing_dependency_xyz\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return "tune_doctor_fake_lib"


def fake_unsloth(site: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A package named unsloth on the children's PYTHONPATH whose import runs `body` (cwd: the training directory)."""
    write(site / "unsloth", "__init__.py", "import os\nCACHE = os.path.join(os.getcwd(), 'unsloth_compiled_cache')\n"
          "def rewrite(name, text):\n    with open(os.path.join(CACHE, name), 'w') as fh:\n        fh.write(text)\n"
          + body)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


def test_each_failure_is_classified(tmp_path: Path) -> None:
    """Good, syntax error, truncated (cut mid-statement), import error, exec error, import of what nothing provides."""
    d = tmp_path / "c"
    good = write(d, "UnslothSFTTrainer.py", module("UnslothSFTTrainer"))
    full = module("UnslothDPOTrainer", body="def f(x):\n    return x + 1\n")
    cut = write(d, "UnslothDPOTrainer.py", full[: full.index("x + 1") + 3])  # cut short: "return x +"
    syn = write(d, "Conv3d.py", "def forward(self:\n")
    imp = write(d, "LayerNorm.py", "from json import no_such_name\n")
    exe = write(d, "RMSNorm.py", "x = undefined_name\n")
    dep = write(d, "GroupNorm.py", "import tune_doctor_missing_dependency_xyz\n")
    res, note = verify_modules(str(d), [good, cut, syn, imp, exe, dep], timeout=20)
    assert [r.status for r in res] == ["ok", "syntax-error", "syntax-error", "import-error", "exec-error",
                                       "import-error"], res
    assert note == ""
    assert res[3].where == "LayerNorm.py:1" and "no_such_name" in res[3].error
    # no installed package provides it and it is not part of the training stack: the module is broken
    # (quarantined, so unsloth regenerates it), not "unverified"
    assert res[5].broken and res[5].where == "GroupNorm.py:1" and "tune_doctor_missing_dependency_xyz" in res[5].error
    assert not (d / "__pycache__").exists()  # the check never writes bytecode into the cache


def test_truncated_at_a_statement_boundary_is_incomplete(tmp_path: Path) -> None:
    """A trainer module cut between statements still compiles, but lacks its class: 'incomplete'."""
    d = tmp_path / "c"
    text = module("UnslothGRPOTrainer", body="A = 1\nB = 2\n")
    p = write(d, "UnslothGRPOTrainer.py", text[: text.index("class ")])
    [r] = verify_modules(str(d), [p], timeout=20)[0]
    assert r.status == "incomplete" and r.broken


@linux_only
def test_hang_and_crash_are_attributed_and_the_rest_still_checked(tmp_path: Path) -> None:
    """A module that hangs is killed at the timeout, one that aborts the interpreter is blamed; others are verified."""
    d = tmp_path / "c"
    a = write(d, "A.py", "x = 1\n")
    hang = write(d, "Hang.py", "import time\ntime.sleep(60)\n")
    b = write(d, "B.py", "print('modules may print; the protocol is not disturbed')\n")
    crash = write(d, "Crash.py", "import os\nos.abort()\n")
    c = write(d, "C.py", "y = 2\n")
    t0 = time.monotonic()
    res, _ = verify_modules(str(d), [a, hang, b, crash, c], timeout=1.0)
    assert time.monotonic() - t0 < 15
    assert [r.status for r in res] == ["ok", "timeout", "ok", "crash", "ok"]
    assert "within 1 s" in res[1].error
    assert "SIGABRT" in res[3].error and "Crash.py" in res[3].error  # faulthandler's frame names the module


def test_preload_failure_leaves_modules_unverified(tmp_path: Path) -> None:
    """When the preload (unsloth, for real runs) cannot be imported, nothing is blamed on the modules."""
    d = tmp_path / "c"
    p = write(d, "A.py", "x = 1\n")
    [r], note = verify_modules(str(d), [p], timeout=10, preload=["tune_doctor_no_such_preload"])
    assert r.status == "not-run" and not r.broken and "tune_doctor_no_such_preload" in note


def test_verify_findings_replace_the_cheap_ones(caches, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """verify: one ERROR per broken module (with the error), INFO for unverifiable ones, summary counts clean ones."""
    from doctor.cache.diagnose import diagnose

    d = caches.unsloth
    write(d, "UnslothSFTTrainer.py", module("UnslothSFTTrainer"))
    write(d, "UnslothDPOTrainer.py", header()[:30])  # truncated header: cheap finding AND syntax error
    write(d, "Conv3d.py", header() + "from json import nope\n")
    write(d, "moe_utils.py", f"import {installed_lib_missing_a_dependency(caches.cwd.parent / 'site', monkeypatch)}\n")
    diag = diagnose(make_facts(caches.cwd), ("unsloth",), mode="verify", import_timeout=20, preload=[])
    broken = by_id(diag.findings, "cache.unsloth-broken-module")
    assert sorted(f.subject for f in broken) == [str(d / "Conv3d.py"), str(d / "UnslothDPOTrainer.py")]
    assert all(f.severity is Severity.ERROR and f.fix[0].kind == "quarantine" for f in broken)
    dpo = [f for f in broken if f.subject.endswith("UnslothDPOTrainer.py")][0]
    assert dict(dpo.evidence)["result"] == "syntax-error"  # the import verdict, not the header guess, once
    [unv] = by_id(diag.findings, "cache.unsloth-unverified")
    assert unv.severity is Severity.INFO and "tune_doctor_missing_dependency_xyz" in dict(unv.evidence)["reason"]
    [summary] = [f for f in diag.findings if f.id == "cache.root" and f.subject == str(d)]
    assert "1 of 4 import cleanly" in summary.title


def test_failed_preload_still_catches_syntax_errors(tmp_path: Path) -> None:
    """unsloth itself cannot import (a broken env): truncated modules are still proven broken by compiling them."""
    d = tmp_path / "c"
    good = write(d, "UnslothSFTTrainer.py", module("UnslothSFTTrainer"))
    syn = write(d, "Conv3d.py", "def forward(self:\n")
    res, note = verify_modules(str(d), [good, syn], timeout=20, preload=["tune_doctor_missing_preload_xyz"])
    assert [r.status for r in res] == ["not-run", "syntax-error"], res
    assert res[1].where == "Conv3d.py:1" and "tune_doctor_missing_preload_xyz" in note


def test_doctor_check_catches_truncated_modules_by_compiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`doctor check` (mode check) compiles unsloth's modules, never runs them; verdicts are cached by size+mtime."""
    from doctor.cache.diagnose import syntax_checked

    monkeypatch.setenv("DOCTOR_CACHE_DIR", str(tmp_path / "dc"))
    d = tmp_path / "c"
    good = write(d, "UnslothSFTTrainer.py", module("UnslothSFTTrainer"))
    bad = write(d, "Conv3d.py", "import os\nos.system('echo never run')\ndef forward(self:\n")
    first = syntax_checked([good, bad])
    assert [(r.path, r.status) for r in first] == [(bad, "syntax-error")]
    assert (tmp_path / "dc" / "syntax" / "unsloth.json").is_file()
    again = syntax_checked([good, bad], budget=0.0)  # no time to compile: the cached verdicts answer
    assert [(r.path, r.status, r.where) for r in again] == [(bad, "syntax-error", "Conv3d.py:3")]
    Path(bad).write_text("x = 1\n")  # rewritten (size changes): checked again
    assert syntax_checked([good, bad]) == []


def test_missing_stack_package_is_unverified_not_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A training-stack package that is not installed, or an installed package's missing dependency: install it."""
    d = tmp_path / "c"
    stack = write(d, "Linear4bit.py", "import tune_doctor_stack_pkg_xyz\n")
    lib = write(d, "moe_utils.py", f"import {installed_lib_missing_a_dependency(tmp_path / 'site', monkeypatch)}\n")
    sub = write(d, "Conv1d.py", "import json.tune_doctor_no_such_submodule\n")  # json is installed: broken
    res, note = verify_modules(str(d), [stack, lib, sub], timeout=20, stack=("tune_doctor_stack_pkg_xyz",))
    assert [r.status for r in res] == ["missing-dependency", "missing-dependency", "import-error"], res
    assert res[0].dependency == "tune_doctor_stack_pkg_xyz" and not res[0].broken
    assert "install tune_doctor_stack_pkg_xyz" in res[0].error
    assert res[1].dependency == "tune_doctor_missing_dependency_xyz" and not res[1].broken  # the env lacks it
    assert res[2].broken and note == ""


def test_the_default_stack_names_import_names(tmp_path: Path) -> None:
    """unsloth_zoo, not unsloth-zoo: the child compares what a ModuleNotFoundError names."""
    from doctor.cache.verify import STACK_IMPORTS

    assert {"torch", "transformers", "trl", "peft", "accelerate", "unsloth", "unsloth_zoo", "flash_attn"} <= set(STACK_IMPORTS)


def test_modules_the_preload_rewrites_are_judged_as_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`import unsloth` regenerates broken and stale trainer modules: each is reported rewritten, with its verdict before."""
    work = tmp_path / "work"
    d = work / "unsloth_compiled_cache"
    grpo_full = module("UnslothGRPOTrainer", body="def f(x):\n    return x + 1\n")
    grpo = write(d, "UnslothGRPOTrainer.py", grpo_full[: grpo_full.index("x + 1") + 3])  # truncated mid-statement
    dpo = write(d, "UnslothDPOTrainer.py", module("UnslothDPOTrainer", unsloth="2025.1.1"))  # stale, compiles
    sft_text = module("UnslothSFTTrainer")
    sft = write(d, "UnslothSFTTrainer.py", sft_text)  # written again with the same bytes: not a rewrite
    orpo = write(d, "UnslothORPOTrainer.py", module("UnslothORPOTrainer"))  # fine, rewritten into a broken file
    kto_text = module("UnslothKTOTrainer", body="A = 1\n")
    kto = write(d, "UnslothKTOTrainer.py", kto_text[: kto_text.index("class ")])  # incomplete, left alone
    os.utime(sft, ns=(1, 1))  # so the identical rewrite changes the mtime
    fake_unsloth(tmp_path / "site", monkeypatch,
                 f"rewrite('UnslothGRPOTrainer.py', {grpo_full!r})\nrewrite('UnslothDPOTrainer.py', {module('UnslothDPOTrainer')!r})\n"
                 f"rewrite('UnslothSFTTrainer.py', {sft_text!r})\nrewrite('UnslothORPOTrainer.py', 'def broken(:\\n')\n")
    res, note = verify_modules(str(d), [grpo, dpo, sft, orpo, kto], cwd=str(work), timeout=20, preload=["unsloth"])
    assert note == ""
    by = {Path(r.path).stem: r for r in res}
    assert Path(grpo).read_text() == grpo_full  # the preload really did regenerate it
    g = by["UnslothGRPOTrainer"]
    assert (g.status, g.before, g.rewritten, g.broken) == ("rewritten", "syntax-error", True, False), g
    assert "SyntaxError" in g.error and "import unsloth" in g.error and g.where.startswith("UnslothGRPOTrainer.py:")
    assert (by["UnslothDPOTrainer"].status, by["UnslothDPOTrainer"].before) == ("rewritten", "ok")
    assert "stale" in by["UnslothDPOTrainer"].error
    assert (by["UnslothSFTTrainer"].status, by["UnslothSFTTrainer"].before) == ("ok", "")
    o = by["UnslothORPOTrainer"]
    assert (o.status, o.before, o.broken) == ("syntax-error", "ok", True)  # broken now: quarantine it
    assert (by["UnslothKTOTrainer"].status, by["UnslothKTOTrainer"].before) == ("incomplete", "")


def test_rewrites_count_even_when_the_preload_then_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preload rewrites a module and then raises: the rewrite is still reported; the compile verdicts stand."""
    work = tmp_path / "work"
    d = work / "unsloth_compiled_cache"
    full = module("UnslothGRPOTrainer")
    grpo = write(d, "UnslothGRPOTrainer.py", full[:-12])  # "class Unsl" ... cut mid-statement
    kto_text = module("UnslothKTOTrainer", body="A = 1\n")
    kto = write(d, "UnslothKTOTrainer.py", kto_text[: kto_text.index("class ")])  # cut at a statement boundary
    good = write(d, "Conv3d.py", "x = 1\n")
    fake_unsloth(tmp_path / "site", monkeypatch,
                 f"rewrite('UnslothGRPOTrainer.py', {full!r})\nraise ImportError('unsloth_zoo is too old')\n")
    res, note = verify_modules(str(d), [grpo, kto, good], cwd=str(work), timeout=20, preload=["unsloth"])
    assert "unsloth_zoo is too old" in note
    assert [(r.status, r.before) for r in res] == [("rewritten", "syntax-error"), ("incomplete", ""), ("not-run", "")]
    assert res[1].broken and "UnslothKTOTrainer" in res[1].error


def test_verify_reports_what_the_preload_rewrote(caches, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A truncated trainer module that `import unsloth` regenerates during verify: a warning saying it was broken,
    never "every module clean", and no quarantine of the new file."""
    from doctor.cache.diagnose import diagnose

    d = caches.unsloth
    full = module("UnslothGRPOTrainer", body="def f(x):\n    return x + 1\n")
    write(d, "UnslothGRPOTrainer.py", full[: full.index("x + 1") + 3])
    write(d, "UnslothSFTTrainer.py", module("UnslothSFTTrainer"))
    fake_unsloth(caches.cwd.parent / "site", monkeypatch, f"rewrite('UnslothGRPOTrainer.py', {full!r})\n")
    diag = diagnose(make_facts(caches.cwd), ("unsloth",), mode="verify", import_timeout=20, preload=["unsloth"])
    [rw] = by_id(diag.findings, "cache.unsloth-rewritten")
    assert rw.severity is Severity.WARN and rw.subject == str(d / "UnslothGRPOTrainer.py") and not rw.fix
    assert "syntax error" in rw.title and dict(rw.evidence)["found"] == "syntax-error"
    assert by_id(diag.findings, "cache.unsloth-broken-module") == []
    [summary] = [f for f in diag.findings if f.id == "cache.root" and f.subject == str(d)]
    assert "1 of 2 import cleanly" in summary.title
