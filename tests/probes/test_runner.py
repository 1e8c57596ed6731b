"""Planted faults: every way a probe can fail becomes a verdict, and the doctor goes on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict

import pytest

from doctor.cache.own import DoctorCache
from doctor.probes.session import run_probes
from doctor.probes.spec import ProbeSpec
from tests.conftest import REPO

P = "tests.probes.planted"


def spec(id: str, fn: str, group: str = "g", timeout: float = 20, **kw) -> ProbeSpec:  # type: ignore[no-untyped-def]
    """A CPU probe running one planted body."""
    return ProbeSpec(id=id, title=fn, target=f"{P}:{fn}", needs_torch=False, needs_cuda=False, group=group,
                     timeout=timeout, **kw)


@pytest.fixture
def facts():  # type: ignore[no-untyped-def]
    """Facts of this machine with no GPU (simulated)."""
    from doctor.inventory import gather

    return gather(environ={"DOCTOR_GPUS": "none", "PATH": os.environ.get("PATH", "")})


@pytest.fixture
def env() -> Dict[str, str]:
    """Child environment: the repo importable so the planted bodies resolve."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(facts, env, tmp_path, specs, **kw):  # type: ignore[no-untyped-def]
    """run_probes over planted specs with a private cache."""
    return run_probes(facts, catalogue=specs, environ=env, cache=DoctorCache(tmp_path / "cache"), **kw)


def by_id(r) -> Dict[str, object]:  # type: ignore[no-untyped-def]
    """Verdicts by id."""
    return {x.id: x for x in r.results}


def test_every_planted_fault_becomes_its_verdict_and_the_group_goes_on(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One group, faults interleaved with healthy probes: each fault costs only its own probe."""
    specs = [spec("a.ok", "ok"), spec("b.segv", "segfault"), spec("c.ok", "noisy_ok"), spec("d.abort", "abort"),
             spec("e.exit", "hard_exit"), spec("f.raise", "raises"), spec("g.garbage", "garbage_channel"),
             spec("h.retgarbage", "garbage_return"), spec("i.numgarbage", "garbage_numbers"), spec("j.wrong", "wrong"),
             spec("k.nan", "nan"), spec("l.skip", "skip"), spec("m.hang", "hang", timeout=2), spec("n.ok", "ok")]
    t0 = time.monotonic()
    res = by_id(run(facts, env, tmp_path, specs))
    elapsed = time.monotonic() - t0
    status = {k: v.status for k, v in res.items()}
    assert status == {
        "a.ok": "pass", "b.segv": "crash", "c.ok": "pass", "d.abort": "crash", "e.exit": "crash", "f.raise": "error",
        "g.garbage": "error", "h.retgarbage": "error", "i.numgarbage": "error", "j.wrong": "wrong-result",
        "k.nan": "wrong-result", "l.skip": "skipped", "m.hang": "timeout", "n.ok": "pass",
    }
    assert "SIGSEGV" in res["b.segv"].detail and "illegal memory access" in res["b.segv"].detail
    assert "illegal memory access" in res["b.segv"].stderr_tail
    assert "SIGABRT" in res["d.abort"].detail
    assert "exit" in res["e.exit"].detail and "3" in res["e.exit"].detail
    assert "No operator found" in res["f.raise"].detail and "RuntimeError" in res["f.raise"].stderr_tail
    assert "garbage" in res["g.garbage"].detail
    assert res["j.wrong"].error == 0.5 and res["j.wrong"].tolerance == 1e-3
    assert res["l.skip"].detail == "cc 7.5 has no bf16"
    assert "2 s" in res["m.hang"].detail
    assert res["a.ok"].time_ms == 1.5
    assert elapsed < 60, elapsed
    print(f"\nplanted-fault run: {len(specs)} probes, {elapsed:.1f} s, verdicts {sorted(set(status.values()))}")


def test_a_result_event_with_garbage_numbers_is_an_error(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A result on the channel whose error/tolerance are a list and a dict: an error verdict, never a doctor crash."""
    res = by_id(run(facts, env, tmp_path, [spec("o.forged", "forged_result", params={"id": "o.forged"}),
                                           spec("p.ok", "ok")]))
    assert res["o.forged"].status == "error" and "no error/tolerance to judge" in res["o.forged"].detail
    assert res["o.forged"].error is None and res["o.forged"].time_ms is None
    assert res["p.ok"].status == "pass"


def test_hang_is_killed_within_its_timeout(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A hung probe returns a timeout verdict shortly after its limit, never blocks the doctor."""
    t0 = time.monotonic()
    res = by_id(run(facts, env, tmp_path, [spec("hang", "hang", timeout=1.5)]))
    assert res["hang"].status == "timeout"
    assert time.monotonic() - t0 < 15


def test_cli_timeout_overrides_the_catalogue(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--timeout S applies to every probe."""
    res = by_id(run(facts, env, tmp_path, [spec("hang", "hang", timeout=500)], timeout=1.0))
    assert res["hang"].status == "timeout" and "1 s" in res["hang"].detail


def test_startup_failure_is_every_probe_error(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A body module that cannot be imported: error with the ImportError, not a crash of the doctor."""
    specs = [ProbeSpec(id="x.missing", title="", target="tests.probes.no_such_module:fn", needs_torch=False,
                       needs_cuda=False, group="g", timeout=10)]
    r = by_id(run(facts, env, tmp_path, specs))["x.missing"]
    assert r.status == "error" and "ModuleNotFoundError" in r.detail


def test_requirements_unmet_are_skipped_with_reason(facts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On a machine without CUDA (CI) the real catalogue is all skipped, each with its reason, with no child."""
    t0 = time.monotonic()
    r = run_probes(facts, cache=DoctorCache(tmp_path / "cache"))
    assert time.monotonic() - t0 < 5
    assert {x.status for x in r.results} == {"skipped"}
    reasons = {x.id: x.detail for x in r.results}
    assert reasons["xformers.mea"] in ("xformers is not installed", "torch is not installed", "torch is not a CUDA build")
    assert all(reasons.values())
    assert r.ran == ()


def test_verdicts_are_cached_by_fingerprint(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Second run reuses verdicts; --refresh re-runs; a changed fingerprint is a miss."""
    specs = [spec("a.ok", "ok"), spec("j.wrong", "wrong")]
    first = run(facts, env, tmp_path, specs)
    assert set(first.ran) == {"a.ok", "j.wrong"}
    second = run(facts, env, tmp_path, specs)
    assert second.ran == () and set(second.cached) == {"a.ok", "j.wrong"}
    assert [x.status for x in second.results] == ["pass", "wrong-result"]
    assert set(run(facts, env, tmp_path, specs, refresh=True).ran) == {"a.ok", "j.wrong"}
    other = facts._replace(hardware=facts.hardware._replace(driver_version="999.1"))
    assert set(run(other, env, tmp_path, specs).ran) == {"a.ok", "j.wrong"}


def test_corrupt_or_foreign_store_entry_is_a_miss(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Truncated JSON, a foreign document, a bad record: the probes run again."""
    specs = [spec("a.ok", "ok")]
    first = run(facts, env, tmp_path, specs)
    entry = DoctorCache(tmp_path / "cache").path("probes", first.fingerprint)
    good = entry.read_text()
    for bad in (good[: len(good) // 2], "[]", json.dumps({"format": 1, "kind": "probes", "key": first.fingerprint,
                                                           "data": {"fingerprint": first.fingerprint, "results": [{"id": 1}]}})):
        entry.write_text(bad)
        assert run(facts, env, tmp_path, specs).ran == ("a.ok",)


def test_fingerprint_changes_with_every_input(facts) -> None:  # type: ignore[no-untyped-def]
    """Package versions, builds, driver, GPUs, Python, selected GPU: each changes the fingerprint."""
    from doctor.facts import GPU, Distribution, TorchBuild
    from doctor.probes.fingerprint import fingerprint

    base = fingerprint(facts)
    variants = [
        facts._replace(distributions={**facts.distributions, "xformers": Distribution("xformers", "0.0.35")}),
        facts._replace(torch=TorchBuild("2.11.0+cu130", "13.0")),
        facts._replace(hardware=facts.hardware._replace(driver_version="580.159.04")),
        facts._replace(hardware=facts.hardware._replace(gpus=(GPU(0, "NVIDIA H100", (9, 0)),))),
        facts._replace(python=facts.python._replace(version="3.12.3")),
    ]
    fps = {fingerprint(v) for v in variants} | {fingerprint(facts, gpu="1"), fingerprint(facts, catalogue_version=99)}
    assert base not in fps and len(fps) == len(variants) + 2


def test_groups_run_side_by_side(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Three groups of a 1 s probe with jobs=3 take about 1 s, not 3."""
    specs = [spec(f"s{i}.sleep", "sleepy", group=f"g{i}") for i in range(3)]
    t0 = time.monotonic()
    res = run(facts, env, tmp_path, specs, jobs=3)
    assert {r.status for r in res.results} == {"pass"}
    assert time.monotonic() - t0 < 2.8


def test_cuda_error_moves_the_rest_to_a_fresh_process(facts, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After a CUDA error the context may be poisoned: later probes of the group run in a new child."""
    specs = [spec("a.pid", "whoami"), spec("b.cuda", "cuda_error"), spec("c.pid", "whoami")]
    res = by_id(run(facts, env, tmp_path, specs))
    assert res["b.cuda"].status == "error" and "illegal memory access" in res["b.cuda"].detail
    assert res["a.pid"].status == res["c.pid"].status == "pass"
    assert res["a.pid"].detail != res["c.pid"].detail  # different pids


def test_simulated_hardware_never_runs_gpu_probes(tmp_path: Path) -> None:
    """DOCTOR_GPUS simulates a GPU for the matrix; probes need the real one, so they are skipped, not failed."""
    from doctor.facts import TorchBuild
    from doctor.inventory import gather
    from doctor.probes.session import probes_apply

    facts = gather(environ={"DOCTOR_GPUS": "NVIDIA H100 80GB HBM3@9.0", "DOCTOR_DRIVER_VERSION": "580.159.04"})
    facts = facts._replace(torch=TorchBuild("2.11.0+cu130", "13.0"))
    assert not probes_apply(facts)
    r = run_probes(facts, only=["cuda", "sdpa"], cache=DoctorCache(tmp_path / "c"))
    assert {x.status for x in r.results} == {"skipped"} and r.ran == ()
    assert all("simulated" in x.detail or "not installed" in x.detail for x in r.results)


def test_the_interpreter_is_a_parameter_and_a_missing_one_is_a_verdict(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """run_group takes the interpreter to run probes with; one that cannot start fails each probe, not the doctor."""
    import sys

    from doctor.probes.runner import run_group

    specs = [spec("a.ok", "ok"), spec("b.ok", "whoami")]
    assert [r.status for r in run_group(specs, env, cuda=False, python=sys.executable)] == ["pass", "pass"]
    res = run_group(specs, env, cuda=False, python=str(tmp_path / "no-such-python"))
    assert [(r.id, r.status) for r in res] == [("a.ok", "error"), ("b.ok", "error")]
    assert all("cannot start the probe process" in r.detail for r in res)
