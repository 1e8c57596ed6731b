"""torch/version.py and xformers/cpp_lib.json read as files, in every shape they come in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.facts import Distribution
from doctor.inventory.builds import (
    bitsandbytes_build,
    parse_cpp_lib,
    parse_torch_version_source,
    read_bitsandbytes_build,
    read_torch_build,
    read_xformers_build,
    torch_build,
    xformers_build,
)
from tests.inventory.builders import (
    CPP_LIB_JSON,
    TORCH_VERSION_PY_CPU,
    TORCH_VERSION_PY_CUDA,
    is_root,
    write_dist,
    write_torch,
    write_xformers,
)


def test_real_cpu_version_py(site: Path) -> None:
    path = write_torch(site)
    build = read_torch_build(str(path))
    assert build.version == "2.13.0+cpu"
    assert build.cuda is None and build.hip is None
    assert build.git_version == "cf30153c4c131c8164ee7798e5022d810682e2cb"
    assert build.path == str(path) and build.error is None


def test_cuda_version_py_annotated_assignment() -> None:
    build = parse_torch_version_source(TORCH_VERSION_PY_CUDA)
    assert build.version == "2.13.0+cu130" and build.cuda == "13.0" and build.error is None


def test_older_plain_assignments_and_last_one_wins() -> None:
    source = "__version__ = '2.3.0'\ncuda = '12.1'\nhip = None\ncuda = '11.8'\n"
    build = parse_torch_version_source(source)
    assert (build.version, build.cuda, build.error) == ("2.3.0", "11.8", None)


def test_syntax_error() -> None:
    build = parse_torch_version_source("__version__ = '2.1.0\ncuda = \n")
    assert build.version is None and build.error.startswith("version.py does not parse")


def test_nul_bytes_and_undecodable_bytes() -> None:
    assert parse_torch_version_source(b"__version__ = '1'\x00\n").error.startswith("version.py does not parse")
    assert parse_torch_version_source(b"__version__ = '\xff\xfe'\n").error.startswith("version.py does not parse")


def test_non_literal_cuda_is_an_error_but_keeps_the_version() -> None:
    source = TORCH_VERSION_PY_CPU.replace("cuda: Optional[str] = None", "cuda: Optional[str] = _detect()")
    build = parse_torch_version_source(source)
    assert build.version == "2.13.0+cpu" and build.cuda is None
    assert "cuda is not a literal" in build.error


def test_non_literal_version_and_wrong_types() -> None:
    build = parse_torch_version_source("import os\n__version__ = os.environ['V']\ncuda = 12.1\n")
    assert build.version is None
    assert "__version__ is not a literal" in build.error and "cuda is a float" in build.error
    build = parse_torch_version_source("__version__ = 2\n")
    assert build.version is None and "__version__ is a int" in build.error


def test_non_literal_git_version_is_tolerated() -> None:
    build = parse_torch_version_source("__version__ = '2.5.1'\ngit_version = get()\n")
    assert build.version == "2.5.1" and build.git_version is None and build.error is None


def test_missing_version_assignment() -> None:
    build = parse_torch_version_source("cuda = '12.4'\n")
    assert build.version is None and build.cuda == "12.4" and "no __version__" in build.error


def test_version_py_that_is_a_directory(site: Path) -> None:
    (site / "torch" / "version.py").mkdir(parents=True)
    build = read_torch_build(str(site / "torch" / "version.py"))
    assert build.version is None and "cannot read" in build.error


def test_torch_build_prefers_the_distribution_location(tmp_path: Path) -> None:
    early, dist_site = tmp_path / "early", tmp_path / "site"
    write_torch(early, TORCH_VERSION_PY_CPU)
    write_torch(dist_site, TORCH_VERSION_PY_CUDA, dist_version="2.13.0+cu130")
    dist = Distribution(name="torch", version="2.13.0+cu130", location=str(dist_site))
    build = torch_build([str(early), str(dist_site)], dist)
    assert build is not None and build.cuda == "13.0"
    # Without a distribution the first path entry wins, like import.
    assert torch_build([str(early), str(dist_site)], None).cuda is None


def test_torch_dist_without_version_py(site: Path) -> None:
    write_dist(site, "torch", "2.11.0")
    dist = Distribution(name="torch", version="2.11.0", location=str(site))
    build = torch_build([str(site)], dist)
    assert build is not None and build.version is None and build.error == "torch/version.py not found"


def test_no_torch_at_all(site: Path) -> None:
    assert torch_build([str(site)], None) is None


def test_real_cpp_lib(site: Path) -> None:
    path = write_xformers(site, CPP_LIB_JSON)
    build = read_xformers_build(str(path))
    assert build.torch_version == "2.10.0+cu128"
    assert build.cuda_version == 1208 and build.hip_version is None
    assert build.python_version == "3.10.19"
    assert build.arch_list == "7.5 8.0+PTX 8.0 9.0a"
    assert build.error is None and build.path == str(path)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"env": {}}', 'no "version" object'),
        ('{"version": [1]}', 'no "version" object'),
        ('{"version": {"torch": 2.1, "cuda": "1208"}}', "version.torch is a number"),
        ('{"version": {"torch": "2.4.0", "cuda": "1208"}}', "version.cuda is a string, expected an integer"),
        ('{"version": {"torch": "2.4.0", "cuda": true}}', "version.cuda is a boolean"),
        ('{"version": {"cuda": 1208}}', "version.torch is missing"),
        ('{"version": {"torch": "2.4.0", "hip": [6]}}', "version.hip is a list"),
        ('{"version": {"torch": "2.4.0"}, "env": "x"}', "env is a string"),
        ('{"version": {"torch": "2.4.0"}, "env": {"TORCH_CUDA_ARCH_LIST": 8}}', "env.TORCH_CUDA_ARCH_LIST is an integer"),
        ("[" * 100000, "not valid JSON"),
    ],
)
def test_malformed_cpp_lib(content: str, expected: str) -> None:
    build = parse_cpp_lib(content)
    assert build.error is not None and expected in build.error


def test_partial_cpp_lib_keeps_good_fields() -> None:
    build = parse_cpp_lib(json.dumps({"version": {"torch": "2.4.0", "cuda": "x", "hip": "6.1", "python": "3.11.9"}}))
    assert build.torch_version == "2.4.0" and build.hip_version == "6.1" and build.python_version == "3.11.9"
    assert build.cuda_version is None and "version.cuda" in build.error


def test_undecodable_cpp_lib(site: Path) -> None:
    path = write_xformers(site, None)
    path.write_bytes(b"\xff\xfe\xfa{")
    assert "not valid JSON" in read_xformers_build(str(path)).error


def test_xformers_without_cpp_lib(site: Path) -> None:
    write_xformers(site, None)
    dist = Distribution(name="xformers", version="0.0.35", location=str(site))
    build = xformers_build([str(site)], dist)
    assert build is not None and build.torch_version is None and build.error == "no cpp_lib.json"


def test_xformers_package_without_distribution(site: Path) -> None:
    (site / "xformers").mkdir()
    (site / "xformers" / "__init__.py").write_text("")
    build = xformers_build([str(site)], None)
    assert build is not None and build.error == "no cpp_lib.json"


def test_no_xformers_at_all(site: Path) -> None:
    assert xformers_build([str(site)], None) is None


def test_real_torch_cpu_wheel_version_py(tmp_path: Path) -> None:
    """torch/version.py and METADATA taken out of the real torch 2.13.0 CPU wheel (when it is on this disk)."""
    import zipfile

    from doctor.inventory import gather

    wheels = sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-*.whl")) if Path("/opt/wheels").is_dir() else []
    if not wheels:
        pytest.skip("no torch 2.13.0 CPU wheel in /opt/wheels")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wanted = [n for n in wheel.namelist() if n == "torch/version.py" or (n.endswith(".dist-info/METADATA") and n.count("/") == 1)]
        wheel.extractall(site, members=wanted)
    facts = gather(paths=[str(site)], environ={"DOCTOR_GPUS": "none"})
    assert facts.version_of("torch") == "2.13.0+cpu"
    assert facts.torch is not None and facts.torch.error is None
    assert (facts.torch.version, facts.torch.cuda, facts.torch.hip) == ("2.13.0+cpu", None, None)
    assert facts.torch.git_version and len(facts.torch.git_version) == 40


# -- bitsandbytes' native libraries ----------------------------------------------------------------------

# The libbitsandbytes_* members of the real bitsandbytes 0.41.1 py3-none-any wheel (its zip central directory).
BNB_041_LIBS = [
    "libbitsandbytes_cpu.so", "libbitsandbytes_cuda110.so", "libbitsandbytes_cuda110_nocublaslt.so",
    "libbitsandbytes_cuda111.so", "libbitsandbytes_cuda111_nocublaslt.so", "libbitsandbytes_cuda114.so",
    "libbitsandbytes_cuda114_nocublaslt.so", "libbitsandbytes_cuda115.so", "libbitsandbytes_cuda115_nocublaslt.so",
    "libbitsandbytes_cuda117.so", "libbitsandbytes_cuda117_nocublaslt.so", "libbitsandbytes_cuda118.so",
    "libbitsandbytes_cuda118_nocublaslt.so", "libbitsandbytes_cuda120.so", "libbitsandbytes_cuda120_nocublaslt.so",
    "libbitsandbytes_cuda121.so", "libbitsandbytes_cuda121_nocublaslt.so", "libbitsandbytes_cuda122.so",
    "libbitsandbytes_cuda122_nocublaslt.so",
]


def write_bnb(site: Path, libs, version: str = "0.41.1", extra=("__init__.py", "functional.py")) -> Path:  # type: ignore[no-untyped-def]
    """A bitsandbytes install: dist-info and a package directory holding these (empty) library files."""
    write_dist(site, "bitsandbytes", version)
    pkg = site / "bitsandbytes"
    pkg.mkdir()
    for name in [*libs, *extra]:
        (pkg / name).write_bytes(b"")
    return pkg


def test_bitsandbytes_libraries_are_listed_sorted_without_other_files(site: Path) -> None:
    pkg = write_bnb(site, list(reversed(BNB_041_LIBS)), extra=("__init__.py", "libbitsandbytes_cuda121.so.bak", "cextension.py"))
    (pkg / "libbitsandbytes_cuda999.so.d").mkdir()
    dist = Distribution(name="bitsandbytes", version="0.41.1", location=str(site))
    build = bitsandbytes_build([str(site)], dist)
    assert build is not None and build.error is None and build.path == str(pkg)
    assert list(build.libraries) == BNB_041_LIBS  # sorted, .bak and non-library files left out


def test_bitsandbytes_windows_and_macos_library_names(site: Path) -> None:
    pkg = write_bnb(site, ["libbitsandbytes_cuda124.dll", "libbitsandbytes_cpu.dylib"])
    assert read_bitsandbytes_build(str(pkg)).libraries == ("libbitsandbytes_cpu.dylib", "libbitsandbytes_cuda124.dll")


def test_bitsandbytes_without_any_library(site: Path) -> None:
    """A source checkout or a broken install: the package is there, no library at all."""
    write_bnb(site, [])
    build = bitsandbytes_build([str(site)], Distribution(name="bitsandbytes", version="0.41.1", location=str(site)))
    assert build is not None and build.libraries == () and build.error is None


def test_bitsandbytes_dist_without_package_directory(site: Path) -> None:
    write_dist(site, "bitsandbytes", "0.45.5")
    build = bitsandbytes_build([str(site)], Distribution(name="bitsandbytes", version="0.45.5", location=str(site)))
    assert build is not None and build.libraries == () and build.error == "bitsandbytes package directory not found"


def test_bitsandbytes_package_that_is_a_file(site: Path) -> None:
    (site / "bitsandbytes").write_text("not a directory")
    build = bitsandbytes_build([str(site)], None)
    assert build is not None and build.libraries == () and build.error.startswith("cannot list")


@pytest.mark.skipif(is_root(), reason="root lists any directory")
def test_bitsandbytes_unlistable_directory(site: Path) -> None:
    pkg = write_bnb(site, BNB_041_LIBS)
    pkg.chmod(0o000)
    try:
        build = bitsandbytes_build([str(site)], Distribution(name="bitsandbytes", version="0.41.1", location=str(site)))
    finally:
        pkg.chmod(0o755)
    assert build is not None and build.libraries == () and "cannot list" in build.error


def test_no_bitsandbytes_at_all(site: Path) -> None:
    assert bitsandbytes_build([str(site)], None) is None


def test_gather_reads_the_bitsandbytes_libraries(site: Path) -> None:
    from doctor.inventory import gather

    write_bnb(site, BNB_041_LIBS)
    facts = gather(paths=[str(site)], environ={"DOCTOR_GPUS": "none"})
    assert facts.bitsandbytes is not None and list(facts.bitsandbytes.libraries) == BNB_041_LIBS
    assert gather(paths=[str(site / "nowhere")], environ={"DOCTOR_GPUS": "none"}).bitsandbytes is None
