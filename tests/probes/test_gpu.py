"""On a real GPU: the core probes pass and nothing crashes the doctor (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def test_core_probes_pass_on_this_gpu(tmp_path: Path) -> None:
    """CUDA context, matmul in every dtype the GPU has, SDPA math: pass; every verdict is a known status."""
    from doctor.cache.own import DoctorCache
    from doctor.inventory import gather
    from doctor.probes.session import run_probes

    facts = gather()
    run = run_probes(facts, only=["cuda", "matmul", "sdpa", "dispatch"], cache=DoctorCache(tmp_path))
    verdicts = {r.id: r for r in run.results}
    for pid in ("cuda.context", "matmul.fp32", "matmul.fp16", "sdpa.math", "dispatch.attention"):
        assert verdicts[pid].status == "pass", verdicts[pid]
    assert verdicts["dispatch.attention"].backend != "torch"
