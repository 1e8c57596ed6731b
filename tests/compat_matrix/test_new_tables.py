"""The tables the planner's verification relies on: bitsandbytes' libraries, xformers' wheel builds,
exceptions and stable ABI, requirements that are optional at run time, and the lookups over them.

The bitsandbytes wheel file lists are checked against `recorded/bitsandbytes_wheel_files.json`: the
libbitsandbytes_* members of every real Linux x86_64 wheel 0.41.0 .. 0.50.2 on the package index, as read
from each wheel's zip central directory (HTTP Range requests) when the data was written; xformers' wheel
builds against `recorded/xformers_cpp_lib.json`, the cpp_lib.json read out of each real wheel the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.loader import load_matrix
from doctor.compat_matrix.model import Matrix
from doctor.errors import DoctorError
from doctor.facts import BitsandbytesBuild, XformersBuild
from tests.compat_matrix.test_loader import edit, load_error

RECORDED = Path(__file__).parent / "recorded" / "bitsandbytes_wheel_files.json"


def recorded_wheels() -> Dict[str, List[str]]:
    """release -> library file names of its real Linux x86_64 wheel."""
    doc = json.loads(RECORDED.read_text(encoding="utf-8"))
    out = {}
    for version, files in doc["wheels"].items():
        (names,) = files.values()  # one Linux x86_64 wheel per release
        out[version] = sorted(names)
    return out


# -- bitsandbytes: data ------------------------------------------------------------------------------


def test_every_recorded_release_is_in_the_matrix_with_its_exact_file_list(matrix: Matrix) -> None:
    recorded = recorded_wheels()
    assert len(recorded) == 33 and "0.41.1" in recorded and "0.50.2" in recorded
    for version, names in recorded.items():
        libs = lookup.bitsandbytes_libs(matrix, version)
        assert libs is not None, version
        assert list(libs.libraries) == names, version
        assert libs.path is None and libs.source == "compat matrix (WHEEL-FILES)"
    in_matrix = {v for w in matrix.bitsandbytes_wheels for v in w.versions}
    assert in_matrix == set(recorded)


def test_041_ships_cuda_libraries_only_up_to_122(matrix: Matrix) -> None:
    """The detection gap of issue 8: 0.41.x has nothing for CUDA 12.3+ (torch 2.4 cu124, 2.5+)."""
    for v in ("0.41.0", "0.41.1", "0.41.3.post2"):
        libs = lookup.bitsandbytes_libs(matrix, v)
        assert libs is not None
        cudas = {lookup.bnb_library_cuda(n)[0] for n in libs.libraries if lookup.bnb_library_cuda(n)}  # type: ignore[index]
        assert max(cudas) == (12, 2) and (12, 1) in cudas and (11, 8) in cudas


def test_050_dropped_the_odd_minors_and_added_132(matrix: Matrix) -> None:
    libs = lookup.bitsandbytes_libs(matrix, "0.50.0")
    assert libs is not None
    cudas = sorted(lookup.bnb_library_cuda(n)[0] for n in libs.libraries if lookup.bnb_library_cuda(n))  # type: ignore[index]
    assert cudas == [(11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (13, 0), (13, 2)]
    # the facts file's note on the 0.50 row says the same
    row = lookup.bnb_requirement(matrix, "0.50.1")
    assert row is not None and "11.8, 12.1, 12.4, 12.6, 12.8, 13.0, 13.2" in row.note


def test_loader_rules_by_release(matrix: Matrix) -> None:
    assert lookup.bnb_loader(matrix, "0.40.2") is None  # read the system libcudart: not knowable from files
    old = lookup.bnb_loader(matrix, "0.44.1")
    assert old is not None and old.picks == "exact" and old.nocublaslt_below == (7, 5)
    mid = lookup.bnb_loader(matrix, "0.49.2")
    assert mid is not None and mid.picks == "exact" and mid.nocublaslt_below is None
    new = lookup.bnb_loader(matrix, "0.50.0")
    assert new is not None and new.picks == "same-major"
    for row in matrix.bitsandbytes_loaders:
        assert row.source == "BNB-LOADER"
    for g in ("abc", "", None):
        assert lookup.bnb_loader(matrix, g) is None


def test_every_cuda_library_of_043_and_later_has_an_arch_list(matrix: Matrix) -> None:
    for version, names in recorded_wheels().items():
        if Version(version) < Version("0.43.0"):
            continue
        for name in names:
            parsed = lookup.bnb_library_cuda(name)
            if parsed is None:
                continue
            (major, minor), _ = parsed
            assert lookup.bnb_archs(matrix, version, f"{major}.{minor}") is not None, (version, name)


@pytest.mark.parametrize("version, cuda, first, last, ptx", [
    ("0.44.1", "11.7", (5, 0), (8, 6), (8, 6)),
    ("0.44.1", "11.8", (5, 0), (8, 9), (8, 9)),
    ("0.45.5", "12.8", (7, 0), (12, 0), (12, 0)),
    ("0.46.0", "12.8", (7, 5), (12, 0), (12, 0)),
    ("0.47.0", "12.6", (5, 0), (9, 0), (9, 0)),
    ("0.48.1", "12.1", (6, 0), (9, 0), (9, 0)),
    ("0.49.0", "13.0", (7, 5), (12, 0), (12, 0)),
    ("0.50.2", "13.2", (7, 5), (12, 0), (12, 0)),
])
def test_arch_lists(matrix: Matrix, version: str, cuda: str, first: tuple, last: tuple, ptx: tuple) -> None:  # type: ignore[type-arg]
    row = lookup.bnb_archs(matrix, version, cuda)
    assert row is not None and row.archs[0] == first and row.archs[-1] == last and row.ptx == (ptx,)


def test_bnb_library_cuda_parses_names_as_bitsandbytes_does() -> None:
    assert lookup.bnb_library_cuda("libbitsandbytes_cuda121.so") == ((12, 1), False)
    assert lookup.bnb_library_cuda("libbitsandbytes_cuda110_nocublaslt.so") == ((11, 0), True)
    assert lookup.bnb_library_cuda("libbitsandbytes_cuda1210.so") == ((12, 10), False)
    assert lookup.bnb_library_cuda("libbitsandbytes_cuda124.dll") == ((12, 4), False)
    for other in ("libbitsandbytes_cpu.so", "libbitsandbytes_rocm64.so", "libbitsandbytes_xpu2025.so",
                  "libbitsandbytes_cuda12.so", "libbitsandbytes_cuda121.so.bak", "", None):
        assert lookup.bnb_library_cuda(other) is None  # type: ignore[arg-type]


# -- bitsandbytes: which library loads ------------------------------------------------------------------------


def pick(matrix: Matrix, version: str, cuda: str, cc: object = None) -> object:
    """The library this release's loader picks for torch's CUDA (from the matrix's file list)."""
    libs, loader = lookup.bitsandbytes_libs(matrix, version), lookup.bnb_loader(matrix, version)
    assert libs is not None and loader is not None
    return lookup.bnb_pick(libs.libraries, cuda, loader, cc)  # type: ignore[arg-type]


def test_pick_exact_releases(matrix: Matrix) -> None:
    assert pick(matrix, "0.41.1", "12.1") == lookup.BnbPick("libbitsandbytes_cuda121.so", "12.1", True)
    assert pick(matrix, "0.41.1", "12.4") is None  # no cuda124: the CPU library loads instead
    assert pick(matrix, "0.41.1", "11.8", (7, 0)) == lookup.BnbPick("libbitsandbytes_cuda118_nocublaslt.so", "11.8", True)
    assert pick(matrix, "0.44.1", "12.6") is None
    assert pick(matrix, "0.45.0", "12.6") == lookup.BnbPick("libbitsandbytes_cuda126.so", "12.6", True)
    assert pick(matrix, "0.45.0", "12.6", (7, 0)).library == "libbitsandbytes_cuda126.so"  # type: ignore[attr-defined]
    assert pick(matrix, "0.47.0", "13.0") is None  # 13.0 arrived in 0.48.0
    assert pick(matrix, "0.48.0", "13.0") == lookup.BnbPick("libbitsandbytes_cuda130.so", "13.0", True)


def test_pick_same_major_fallback_from_050(matrix: Matrix) -> None:
    assert pick(matrix, "0.50.2", "12.9") == lookup.BnbPick("libbitsandbytes_cuda128.so", "12.8", False)  # highest lower
    assert pick(matrix, "0.50.2", "12.0") == lookup.BnbPick("libbitsandbytes_cuda121.so", "12.1", False)  # lowest higher
    assert pick(matrix, "0.50.2", "13.1") == lookup.BnbPick("libbitsandbytes_cuda130.so", "13.0", False)
    assert pick(matrix, "0.50.2", "11.7") == lookup.BnbPick("libbitsandbytes_cuda118.so", "11.8", False)
    assert pick(matrix, "0.50.2", "14.0") is None  # never another major
    assert pick(matrix, "0.49.2", "12.7") is None  # before 0.50: exact only


def test_pick_garbage_cuda(matrix: Matrix) -> None:
    for g in ("", "abc", "cu121", None):
        assert pick(matrix, "0.50.2", g) is None  # type: ignore[arg-type]


def test_bitsandbytes_libs_unknown(matrix: Matrix) -> None:
    assert lookup.bitsandbytes_libs(matrix, "0.40.2") is None
    assert lookup.bitsandbytes_libs(matrix, "9.9.9") is None
    for g in ("abc", "", None):
        assert lookup.bitsandbytes_libs(matrix, g) is None
    assert isinstance(lookup.bitsandbytes_libs(matrix, "0.45.5"), BitsandbytesBuild)


# -- xformers ------------------------------------------------------------------------------------------------


def test_xformers_026_post1_on_231_is_a_recorded_exception(matrix: Matrix) -> None:
    e = lookup.xformers_exception(matrix, "0.0.26.post1", "2.3.1+cu121")
    assert e is not None and e.torch == Version("2.3.1") and e.source in matrix.sources
    assert "unslothai/unsloth#1126" in e.reports and e.reports_source in matrix.sources and e.evidence
    assert lookup.xformers_exception(matrix, "0.0.26.post1", "2.3.0") is None  # that one meets the pin
    assert lookup.xformers_exception(matrix, "0.0.25.post1", "2.2.1") is None  # nobody recorded it
    assert lookup.xformers_exception(matrix, "abc", "2.3.1") is None
    assert lookup.xformers_exception(matrix, "0.0.26.post1", None) is None


def test_xformers_stable_abi(matrix: Matrix) -> None:
    assert lookup.xformers_stable_abi(matrix, "0.0.35", "2.10.0+cu128") is not None
    assert lookup.xformers_stable_abi(matrix, "0.0.34", "2.10.0") is not None
    assert lookup.xformers_stable_abi(matrix, "0.0.33.post2", "2.9.1") is None
    assert lookup.xformers_stable_abi(matrix, "0.0.35", "2.9.1") is None
    assert lookup.xformers_stable_abi(matrix, "0.0.35", "garbage") is None


@pytest.mark.parametrize("version, variant, torch_version, cuda", [
    ("0.0.26.post1", None, "2.3.0+cu121", 1201),  # the default index: the recorded wheel
    ("0.0.26.post1", "cu118", "2.3.0+cu118", 1108),
    ("0.0.28.post3", None, "2.5.1+cu121", 1201),  # not torch 2.5's default cu124
    ("0.0.28.post3", "cu124", "2.5.1+cu124", 1204),
    ("0.0.31", None, "2.7.1+cu126", 1208),  # compiled with CUDA 12.8 against torch 2.7.1+cu126
    ("0.0.32.post2", "cu126", "2.8.0+cu126", 1206),
    ("0.0.32.post2", None, "2.8.0+cu128", 1208),
    ("0.0.35", None, "2.10.0+cu128", 1208),  # the loose >=2.10 pin: the recorded build
    ("0.0.35", "cu130", "2.10.0+cu130", 1300),
    ("0.0.34", "cu130", "2.10.0+cu130", 1300),
])
def test_xformers_build_of(matrix: Matrix, version: str, variant: object, torch_version: str, cuda: int) -> None:
    b = lookup.xformers_build_of(matrix, version, variant)  # type: ignore[arg-type]
    assert isinstance(b, XformersBuild)
    assert (b.torch_version, b.cuda_version, b.error, b.path) == (torch_version, cuda, None, None)


def test_xformers_build_of_unknown(matrix: Matrix) -> None:
    assert lookup.xformers_build_of(matrix, "0.0.99", None) is None
    assert lookup.xformers_build_of(matrix, "0.0.32.post2", "cpu") is None
    assert lookup.xformers_build_of(matrix, "0.0.32.post2", "rocm6.2") is None
    assert lookup.xformers_build_of(matrix, "abc", None) is None


XF_RECORDED = Path(__file__).parent / "recorded" / "xformers_cpp_lib.json"


def test_every_wheel_build_fact_is_the_real_cpp_lib(matrix: Matrix) -> None:
    """wheel_torch / wheel_cuda of every row are what the real wheel's cpp_lib.json says (recorded from the index)."""
    recorded = json.loads(XF_RECORDED.read_text(encoding="utf-8"))["wheels"]
    assert len(recorded) == 31 and "0.0.28.post3" in recorded and "0.0.35" in recorded
    for version, rec in recorded.items():
        row = lookup.torch_requirement_of_xformers(matrix, version)
        assert row is not None, version
        v = rec["cpp_lib.json"]["version"]
        assert row.wheel_torch == v["torch"], version
        assert row.wheel_cuda == f"{v['cuda'] // 100}.{v['cuda'] % 100}", version
        assert row.wheel_source in matrix.sources
        # the exact pin names the release the wheel was compiled against
        if len(row.spec) == 1 and next(iter(row.spec)).operator == "==":
            assert v["torch"].startswith(next(iter(row.spec)).version + "+"), version


def test_the_default_index_wheel_is_not_always_built_for_the_default_torch_cuda(matrix: Matrix) -> None:
    """The fact behind failure class 5: PyPI's xformers 0.0.28.post3 is cu121, PyPI's torch 2.5.1 is cu124."""
    assert lookup.xformers_wheel_cuda(matrix, "0.0.28.post3") == "12.1"
    assert lookup.default_cuda_for(matrix, "2.5.1") == "12.4"
    assert lookup.xformers_wheel_cuda(matrix, "0.0.99") is None


def test_the_observed_035_build_agrees_with_the_inventory_fixture(matrix: Matrix) -> None:
    from tests.inventory.builders import CPP_LIB_JSON

    row = lookup.torch_requirement_of_xformers(matrix, "0.0.35")
    assert row is not None and row.wheel_torch == CPP_LIB_JSON["version"]["torch"]  # type: ignore[index]


# -- optional at run time -----------------------------------------------------------------------------------


def test_optional_at_runtime(matrix: Matrix) -> None:
    row = lookup.optional_at_runtime(matrix, "unsloth", "xformers", "2026.10.9")
    assert row is not None and "SDPA" in row.why and row.source in matrix.sources
    assert row.observed and row.observed_source in matrix.sources
    assert lookup.optional_at_runtime(matrix, "Unsloth", "XFormers", "2026.10.9") == row  # any spelling
    # a release before the single dispatch point, or no release at all: never called optional
    assert lookup.optional_at_runtime(matrix, "unsloth", "xformers", "2025.3.14") is None
    assert lookup.optional_at_runtime(matrix, "unsloth", "xformers") is None
    assert lookup.optional_at_runtime(matrix, "unsloth", "xformers", "abc") is None
    t = lookup.optional_at_runtime(matrix, "transformers", "xformers")
    assert t is not None and t.requirer_versions is None
    assert lookup.optional_at_runtime(matrix, "unsloth", "bitsandbytes", "2026.10.9") is None
    assert lookup.optional_at_runtime(matrix, "unsloth-zoo", "xformers", "2026.10.9") is None


# -- bad data: one line naming file, row and key ---------------------------------------------------------


def test_bad_new_rows_are_one_line_errors(data_copy: Path) -> None:
    edit(data_copy / "bitsandbytes_libs.toml", '"libbitsandbytes_cuda110.so",', '"cuda110.so",')
    assert load_error(data_copy) == ("matrix data error: bitsandbytes_libs.toml: wheel[0].libraries[1]: invalid library file name "
                                     "'cuda110.so' (expected 'libbitsandbytes_cuda121.so')")


def test_bad_pick_rule(data_copy: Path) -> None:
    edit(data_copy / "bitsandbytes_libs.toml", 'picks = "same-major"\nsource', 'picks = "nearest"\nsource')
    assert "loader[2].picks: invalid pick rule 'nearest'" in load_error(data_copy)


def test_duplicate_bnb_release(data_copy: Path) -> None:
    edit(data_copy / "bitsandbytes_libs.toml", 'bitsandbytes = ["0.42.0"]', 'bitsandbytes = ["0.41.1"]')
    assert "wheel[1].bitsandbytes[0]: duplicate of wheel[0].bitsandbytes[1]" in load_error(data_copy)


def test_exception_must_be_off_the_pin_and_of_a_known_row(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'torch = "2.3.1"\nsource = "UNSLOTH-SRC"', 'torch = "2.3.0"\nsource = "UNSLOTH-SRC"')
    assert "exception[0].torch: '2.3.0' already meets xformers 0.0.26.post1's requirement torch==2.3.0" in load_error(data_copy)


def test_exception_of_unknown_release(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'xformers = "0.0.26.post1"\ntorch = "2.3.1"', 'xformers = "0.0.26"\ntorch = "2.3.1"')
    assert "exception[0].xformers: '0.0.26' is not a requirement row of this file" in load_error(data_copy)


def test_observation_needs_a_source(data_copy: Path) -> None:
    edit(data_copy / "optional_runtime.toml", 'observed_source = "SEEN-H200"\n', "")
    assert load_error(data_copy) == ("matrix data error: optional_runtime.toml: optional[0].observed_source: missing "
                                     "(every observation needs its source)")


def test_optional_names_are_canonical(data_copy: Path) -> None:
    edit(data_copy / "optional_runtime.toml", 'requirer = "unsloth"', 'requirer = "Unsloth"')
    assert "optional[0].requirer: not a canonical package name 'Unsloth'" in load_error(data_copy)


def test_wheel_facts_need_a_source_and_a_build(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'wheel_torch = "2.0.1+cu118"\nwheel_cuda = "11.8"\nwheel_source = "WHEEL-CPPLIB"\n',
         'wheel_torch = "2.0.1+cu118"\nwheel_cuda = "11.8"\n')
    assert load_error(data_copy) == ("matrix data error: xformers_torch.toml: requirement[0].wheel_source: missing "
                                     "(the wheel's build facts need their source)")


def test_wheel_torch_must_be_a_cuda_build(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'wheel_torch = "2.0.1+cu118"', 'wheel_torch = "2.0.1"')
    assert "requirement[0].wheel_torch: invalid torch build '2.0.1' (expected 'X.Y.Z+cuXYZ')" in load_error(data_copy)


def test_the_edited_copies_load_when_put_back(data_copy: Path) -> None:
    assert load_matrix(data_copy) == load_matrix()
    with pytest.raises(DoctorError):
        edit(data_copy / "bitsandbytes_libs.toml", 'source = "BNB-CI"', 'source = "NOPE"')
        load_matrix(data_copy)
