"""Fixtures for the inventory tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An empty site-packages folder."""
    path = tmp_path / "site-packages"
    path.mkdir()
    return path

