"""Fixtures for the resolver tests: the local package index (recorded real metadata, empty payloads) and
real venvs holding recorded worlds. No network: everything is served from 127.0.0.1.

    def test_x(local_index, world):
        w = world("S1")                                   # fresh venv with scenario S1 installed
        rep = resolve(w.python, local_index.url("pypi"), ["xformers==0.0.27.post2"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from tests.resolve.index.server import LocalIndex
from tests.resolve.index.venvs import World, make_scenario, make_world


@pytest.fixture(scope="session")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    """The local index, started once per session (wheels built once into a session temp dir).

    `.url("pypi")` -> http://127.0.0.1:PORT/pypi/simple; `.url("cu121")`, `.url("cu124")` the PyTorch
    CUDA-family stand-ins; `.url(i, metadata=False)` without PEP 658 files; `.url(i, html_only=True)`
    PEP 503 HTML only; `.url("garbage")` answers nonsense. `.wheel(index, name, version)` is a built wheel.
    """
    idx = LocalIndex(tmp_path_factory.mktemp("local-index") / "wheels")
    idx.start()
    yield idx
    idx.stop()


WorldFactory = Callable[..., World]


@pytest.fixture
def world(local_index: LocalIndex, tmp_path: Path) -> WorldFactory:
    """Factory of fresh venvs: `world("S1")` a recorded scenario (data/scenarios.json), `world("S1", extra=[pin])`
    with more pins on top, `world(pins=["torch==2.4.0", "cu124:xformers==0.0.28.post3"])` any recorded pins;
    `with_pip=True` puts pip into the venv (slow: ensurepip)."""
    count = [0]

    def make(scenario: str = "", pins: Sequence[str] = (), extra: Sequence[str] = (), with_pip: bool = False) -> World:
        count[0] += 1
        root = tmp_path / f"venv{count[0]}"
        if scenario:
            return make_scenario(root, local_index, scenario, extra=[*pins, *extra], with_pip=with_pip)
        return make_world(root, local_index, [*pins, *extra], with_pip=with_pip)

    return make


@pytest.fixture(autouse=True)
def _own_doctor_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's pip reports (the planner's disk cache) and plan state live in its own directory."""
    monkeypatch.setenv("DOCTOR_CACHE_DIR", str(tmp_path / "doctor-cache"))
    monkeypatch.setenv("DOCTOR_STATE_DIR", str(tmp_path / "doctor-state"))
