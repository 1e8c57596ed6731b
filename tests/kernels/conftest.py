"""Kernel tests: on a machine without CUDA they run through Triton's CPU interpreter.

TRITON_INTERPRET must be set before any kernel module is imported (triton.jit reads it when a kernel is
defined), so it is set here, at collection, when no GPU is visible. The interpreter handles fp32 and fp16
(bf16 is stored as raw bits there) and runs fixed configurations (autotuning needs a GPU).
"""

from __future__ import annotations

import os

import pytest

try:
    import torch

    _CUDA = torch.cuda.is_available()
except ImportError:  # torch is a test dependency; without it the kernel tests are skipped below
    torch = None  # type: ignore[assignment]
    _CUDA = False

if not _CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

DEVICE = "cuda" if _CUDA else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:  # type: ignore[type-arg]
    """Without triton (not a Linux x86_64 wheel platform) the kernel tests cannot run: skip them, saying why."""
    if HAVE_TRITON and torch is not None:
        return
    skip = pytest.mark.skip(reason="triton (and torch) are needed for the kernel tests")
    for item in items:
        if "tests/kernels" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def device() -> str:
    """Where the kernels run: cuda on the GPU machine, cpu (Triton's interpreter) elsewhere."""
    return DEVICE
