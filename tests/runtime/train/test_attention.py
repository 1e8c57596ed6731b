"""The packed-attention choice: real probes in child processes decide, a failing one is passed over with its reason."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from doctor.runtime.train.attention import CUDA_CANDIDATES, choose, probe_in_child


def test_cpu_uses_the_torch_reference_without_probing() -> None:
    def never(impl: str) -> Tuple[bool, str]:
        raise AssertionError("no probe on CPU")

    assert choose("auto", "cpu", True, prober=never)[0] == "sdpa"
    assert choose("sdpa", "cuda", True, prober=never) == ("sdpa", "set in the config")  # the reference: nothing to prove
    assert choose("auto", "cuda", False, prober=never)[0] == "sdpa"  # unpacked rows need no document mask


def test_the_first_candidate_that_passes_is_taken() -> None:
    asked: List[str] = []

    def prober(impl: str) -> Tuple[bool, str]:
        asked.append(impl)
        return impl == "flex_attention", "flash_attn is not installed"

    impl, why = choose("auto", "cuda", True, prober=prober)
    assert (impl, asked) == ("flex_attention", list(CUDA_CANDIDATES))
    assert "flash_attention_2: flash_attn is not installed" in why


def test_the_probe_passes_for_the_reference_in_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child's torch: one thread on the shared cores
    ok, detail = probe_in_child("sdpa", "cpu")
    assert ok, detail
    assert detail == "sdpa: packed output and gradients match each example alone (float32, cpu)"


def test_a_failing_probe_refuses_an_implementation_named_in_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """FlexAttention has no backward on CPU: a real failure in the child, reported in one line, never raised into
    the run; attention = "flex_attention" there is refused before the model loads (it was an internal error, exit 4,
    at the first step)."""
    from doctor.errors import DoctorError

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(DoctorError, match=r"attention = 'flex_attention': its probe failed on cpu \(.*backward") as e:
        choose("flex_attention", "cpu", True)
    assert "\n" not in str(e.value)
    assert choose("flash_attention_2", "cuda", False, prober=lambda impl: (True, "ok"))[1].endswith("probe passed")
