"""One JSON schema for check, probe and cache: the same envelope first, then each command's own fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.exits import ExitCode
from tests.conftest import run_doctor

ENVELOPE = ["schema_version", "doctor_version", "command", "exit_code", "status", "summary", "findings"]


@pytest.mark.parametrize("args,command,own", [
    (["check", "--no-probes"], "check", {"facts", "rules_run", "probes", "dispatch", "probe_note", "matrix_version"}),
    (["probe"], "probe", {"fingerprint", "wall_s", "ran", "cached", "results", "dispatch"}),
    (["cache", "status"], "cache status", {"which", "roots", "verify_note", "limits", "applied", "persist"}),
    (["cache", "clear", "--dry-run", "--which", "triton"], "cache clear", {"which", "plan", "dry_run", "applied"}),
])
def test_every_document_starts_with_the_envelope(tmp_path: Path, args, command, own) -> None:  # type: ignore[no-untyped-def]
    """Same first keys in the same order, the exit code of the process, its status word, then the command's fields."""
    e = {"DOCTOR_GPUS": "none", "DOCTOR_CACHE_DIR": str(tmp_path / "doc"), "TRITON_CACHE_DIR": str(tmp_path / "tri"),
         "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind"), "UNSLOTH_COMPILE_LOCATION": str(tmp_path / "uc")}
    proc = run_doctor(*args, "--json", env=e)
    doc = json.loads(proc.stdout)
    assert list(doc)[: len(ENVELOPE)] == ENVELOPE
    assert doc["schema_version"] == 2 and doc["command"] == command
    assert doc["exit_code"] == proc.returncode and doc["status"] == ExitCode(proc.returncode).status
    assert set(doc["summary"]) == {"ok", "info", "warn", "error"}
    assert sum(doc["summary"].values()) == len(doc["findings"])
    assert own <= set(doc)


def test_probe_dispatch_lists_every_candidate() -> None:
    """probe --json keeps the per-op candidates (backend, probe status, time) that check's dispatch leaves out."""
    doc = json.loads(run_doctor("probe", "--json", env={"DOCTOR_GPUS": "none"}).stdout)
    [att] = [d for d in doc["dispatch"] if d["op"] == "attention"]
    assert att["backend"] == "torch" and {"backend", "status", "time_ms"} == set(att["candidates"][0])
    assert all(r["status"] == "skipped" for r in doc["results"])  # no GPU: nothing ran
