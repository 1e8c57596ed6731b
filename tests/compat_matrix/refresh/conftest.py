"""Fixtures for the refresh tests: a started local index, and an isolated doctor cache (where the overlay lives)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from doctor.compat_matrix import loader
from doctor.envvars import DOCTOR_CACHE_DIR
from tests.compat_matrix.refresh.server import Index


@pytest.fixture
def index() -> Iterator[Index]:
    """The recorded index on 127.0.0.1, PEP 658 and Range on."""
    idx = Index().start()
    yield idx
    idx.stop()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$DOCTOR_CACHE_DIR in tmp_path: the overlay is written and read there."""
    d = tmp_path / "doctor-cache"
    monkeypatch.setenv(DOCTOR_CACHE_DIR, str(d))
    loader.clear_cache()
    return d
