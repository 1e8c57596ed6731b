"""`doctor check --fix` and `--undo` end to end: the CLI plans against a local index, applies, re-checks, undoes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_doctor


@pytest.mark.slow
def test_fix_applies_the_plan_and_rechecks_in_a_real_venv(world, local_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """S4 (unsloth 2025.7.4 wants unsloth_zoo>=2025.7.5; zoo 2025.7.4 installed): `doctor check --python VENV --fix --yes`
    plans against the local index, applies the one verified step (the zoo, no protobuf downgrade), and the
    re-check in the same JSON envelope is clean of the skew; `--undo` puts 2025.7.4 back."""
    w = world("S4")
    env = {"DOCTOR_GPUS": "none", "DOCTOR_INDEX_URL": local_index.url("pypi"), "DOCTOR_CACHE_DIR": str(tmp_path / "dc"),
           "DOCTOR_STATE_DIR": str(tmp_path / "state"),
           "PIP_CONFIG_FILE": os.devnull, "UNSLOTH_COMPILE_LOCATION": str(tmp_path / "ucache")}
    proc = run_doctor("check", "--python", str(w.python), "--json", "--fix", "--yes", "--no-probes", env=env, timeout=300)
    doc = json.loads(proc.stdout)
    assert doc["plan"]["status"] == "verified", proc.stderr[-2000:]
    assert doc["applied"] and Path(doc["state_file"]).is_relative_to(tmp_path / "state")
    assert [(c["name"], c["after"]) for c in doc["plan"]["changes"]] == [("unsloth-zoo", "2025.7.5")]
    assert any(f["id"] == "unsloth.zoo-skew" for f in doc["findings"])  # the check before the plan
    assert not any(f["id"] == "unsloth.zoo-skew" for f in doc["after"]), proc.stderr[-2000:]  # the re-check
    assert doc["defect"] is None
    assert w.versions()["unsloth-zoo"] == "2025.7.5" and w.versions()["protobuf"] == "5.29.5"
    assert proc.returncode == doc["exit_code"] != 6
    undo = run_doctor("check", "--python", str(w.python), "--undo", "--yes", "--no-probes", env=env, timeout=300)
    assert undo.returncode in (0, 1, 2), undo.stderr[-2000:]
    assert w.versions()["unsloth-zoo"] == "2025.7.4"
