"""The bundled matrix data encodes every table of compat-facts.toml with the right values.

Two layers: spot checks with the values written out here (always run), and full comparisons against
../shared/facts/compat-facts.toml (skipped when that file is not beside the clone).
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.versions import parse_cc

# ---------------------------------------------------------------------------------------------
# spot checks (no facts file needed)
# ---------------------------------------------------------------------------------------------


def test_meta(matrix: Matrix) -> None:
    assert matrix.schema == 1
    assert matrix.data_version == "2026.11.22"
    for key in ("WHEEL", "JSON", "NV-T3", "NV-T2", "PT-CI", "SEEN", "NV-CC", "PT-DOCS"):
        assert matrix.sources[key].strip()


def test_every_row_names_a_known_source(matrix: Matrix) -> None:
    rows = [
        *matrix.xformers_torch, *matrix.torch_triton, *matrix.cuda_min_driver, *matrix.torch_cuda_archs,
        *matrix.gpu_features, *matrix.bitsandbytes_torch, *matrix.known_issues, *matrix.gpu_names,
        *(r for reqs in matrix.unsloth_requires.values() for r in reqs),
        *matrix.xformers_exceptions, *matrix.xformers_stable_abi, *matrix.optional_runtime,
        *matrix.bitsandbytes_wheels, *matrix.bitsandbytes_loaders, *matrix.bitsandbytes_archs,
    ]
    assert rows
    for row in rows:
        assert row.source in matrix.sources, row
    for floor in matrix.cuda_min_driver:
        assert floor.minor_compat_source == "NV-T2"


@pytest.mark.parametrize(
    "xformers, torch",
    [("0.0.20", "==2.0.1"), ("0.0.22.post7", "==2.1.0"), ("0.0.26.post1", "==2.3.0"), ("0.0.27", "==2.3.1"),
     ("0.0.27.post2", "==2.4.0"), ("0.0.29.post3", "==2.6.0"), ("0.0.32.post1", "==2.8.0"), ("0.0.34", "==2.10.0"),
     ("0.0.35", ">=2.10")],
)
def test_xformers_torch_rows(matrix: Matrix, xformers: str, torch: str) -> None:
    req = lookup.torch_requirement_of_xformers(matrix, xformers)
    assert req is not None and req.spec == SpecifierSet(torch) and req.source == "WHEEL"


def test_xformers_torch_notes_keep_the_comments(matrix: Matrix) -> None:
    assert "never uploaded" in lookup.torch_requirement_of_xformers(matrix, "0.0.26.post1").note  # type: ignore[union-attr]
    assert "never uploaded" in lookup.torch_requirement_of_xformers(matrix, "0.0.32.post1").note  # type: ignore[union-attr]
    assert "abi3" in lookup.torch_requirement_of_xformers(matrix, "0.0.31").note  # type: ignore[union-attr]
    loose = lookup.torch_requirement_of_xformers(matrix, "0.0.35")
    assert loose is not None and "2.10.0+cu128" in loose.note
    assert lookup.torch_requirement_of_xformers(matrix, "0.0.26") is None  # never uploaded
    assert lookup.torch_requirement_of_xformers(matrix, "0.0.32") is None
    assert len(matrix.xformers_torch) == 31


@pytest.mark.parametrize(
    "torch, triton",
    [("2.0.0", "==2.0.0"), ("2.2.1", "==2.2.0"), ("2.4.0", "==3.0.0"), ("2.7.1", "==3.3.1"), ("2.11.0", "==3.6.0"),
     ("2.12.1", "==3.7.1"), ("2.14.0", "~=3.8.0"), ("2.15.0", "~=3.9.0")],
)
def test_torch_triton_rows(matrix: Matrix, torch: str, triton: str) -> None:
    pin = lookup.triton_pin_for_torch(matrix, torch)
    assert pin is not None and pin.spec == SpecifierSet(triton)


def test_torch_triton_cp312_note(matrix: Matrix) -> None:
    for torch in ("2.2.1", "2.2.2", "2.3.0", "2.3.1"):
        assert "cp312" in lookup.triton_pin_for_torch(matrix, torch).note  # type: ignore[union-attr]
    assert lookup.triton_pin_for_torch(matrix, "2.2.0").note == ""  # type: ignore[union-attr]
    assert len(matrix.torch_triton) == 28


def test_torch_default_cuda_and_variants(matrix: Matrix) -> None:
    assert matrix.torch_default_cuda["2.0"] == "11.7"
    assert matrix.torch_default_cuda["2.7"] == "12.6"
    assert matrix.torch_default_cuda["2.11"] == "13.0"
    assert matrix.torch_default_cuda["2.15"] == "13.2"
    assert len(matrix.torch_default_cuda) == 16
    assert matrix.torch_cuda_variants["2.0"] == ("cu117", "cu118")
    assert matrix.torch_cuda_variants["2.8"] == ("cu126", "cu128", "cu129")
    assert matrix.torch_cuda_variants["2.14"] == ("cu126", "cu130", "cu132")
    assert len(matrix.torch_cuda_variants) == 15
    assert matrix.torch_cuda_variants_uncertain == frozenset({"2.11", "2.12", "2.13", "2.14"})
    assert "cu132 experimental" in matrix.notes["torch_cuda_variants.2.12"]
    assert matrix.torch_index_url == "https://download.pytorch.org/whl"


def test_cuda_driver_floors(matrix: Matrix) -> None:
    f = lookup.driver_floor(matrix, "11.8")
    assert f is not None and f.toolkit == Version("520.61.05") and f.minor_compat == Version("450.80.02")
    f = lookup.driver_floor(matrix, "12.8")
    assert f is not None and f.toolkit == Version("570.26") and f.minor_compat == Version("525.60.13")
    f = lookup.driver_floor(matrix, "13.0")
    assert f is not None and f.toolkit == Version("580.65.06") and f.minor_compat == Version("580")
    assert len(matrix.cuda_min_driver) == 13
    assert "PTX" in matrix.notes["cuda_min_driver.minor_compat_no_ptx"]
    assert "535" in matrix.notes["cuda_min_driver.installer_gap"]


def test_torch_cuda_archs(matrix: Matrix) -> None:
    a = lookup.archs_for(matrix, "2.0.1", "cu118")
    assert a is not None and (3, 7) in a.archs and a.ptx == ()
    a = lookup.archs_for(matrix, "2.10.0", "cu128")
    assert a is not None and (7, 0) in a.archs and (12, 0) in a.archs
    a = lookup.archs_for(matrix, "2.11.0+cu128", "cu128")
    assert a is not None and (7, 0) not in a.archs  # sm_70 dropped
    a = lookup.archs_for(matrix, "2.8.0", "cu129")
    assert a is not None and a.ptx == ((12, 0),) and (12, 0) in a.archs
    a = lookup.archs_for(matrix, "2.13.0", "cu130")
    assert a is not None and a.archs == ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)) and a.ptx == ((12, 0),)
    a = lookup.archs_for(matrix, "2.4.1", "cu124")
    assert a is not None and a.archs[0] == (5, 0)
    assert "sm_121" in matrix.notes["torch_cuda_archs.family_rules"]
    assert "cu126" in matrix.notes["torch_cuda_archs.cu126_removed"]


def test_gpu_features(matrix: Matrix) -> None:
    assert lookup.feature(matrix, "bf16").min_cc == (8, 0)
    fa3 = lookup.feature(matrix, "flash_attn_3")
    assert fa3.min_cc == (9, 0) and fa3.max_cc == (9, 0) and fa3.min_cuda == "12.3"
    assert "nvcc >= 12.8" in lookup.feature(matrix, "flash_attn_2").note
    assert lookup.feature(matrix, "triton_mma").min_cc == (8, 0)
    assert lookup.feature(matrix, "inductor").min_cc == (7, 0)
    assert lookup.feature(matrix, "bitsandbytes").min_cc == (6, 0)
    assert lookup.feature(matrix, "bitsandbytes_int8").min_cc == (7, 5)
    assert lookup.feature(matrix, "bitsandbytes_4bit").min_cc == (6, 0)
    assert lookup.feature(matrix, "bitsandbytes_optim_8bit").min_cc == (6, 0)


def test_bitsandbytes_torch(matrix: Matrix) -> None:
    r = lookup.bnb_requirement(matrix, "0.45.1")
    assert r is not None and r.spec == SpecifierSet("~=2.0") and r.python is None
    r = lookup.bnb_requirement(matrix, "0.46.0")
    assert r is not None and r.spec == SpecifierSet(">=2.2,<3") and r.python == SpecifierSet(">=3.9")
    r = lookup.bnb_requirement(matrix, "0.50.2")
    assert r is not None and r.spec == SpecifierSet(">=2.4,<3") and r.python == SpecifierSet(">=3.10")
    assert "13.2" in r.note
    assert len(matrix.bitsandbytes_torch) == 7


def test_known_issue_dtype_layout(matrix: Matrix) -> None:
    (issue,) = [i for i in matrix.known_issues if i.id == "xformers.dtype-layout"]
    assert issue.package == "xformers"
    affected = [v for v in ("0.0.26.post1", "0.0.27", "0.0.27.post1", "0.0.27.post2", "0.0.28") if issue.affected.contains(v)]
    assert affected == ["0.0.27", "0.0.27.post1"]
    assert issue.fix == ("xformers==0.0.27.post2", "xformers==0.0.26.post1")
    assert issue.signature == "Multiple dispatch failed for 'torch._ops.aten.to.dtype_layout'"
    assert "3610a54d" in issue.note and "--no-deps" in issue.note
    assert "__torch_dispatch__" in issue.cause
    assert issue.reports == ("unsloth#741", "unsloth#1126")
    assert dict(issue.requires) == {}


def test_pairs(matrix: Matrix) -> None:
    p = matrix.torch_xformers_pairs
    assert p["2.3"] == "0.0.26.post1"
    assert p["2.5.1"] == "0.0.29.post1"
    assert p["2.10"] == "0.0.34"
    assert lookup.known_good_xformers(matrix, "2.3.1+cu121") == "0.0.26.post1"
    assert lookup.known_good_xformers(matrix, "2.4.0") == "0.0.27.post2"
    assert lookup.known_good_xformers(matrix, "2.4.1") == "0.0.28.post1"
    assert lookup.known_good_xformers(matrix, "2.11.0") is None


def test_pairs_agree_with_xformers_pins(matrix: Matrix) -> None:
    # a known-good pair must be installable: the xformers wheel's own pin admits that torch
    for torch, xformers in matrix.torch_xformers_pairs.items():
        req = lookup.torch_requirement_of_xformers(matrix, xformers)
        assert req is not None, xformers
        release = torch if len(Version(torch).release) == 3 else f"{torch}.0"
        assert req.spec.contains(release), (torch, xformers, str(req.spec))


def test_unsloth_requires(matrix: Matrix) -> None:
    zoo = lookup.unsloth_requirement(matrix, "2026.10.9", "unsloth-zoo")
    assert zoo is not None and zoo.spec == SpecifierSet(">=2026.10.10")
    tf = lookup.unsloth_requirement(matrix, "2026.10.9", "transformers")
    assert tf is not None and not tf.spec.contains("4.57.0") and tf.spec.contains("5.17.0") and not tf.spec.contains("5.17.1")
    assert lookup.unsloth_requirement(matrix, "2026.10.8", "transformers") is None
    assert set(matrix.unsloth_requires) == {"unsloth-zoo", "transformers", "trl", "bitsandbytes", "torch"}


@pytest.mark.parametrize(
    "name, cc",
    [
        ("NVIDIA H100 80GB HBM3", (9, 0)), ("NVIDIA H200", (9, 0)), ("NVIDIA H800 PCIe", (9, 0)),
        ("NVIDIA A100-SXM4-80GB", (8, 0)), ("NVIDIA A800 80GB PCIe", (8, 0)), ("NVIDIA A30", (8, 0)),
        ("NVIDIA A10", (8, 6)), ("NVIDIA A10G", (8, 6)), ("NVIDIA A40", (8, 6)), ("NVIDIA RTX A6000", (8, 6)),
        ("NVIDIA GeForce RTX 3090", (8, 6)), ("NVIDIA GeForce RTX 3060 Laptop GPU", (8, 6)),
        ("NVIDIA L4", (8, 9)), ("NVIDIA L40", (8, 9)), ("NVIDIA L40S", (8, 9)), ("NVIDIA GeForce RTX 4090", (8, 9)),
        ("NVIDIA RTX 6000 Ada Generation", (8, 9)), ("NVIDIA RTX 2000 Ada Generation", (8, 9)),
        ("Tesla T4", (7, 5)), ("NVIDIA GeForce RTX 2080 Ti", (7, 5)), ("Quadro RTX 6000", (7, 5)),
        ("Quadro RTX 5000", (7, 5)), ("Tesla V100-SXM2-16GB", (7, 0)), ("Tesla P100-PCIE-16GB", (6, 0)),
        ("Tesla P4", (6, 1)), ("Tesla P40", (6, 1)), ("Tesla K80", (3, 7)),
        ("NVIDIA B200", (10, 0)), ("NVIDIA GB200", (10, 0)), ("NVIDIA GeForce RTX 5090", (12, 0)),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", (12, 0)), ("NVIDIA GB10", (12, 1)),
        ("NVIDIA DGX Spark", (12, 1)), ("Orin (nvgpu)", (8, 7)),
        # traps: a shorter pattern would give the wrong answer if it came first
        ("NVIDIA RTX A3000 Laptop GPU", (8, 6)), ("NVIDIA RTX A1000", (8, 6)), ("nvidia a100 80gb pcie", (8, 0)),
    ],
)
def test_gpu_names(matrix: Matrix, name: str, cc: Tuple[int, int]) -> None:
    assert lookup.cc_for_gpu_name(matrix, name) == cc


def test_gpu_name_order_has_no_shadowed_pattern(matrix: Matrix) -> None:
    # an earlier pattern contained in a later one makes the later one unreachable: same cc or a bug
    names = matrix.gpu_names
    for i, early in enumerate(names):
        for late in names[i + 1:]:
            if early.pattern.lower() in late.pattern.lower():
                assert early.cc == late.cc, (early.pattern, late.pattern)
    assert all(g.source == "NV-CC" for g in names)


def test_default_cuda_has_driver_floor_and_arch_list(matrix: Matrix) -> None:
    for minor, cuda in matrix.torch_default_cuda.items():
        if not Version("2.1") <= Version(minor) <= Version("2.14"):
            continue  # 2.0's CUDA 11.7 and 2.15's cu132 are not in the driver/arch facts
        assert lookup.driver_floor(matrix, cuda) is not None, minor
        assert lookup.archs_for(matrix, f"{minor}.0", lookup.cuda_tag(cuda)) is not None, minor
        assert lookup.cuda_tag(cuda) in matrix.torch_cuda_variants[minor], minor


# ---------------------------------------------------------------------------------------------
# full comparison with compat-facts.toml
# ---------------------------------------------------------------------------------------------


def _check_xformers_torch(m: Matrix, table: Dict[str, str]) -> None:
    assert len(m.xformers_torch) == len(table)
    for x, spec in table.items():
        req = lookup.torch_requirement_of_xformers(m, x)
        assert req is not None and req.spec == SpecifierSet(spec), x


def _check_torch_triton(m: Matrix, table: Dict[str, str]) -> None:
    assert len(m.torch_triton) == len(table)
    for t, spec in table.items():
        pin = lookup.triton_pin_for_torch(m, t)
        assert pin is not None and pin.spec == SpecifierSet(spec), t


def _check_default_cuda(m: Matrix, table: Dict[str, str]) -> None:
    assert dict(m.torch_default_cuda) == table


def _check_variants(m: Matrix, table: Dict[str, List[str]]) -> None:
    assert {k: list(v) for k, v in m.torch_cuda_variants.items()} == table
    # the facts mark 2.11+ as uncertain
    assert m.torch_cuda_variants_uncertain == {k for k in table if Version(k) >= Version("2.11")}


def _check_driver(m: Matrix, table: Dict[str, Dict[str, str]]) -> None:
    assert len(m.cuda_min_driver) == len(table)
    for cuda, row in table.items():
        f = lookup.driver_floor(m, cuda)
        assert f is not None and f.toolkit == Version(row["toolkit"]) and f.minor_compat == Version(row["minor_compat"]), cuda


def _check_archs(m: Matrix, table: Dict[str, List[str]], variants: Dict[str, List[str]]) -> None:
    minors = sorted(variants, key=Version)
    for key, archs in table.items():
        m_ = re.match(r"^([\w/]+)(?: \((\d+\.\d+)(?:-(\d+\.\d+)|(\+))?\))?$", key)
        assert m_, key
        tags, lo, hi, plus = m_.groups()
        cubins = [parse_cc(a.replace("+PTX", "")) for a in archs]
        ptx = [parse_cc(a.replace("+PTX", "")) for a in archs if a.endswith("+PTX")]
        for tag in tags.split("/"):
            # torch minors the row covers: its range, "X.Y+" = X.Y and later, no range = wherever the variant exists
            if lo is None:
                covered = [t for t in minors if tag in variants[t]]
            elif plus:
                covered = [t for t in minors if tag in variants[t] and Version(t) >= Version(lo)]
            elif hi:
                covered = [t for t in minors if Version(lo) <= Version(t) <= Version(hi)]
            else:
                covered = [lo]
            assert covered, key
            for t in covered:
                a = lookup.archs_for(m, f"{t}.0", tag)
                assert a is not None, (key, t)
                assert list(a.archs) == cubins and list(a.ptx) == ptx, (key, t)


def _check_features(m: Matrix, table: Dict[str, str]) -> None:
    for name, text in table.items():
        f = lookup.feature(m, name)
        first = re.search(r"(?:>=\s*|cc\s)(\d+\.\d+)", text)
        assert first, text
        assert f.min_cc == parse_cc(first.group(1)), name


def _check_bnb(m: Matrix, table: Dict[str, str]) -> None:
    assert len(m.bitsandbytes_torch) == len(table)
    for key, text in table.items():
        torch_spec = re.match(r"^torch([^ ;]+)", text).group(1)  # type: ignore[union-attr]
        py = re.search(r"\(python([^)]+)\)", text)
        for v in key.split("-"):
            r = lookup.bnb_requirement(m, v)
            assert r is not None and r.spec == SpecifierSet(torch_spec), key
            assert r.python == (SpecifierSet(py.group(1)) if py else None), key


def _check_flash_attn(m: Matrix, table: Dict[str, str]) -> None:
    for key, text in table.items():
        assert text in m.notes[f"flash_attn.{key}"]


def _check_unsloth_pairs(m: Matrix, table: Dict[str, str]) -> None:
    for key, text in table.items():
        assert m.notes[f"unsloth_pairs.{key}"] == text
    # structured: the extras' torch -> xformers pairs
    body = table["torch_xformers_extras"].split(": ", 1)[1]
    for item in re.split(r",\s(?=\d+\.\d+(?:\.\d+)?->)", body):
        torch, rhs = item.split("->")
        later = re.search(r"\(later ([\w.]+)\)", rhs)
        choices = [later.group(1)] if later else rhs.split("/")
        probes = [torch] if len(Version(torch).release) == 3 else [f"{torch}.0", f"{torch}.1"]
        for t in probes:
            if torch == "2.3" or lookup.xformers_for_torch(m, t):
                assert lookup.known_good_xformers(m, t) in choices, (torch, t)
    # structured: what unsloth 2026.10.9 requires
    reqs = table["transformers_excluded"].split(": ", 1)[1]
    for part in reqs.split("; "):
        pkg, spec = part.split(" ", 1)
        r = lookup.unsloth_requirement(m, "2026.10.9", pkg)
        assert r is not None and r.spec == SpecifierSet(spec.replace(" ", "")), pkg
    zoo = re.search(r"unsloth_zoo(>=[\d.]+)", table["unsloth_requires_zoo"]).group(1)  # type: ignore[union-attr]
    assert lookup.unsloth_requirement(m, "2026.10.9", "unsloth-zoo").spec == SpecifierSet(zoo)  # type: ignore[union-attr]


def _check_notes(prefix: str):  # type: ignore[no-untyped-def]
    def check(m: Matrix, table: Dict[str, str]) -> None:
        for key, text in table.items():
            assert m.notes[f"{prefix}.{key}"] == text, key
    return check


def _check_dtype_layout(m: Matrix, table: Dict[str, str]) -> None:
    (issue,) = [i for i in m.known_issues if i.id == "xformers.dtype-layout"]
    assert issue.cause == table["cause"]
    assert table["fixed_in"] in issue.note and table["working"] in issue.note
    for n in re.findall(r"#(\d+)", table["reports"]):
        assert f"unsloth#{n}" in issue.reports


def _check_build_info(m: Matrix, table: Dict[str, str]) -> None:
    assert table == {}  # comments only in the facts file
    assert "cpp_lib.json" in m.notes["xformers_build_info.cpp_lib_json"]


def test_every_facts_table_is_encoded(matrix: Matrix, facts: dict) -> None:
    checks = {
        "xformers_torch": _check_xformers_torch,
        "xformers_build_info": _check_build_info,
        "torch_triton": _check_torch_triton,
        "torch_default_cuda": _check_default_cuda,
        "torch_cuda_variants": _check_variants,
        "cuda_min_driver_linux": _check_driver,
        "torch_cuda_archs": lambda m, t: _check_archs(m, t, facts["torch_cuda_variants"]),
        "gpu_features": _check_features,
        "bitsandbytes_torch": _check_bnb,
        "flash_attn": _check_flash_attn,
        "unsloth_pairs": _check_unsloth_pairs,
        "unsloth_runtime": _check_notes("unsloth_runtime"),
        "xformers_dtype_layout": _check_dtype_layout,
        "observed": _check_notes("observed"),
        "observed_unsloth": _check_notes("observed_unsloth"),
    }
    # a table added to the facts file must get a check (and data) here
    assert set(facts) == set(checks)
    for name, check in checks.items():
        check(matrix, facts[name])
