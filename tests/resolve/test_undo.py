"""`doctor check --undo`: the saved "before" put back with real pip, byte for byte, however far the plan got."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from doctor.actions import PipInstall, PipUninstall
from doctor.errors import DoctorError
from doctor.resolve.plan import Change
from doctor.resolve.undo import Record, Saved, StepRecord, Store, last_record, undo_plan
from tests.resolve.test_apply import (World, _clean_pip_env, facts_of, indexes, installed, metadata_bytes,  # noqa: F401
                                      store_for, the_plan, verified, world, xformers_cuda)

pytestmark = pytest.mark.slow


def _undo(w: World):  # type: ignore[no-untyped-def]
    """Compute and apply the undo of the last record, as `doctor check --undo --yes` does."""
    from doctor.fix import apply_undo

    py, idx = w
    facts = facts_of(py)
    store = Store(facts.python.prefix, facts.python.executable)
    rec = last_record(store)
    assert rec is not None
    u = undo_plan(rec, facts, idx.torch_base, idx.pypi)
    lines: list = []
    applied = apply_undo(u, store, idx.config(), python=py, prefix=facts.python.prefix, echo=lines.append)
    assert applied.ok, lines
    return u, store


def test_undo_puts_back_a_whole_plan_byte_for_byte(world: World) -> None:
    """Removed beta comes back, alpha goes back to 1.0, the added gamma goes, and xformers (same version
    string, rebuilt from the family index) is the default index's build again: the same bytes as before."""
    from doctor.fix import apply_plan

    py, idx = world
    before = metadata_bytes(py)
    applied = apply_plan(the_plan(world), facts_of(py), store_for(py), "check --fix", idx.config(), python=py,
                         echo=lambda m: None)
    assert applied.ok and xformers_cuda(py) == 1201
    u, store = _undo(world)
    assert {a.kind for a in u.actions} == {"pip-uninstall", "pip-install"}
    assert any(isinstance(a, PipInstall) and a.force_reinstall and a.requirements == ("xformers===0.0.28",) for a in u.actions)
    assert metadata_bytes(py) == before and xformers_cuda(py) == 1208
    assert store.records()[-1].status == "undone" and last_record(store) is None


def test_undo_after_a_plan_that_failed_halfway(world: World) -> None:
    """torch moved (step 1), the 2nd step asked for what the index lacks, the 3rd never ran: the undo puts torch
    back with its exact local label from its family's index (inferred from +cu121) and leaves the rest alone."""
    from doctor.fix import apply_plan

    py, idx = world
    before = metadata_bytes(py)
    plan = verified([Change("torch", "2.4.0+cu121", "2.5.0+cu121", idx.torch()), Change("delta", None, "9.9", idx.pypi),
                     Change("beta", "1.0", None)],
                    [PipInstall(("torch==2.5.0+cu121",), index_url=idx.torch(), no_deps=True),
                     PipInstall(("delta==9.9",), index_url=idx.pypi, no_deps=True), PipUninstall(("beta",))], python=py)
    applied = apply_plan(plan, facts_of(py), store_for(py), "check --fix --torch 2.5.0", idx.config(), python=py,
                         echo=lambda m: None)
    assert [s.status for s in applied.steps] == ["applied", "failed", "not run"]
    assert installed(py)["torch"] == "2.5.0+cu121"
    u, _ = _undo(world)
    assert [a.command() for a in u.actions] == [f"pip install torch===2.4.0+cu121 --index-url {idx.torch()} --no-deps"]
    assert set(u.unchanged) == {"delta", "beta"}
    assert u.notes and "step 1 applied, step 2 failed, step 3 not run" in u.notes[0]
    assert metadata_bytes(py) == before and installed(py)["torch"] == "2.4.0+cu121"


def test_undo_plan_is_computed_from_what_is_installed_now(world: World) -> None:
    """Pure planning from a record: an exact pin (===, local label kept) from the index an earlier plan used, a
    direct URL as is, an uninstall of what the plan added; nothing for what is already as it was."""
    py, idx = world
    facts = facts_of(py)
    steps = (StepRecord("x", "pip ...", ("alpha", "beta", "zeta", "gamma"), "applied"),)
    rec = Record("r1", "check --fix", "applied",
                 (Saved("alpha", "0.5", index_url="http://elsewhere/simple"), Saved("beta", "1.0"),
                  Saved("zeta", "3.0", url="file:///wheels/zeta-3.0-py3-none-any.whl"), Saved("gamma", None),
                  Saved("torch", "2.3.1+cu118")),
                 (), steps)
    u = undo_plan(rec, facts, idx.torch_base, idx.pypi)
    assert u.unchanged == ("beta", "gamma")  # beta is 1.0 now; gamma is not installed
    assert sorted(a.command() or "" for a in u.actions) == [
        "pip install 'zeta @ file:///wheels/zeta-3.0-py3-none-any.whl' --no-deps",
        "pip install alpha===0.5 --index-url http://elsewhere/simple --no-deps",
        f"pip install torch===2.3.1+cu118 --index-url {idx.torch_base}/cu118 --no-deps"]
    assert [(c.name, c.before, c.after, c.kind) for c in u.changes] == [  # in the saved order
        ("alpha", "1.0", "0.5", "downgrade"), ("zeta", None, "3.0", "install"), ("torch", "2.4.0+cu121", "2.3.1+cu118", "downgrade")]


def test_a_corrupt_state_file_is_one_line(tmp_path: Path) -> None:
    """Garbage, a foreign format or a deep nest in the state file: DoctorError naming the file, never a traceback."""
    store = Store(str(tmp_path / "env"), root=str(tmp_path / "state"))
    os.makedirs(store.dir)
    for text in ("{not json", json.dumps({"format": 99, "records": []}), "[" * 100000,
                 json.dumps({"format": 1, "records": [{"id": 1}]})):
        Path(store.path).write_text(text)
        with pytest.raises(DoctorError) as err:
            last_record(store)
        assert store.path in str(err.value) and "\n" not in str(err.value)


def test_nothing_recorded_is_none(tmp_path: Path) -> None:
    """An environment no plan was applied to has no record (the CLI says so and exits 3)."""
    assert last_record(Store(str(tmp_path / "env"), root=str(tmp_path / "state"))) is None
