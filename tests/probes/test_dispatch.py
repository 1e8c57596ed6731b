"""The dispatcher: fastest backend that passed, never one that failed; overrides checked."""

from __future__ import annotations

import pytest

from doctor import dispatch
from doctor.errors import DoctorError
from doctor.verdicts import ProbeResult


def v(backend: str, status: str, t: float = None) -> ProbeResult:  # type: ignore[assignment]
    """An attention verdict."""
    return ProbeResult(id=f"x.{backend}", backend=backend, status=status, time_ms=t, op="attention", detail=f"{status} detail")


def test_fastest_passing_backend_wins() -> None:
    """Timings decide among passes; failures are never picked however fast."""
    c = dispatch.choose("attention", {"sdpa-flash": v("sdpa-flash", "pass", 2.0), "sdpa-cudnn": v("sdpa-cudnn", "pass", 1.5),
                                      "xformers": v("xformers", "error", 0.1), "sdpa-math": v("sdpa-math", "pass", 9.0)}, {})
    assert c.backend == "sdpa-cudnn" and "fastest" in c.reason


@pytest.mark.parametrize("bad", ["error", "crash", "timeout", "wrong-result", "skipped"])
def test_never_picks_a_backend_that_did_not_pass(bad: str) -> None:
    """Only a pass counts; with nothing passing, the torch reference."""
    c = dispatch.choose("attention", {"xformers": v("xformers", bad, 0.1), "sdpa-flash": v("sdpa-flash", bad, 0.2)}, {})
    assert c.backend == dispatch.REFERENCE


def test_preference_order_without_timings() -> None:
    """No timings: the first passing candidate in preference order."""
    c = dispatch.choose("attention", {"sdpa-math": v("sdpa-math", "pass"), "sdpa-efficient": v("sdpa-efficient", "pass")}, {})
    assert c.backend == "sdpa-efficient"


def test_override_to_a_passing_backend() -> None:
    """DOCTOR_BACKEND_ATTENTION forces a backend that passed (or was not probed)."""
    verdicts = {"sdpa-flash": v("sdpa-flash", "pass", 1.0), "sdpa-math": v("sdpa-math", "pass", 5.0)}
    c = dispatch.choose("attention", verdicts, {"DOCTOR_BACKEND_ATTENTION": "sdpa-math"})
    assert c.backend == "sdpa-math" and "forced" in c.reason


def test_override_to_a_failed_backend_is_a_clear_error() -> None:
    """Forcing a backend that failed its probe raises, naming the failure and the alternatives."""
    verdicts = {"xformers": v("xformers", "error"), "sdpa-flash": v("sdpa-flash", "pass", 1.0)}
    with pytest.raises(DoctorError, match=r"DOCTOR_BACKEND_ATTENTION=xformers: that backend failed its probe \(error.*sdpa-flash"):
        dispatch.choose("attention", verdicts, {"DOCTOR_BACKEND_ATTENTION": "xformers"})


def test_override_unknown_backend() -> None:
    """A typo in the override names the choices."""
    with pytest.raises(DoctorError, match="unknown backend"):
        dispatch.choose("attention", {}, {"DOCTOR_BACKEND_ATTENTION": "xformer"})


def test_table_covers_every_op() -> None:
    """Every op gets a choice; a kernel op none of whose backends was probed resolves to the reference."""
    t = {c.op: c for c in dispatch.table([v("sdpa-flash", "pass", 1.0)], {})}
    assert set(t) == set(dispatch.OPS) >= {"rms_norm", "rope", "swiglu", "geglu", "cross_entropy"}
    assert t["attention"].backend == "sdpa-flash"
    assert t["rms_norm"].backend == "torch" and "no backend passed" in t["rms_norm"].reason
    assert ("triton", "not probed", None) in t["rms_norm"].candidates


def test_every_catalogue_target_resolves() -> None:
    """Each declared probe names a real body function (imported without torch being imported)."""
    import importlib
    import sys

    from doctor.probes.catalogue import CATALOGUE

    for spec in CATALOGUE:
        module, _, name = spec.target.partition(":")
        assert module.startswith("doctor.probes.bodies."), spec.target
        assert callable(getattr(importlib.import_module(module), name)), spec.target
    assert len({s.id for s in CATALOGUE}) == len(CATALOGUE)
