"""Fixtures for the matrix tests: the real data, a writable copy of it, a clean loader cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from doctor.compat_matrix import files, loader
from doctor.compat_matrix.model import Matrix

REPO = Path(__file__).resolve().parents[2]
# CI checks out ../shared beside the clone; the facts file is optional (tests that need it skip).
FACTS_FILE = (REPO / ".." / "shared" / "facts" / "compat-facts.toml").resolve()


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no cached matrix and no DOCTOR_MATRIX_DIR from the outside."""
    monkeypatch.delenv(loader.ENV_VAR, raising=False)
    loader.clear_cache()
    yield
    loader.clear_cache()


@pytest.fixture
def matrix() -> Matrix:
    """The bundled matrix data, loaded and validated."""
    return loader.load_matrix()


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled data directory."""
    dst = tmp_path / "data"
    shutil.copytree(files.DEFAULT_DIR, dst)
    return dst


@pytest.fixture
def facts() -> dict:
    """compat-facts.toml parsed, or skip when ../shared is not beside the clone."""
    if not FACTS_FILE.is_file():
        pytest.skip(f"facts file not found: {FACTS_FILE}")
    from doctor.compat_matrix.files import toml

    tomllib = toml()

    return tomllib.loads(FACTS_FILE.read_text(encoding="utf-8"))
