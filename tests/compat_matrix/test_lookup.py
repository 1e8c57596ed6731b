"""Lookups over the real matrix: exact where the facts are exact, None where the matrix does not know."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix

GARBAGE = ["abc", "", None, "2.x"]


def test_torch_requirement_of_xformers(matrix: Matrix) -> None:
    req = lookup.torch_requirement_of_xformers(matrix, "0.0.27")
    assert req is not None and req.spec == SpecifierSet("==2.3.1") and req.version == "0.0.27"
    assert lookup.torch_requirement_of_xformers(matrix, Version("0.0.28.post3")).spec == SpecifierSet("==2.5.1")  # type: ignore[union-attr]
    assert lookup.torch_requirement_of_xformers(matrix, "0.0.99") is None
    # exact Version equality: a local build is not the index wheel
    assert lookup.torch_requirement_of_xformers(matrix, "0.0.29+git1234") is None
    for g in GARBAGE:
        assert lookup.torch_requirement_of_xformers(matrix, g) is None


@pytest.mark.parametrize(
    "torch, triton",
    [("2.11.0+cu130", "==3.6.0"), ("2.3.1+cu121.post3", "==2.3.1"), ("2.12.0.dev20260101+cu130", "==3.7.0"), ("2.4.0", "==3.0.0")],
)
def test_triton_pin_matches_on_release(matrix: Matrix, torch: str, triton: str) -> None:
    pin = lookup.triton_pin_for_torch(matrix, torch)
    assert pin is not None and pin.spec == SpecifierSet(triton)


def test_triton_pin_unknown(matrix: Matrix) -> None:
    assert lookup.triton_pin_for_torch(matrix, "2.99.0") is None
    assert lookup.triton_pin_for_torch(matrix, "2.6.1") is None
    for g in GARBAGE:
        assert lookup.triton_pin_for_torch(matrix, g) is None


def test_driver_floor(matrix: Matrix) -> None:
    f = lookup.driver_floor(matrix, "12.8")
    assert f is not None and f.cuda == "12.8" and f.toolkit == Version("570.26")
    assert lookup.driver_floor(matrix, "12.8.1") == f
    # 12.7 is not in the table: borrowing 12.6's floor would be a guess
    assert lookup.driver_floor(matrix, "12.7") is None
    assert lookup.driver_floor(matrix, "11.7") is None
    for g in GARBAGE + ["cu128", "12"]:
        assert lookup.driver_floor(matrix, g) is None


def test_archs_for(matrix: Matrix) -> None:
    a = lookup.archs_for(matrix, "2.11.0+cu130", "cu130")
    assert a is not None and a.variant == "cu130" and (12, 0) in a.ptx
    assert lookup.archs_for(matrix, "2.11.0+cu130", "13.0") == a  # a CUDA version works too
    assert lookup.archs_for(matrix, "2.10.0", "cu128").archs[0] == (7, 0)  # type: ignore[union-attr]
    assert lookup.archs_for(matrix, "2.11.0", "cu128").archs[0] == (7, 5)  # type: ignore[union-attr]
    assert lookup.archs_for(matrix, "2.7.1", "cu128").archs[0] == (7, 5)  # type: ignore[union-attr]
    assert lookup.archs_for(matrix, "2.12.0.dev20260101", "cu130") is not None
    assert lookup.archs_for(matrix, "2.11.0", "cu999") is None
    assert lookup.archs_for(matrix, "2.15.0", "cu126") is None  # 2.15 removes cu126
    for g in GARBAGE:
        assert lookup.archs_for(matrix, g, "cu130") is None
        assert lookup.archs_for(matrix, "2.11.0", g) is None


def test_xformers_for_torch(matrix: Matrix) -> None:
    assert lookup.xformers_for_torch(matrix, "2.5.1+cu124") == ["0.0.29.post1", "0.0.29", "0.0.28.post3"]
    assert lookup.xformers_for_torch(matrix, "2.0.1") == ["0.0.22", "0.0.21", "0.0.20"]
    assert lookup.xformers_for_torch(matrix, "2.10.0") == ["0.0.35", "0.0.34"]
    # metadata only: 0.0.35 says torch>=2.10 (its binary is not built for 2.11: the probes tell)
    assert lookup.xformers_for_torch(matrix, "2.11.0+cu130") == ["0.0.35"]
    assert lookup.xformers_for_torch(matrix, "1.13.1") == []
    for g in GARBAGE:
        assert lookup.xformers_for_torch(matrix, g) == []


def test_bnb_requirement(matrix: Matrix) -> None:
    assert lookup.bnb_requirement(matrix, "0.45.3").spec == SpecifierSet("<3,>=2.0")  # type: ignore[union-attr]
    assert lookup.bnb_requirement(matrix, "0.45.5").spec == SpecifierSet("<3,>=2.0")  # type: ignore[union-attr]
    assert lookup.bnb_requirement(matrix, "0.47.0").spec == SpecifierSet("<3,>=2.2")  # type: ignore[union-attr]
    assert lookup.bnb_requirement(matrix, "0.49.1").python == SpecifierSet(">=3.10")  # type: ignore[union-attr]
    assert lookup.bnb_requirement(matrix, "0.48.1+cu128") is not None  # a local label keeps the release line
    assert lookup.bnb_requirement(matrix, "0.44.1") is None
    assert lookup.bnb_requirement(matrix, "0.48.3") is None  # past the recorded range: unknown, not guessed
    for g in GARBAGE:
        assert lookup.bnb_requirement(matrix, g) is None


def test_cc_for_gpu_name_unknown(matrix: Matrix) -> None:
    for name in ["", "   ", None, "Some Other Accelerator", "NVIDIA GeForce GTX 1080 Ti"]:
        assert lookup.cc_for_gpu_name(matrix, name) is None


def test_feature(matrix: Matrix) -> None:
    assert lookup.feature(matrix, "bf16").min_cc == (8, 0)
    with pytest.raises(KeyError, match="unknown GPU feature 'nope'"):
        lookup.feature(matrix, "nope")


@pytest.mark.parametrize(
    "name, cc, cuda, ok",
    [("bf16", (8, 0), None, True), ("bf16", (7, 5), None, False), ("bf16", (12, 0), None, True),
     ("flash_attn_3", (9, 0), "12.8", True), ("flash_attn_3", (9, 0), "12.2", False), ("flash_attn_3", (10, 0), None, False),
     ("flash_attn_3", (8, 9), None, False), ("inductor", (6, 1), None, False), ("inductor", (7, 0), None, True),
     ("bitsandbytes_int8", (7, 0), None, False), ("bitsandbytes_4bit", (6, 1), None, True)],
)
def test_feature_supported(matrix: Matrix, name: str, cc: tuple, cuda: str, ok: bool) -> None:
    assert lookup.feature_supported(matrix, name, cc, cuda) is ok


def test_defaults_and_variants(matrix: Matrix) -> None:
    assert lookup.default_cuda_for(matrix, "2.11.0+cu130") == "13.0"
    assert lookup.default_cuda_for(matrix, "2.99.0") is None
    assert lookup.cuda_variants_for(matrix, "2.9.1") == ("cu126", "cu128", "cu130")
    assert lookup.cuda_variants_for(matrix, "abc") == ()


def test_helpers_reexported() -> None:
    assert lookup.cuda_tag("13.0") == "cu130" and lookup.cuda_from_tag("cu128") == "12.8"
    assert lookup.cuda_from_int(1208) == "12.8" and lookup.parse_cc("8.6") == (8, 6)


def test_unsloth_cache_fallback_fact(matrix: Matrix) -> None:
    """unsloth_zoo 2025.3.8 is the first release that falls back to tempdir/<basename> (bisected, with a source)."""
    fact = matrix.unsloth_cache_fallback
    assert fact is not None and fact.since == "2025.3.8" and fact.source in matrix.sources
    assert fact.error_log_since == "2025.9.14" and fact.location_env_since == "2025.7.11" and fact.shared_across_users


@pytest.mark.parametrize("zoo, has", [("2025.3.8", True), ("2026.10.9", True), ("2025.3.8+local", True),
                                      ("2025.3.7", False), ("2025.3.1", False), ("2025.3.8.dev1", False)])
def test_unsloth_has_cache_fallback(matrix: Matrix, zoo: str, has: bool) -> None:
    assert lookup.unsloth_has_cache_fallback(matrix, zoo) is has


def test_unsloth_has_cache_fallback_unknown(matrix: Matrix) -> None:
    for g in GARBAGE:
        assert lookup.unsloth_has_cache_fallback(matrix, g) is None
    assert lookup.unsloth_has_cache_fallback(matrix._replace(unsloth_cache_fallback=None), "2026.1.1") is None
