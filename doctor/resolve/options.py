"""Where plans come from: the indexes, the interpreter, and the limits of one planning run."""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional, Tuple

from doctor.envvars import DOCTOR_INDEX_URL, DOCTOR_TORCH_INDEX_URL

# One planning run never asks pip's resolver more than this many times (each run is seconds with a cold cache).
MAX_RESOLVER_RUNS = 24
RESOLVER_TIMEOUT = 300.0  # seconds for one `pip install --dry-run --report` (cold metadata fetches)


class IndexConfig(NamedTuple):
    """The package indexes a plan may draw from.

    `index_url` None means pip's own configuration (PIP_INDEX_URL, pip.conf, else the default index).
    A PyTorch CUDA-family index is only ever used as `--index-url` for torch-family packages, never
    mixed into the default one with --extra-index-url (dependency confusion).
    """

    index_url: Optional[str] = None
    torch_index_url: Optional[str] = None  # base of the per-variant indexes (<base>/cu121); None: the matrix's
    pip_env: Tuple[Tuple[str, str], ...] = ()  # extra environment for the pip subprocess (tests: PIP_CONFIG_FILE)


class PlanOptions(NamedTuple):
    """What a planning run is asked to do."""

    python: Optional[str] = None  # the interpreter whose environment is planned for (--python); None: this one
    indexes: IndexConfig = IndexConfig()
    offline: bool = False  # plan from the embedded matrix only; marked "not verified against the index"
    torch: Optional[str] = None  # --torch VER: target another torch release on purpose
    cuda: Optional[str] = None  # --cuda VER: with --torch, that build's CUDA ("12.1"; "cpu")
    wanted: Tuple[str, ...] = ()  # `doctor install PKG...`: requirements the user asked for
    max_resolver_runs: int = MAX_RESOLVER_RUNS
    cache: bool = True  # reuse a report pip gave for the same question within the hour (doctor cache, "resolve")


def default_indexes(env: Optional[Mapping[str, str]] = None) -> IndexConfig:
    """IndexConfig from DOCTOR_INDEX_URL / DOCTOR_TORCH_INDEX_URL when set, else pip's configuration."""
    env = os.environ if env is None else env
    return IndexConfig(index_url=env.get(DOCTOR_INDEX_URL) or None, torch_index_url=env.get(DOCTOR_TORCH_INDEX_URL) or None)
