"""torch/version.py and xformers/cpp_lib.json read as files, in every shape they come in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.facts import Distribution
from doctor.inventory.builds import (
    parse_cpp_lib,
    parse_torch_version_source,
    read_torch_build,
    read_xformers_build,
    torch_build,
    xformers_build,
)
from tests.inventory.builders import (
    CPP_LIB_JSON,
    TORCH_VERSION_PY_CPU,
    TORCH_VERSION_PY_CUDA,
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
