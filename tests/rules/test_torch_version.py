"""A torch the doctor cannot read: garbage versions, an unreadable or missing version.py, permission denied.

Each world is real files on disk (a dist-info written by hand, as pip refuses to make these, and a
torch/version.py); EACCES is real too (tests.rules.unreadable), also when the tests run as root.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from doctor.actions import Manual, PipInstall
from doctor.compat_matrix.versions import parse_torch_version, torch_variant
from doctor.findings import Severity
from doctor.remedies import reinstall
from tests.conftest import Env, ids, one, torch_version_py
from tests.rules.unreadable import check_in_child, make_unreadable, restore

H100 = "NVIDIA H100 80GB HBM3@9.0@81559"
DRIVER = "580.159.04"
INDEX = "https://download.pytorch.org/whl"


def _torch(site: Path, metadata_version: str, file_version: str, cuda: str = "12.1") -> Path:
    """A torch dist-info with `metadata_version` and a torch/version.py saying `file_version`; returns version.py."""
    info = site / "torch-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {metadata_version}\n\n")
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("")
    vp = site / "torch" / "version.py"
    vp.write_text(torch_version_py(file_version, cuda))
    return vp


def _commands(report) -> List[str]:  # type: ignore[no-untyped-def]
    """Every pasteable command of every finding."""
    return [a.command() or "" for f in report.findings for a in f.fix]


@pytest.mark.parametrize("garbage", ["abc", "2.3.1+cu121.post3"])
def test_garbage_torch_version_is_a_finding_never_a_check_mark(env: Env, garbage: str) -> None:
    """Both files say garbage: one warning naming what was read and where; no [✓] torch, no fix built from it."""
    vp = _torch(env.site, garbage, garbage)
    env.wheel("xformers", "0.0.27.post2", ["torch==2.4.0"])
    report = env.check(gpus=H100, driver=DRIVER)
    f = one(report, "torch.bad-version")
    assert f.severity is Severity.WARN
    assert f"'{garbage}' in {vp}" in f.title and "in its metadata" in f.title
    assert dict(f.evidence)["__version__"] == garbage and dict(f.evidence)["version.py"] == str(vp)
    assert "torch.build" not in ids(report)  # never "[✓] torch abc"
    # torch is there: not "not installed", not "xformers without torch", not a CPU build
    assert not {"torch.missing", "xformers.no-torch", "torch.cpu-build-on-gpu"} & set(ids(report))
    assert [type(a) for a in f.fix] == [Manual]
    local = garbage.partition("+")[2]
    for cmd in _commands(report):
        assert f"torch=={garbage}" not in cmd and (not local or local not in cmd), cmd
    assert "package.bad-version" not in ids(report)  # one finding for torch's version, not two
    assert report.exit_code == 1


def test_garbage_in_version_py_only_reinstalls_the_metadata_version(env: Env) -> None:
    """version.py says 'abc', the dist-info 2.8.0+cu128: say so, reinstall 2.8.0+cu128 from its index, check the rest with it."""
    vp = _torch(env.site, "2.8.0+cu128", "abc", cuda="12.8")
    report = env.check(gpus=H100, driver=DRIVER)
    f = one(report, "torch.bad-version")
    assert f.title == f"torch's version is unreadable: 'abc' in {vp}"
    assert [a.command() for a in f.fix] == [f"pip install torch==2.8.0+cu128 --index-url {INDEX}/cu128 --force-reinstall --no-deps"]
    assert one(report, "driver.cuda-support").severity is Severity.OK  # the readable metadata version drives the rest


def test_garbage_in_metadata_only_is_named_with_its_location(env: Env) -> None:
    """The dist-info says '2.3.1+cu121.post3', version.py 2.3.1+cu121: the metadata is named; the build file's version is reinstalled."""
    _torch(env.site, "2.3.1+cu121.post3", "2.3.1+cu121")
    f = one(env.check(gpus=H100, driver=DRIVER), "torch.bad-version")
    assert f.title == f"torch's version is unreadable: '2.3.1+cu121.post3' in its metadata ({env.site})"
    assert [a.command() for a in f.fix] == [f"pip install torch==2.3.1+cu121 --index-url {INDEX}/cu121 --force-reinstall --no-deps"]


def test_version_py_missing_with_metadata_is_not_torch_not_installed(env: Env) -> None:
    """The dist-info is there, torch/version.py is not: the build file is missing, torch is not 'not installed'."""
    vp = _torch(env.site, "2.8.0+cu128", "2.8.0+cu128")
    vp.unlink()
    report = env.check(gpus=H100, driver=DRIVER)
    f = one(report, "torch.build-unreadable")
    assert f.severity is Severity.WARN and f.title.endswith("torch/version.py not found")
    assert "torch.missing" not in ids(report)


def test_version_py_missing_and_garbage_metadata_gives_no_pip_line(env: Env) -> None:
    """Nothing readable at all: a manual step, never `pip install torch==abc`."""
    _torch(env.site, "abc", "abc").unlink()
    report = env.check(gpus=H100, driver=DRIVER)
    f = one(report, "torch.build-unreadable")
    assert [type(a) for a in f.fix] == [Manual] and "'abc' is unreadable" in f.fix[0].description
    assert "torch.missing" not in ids(report)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_permission_denied_is_not_not_found(tmp_path: Path, what: str) -> None:
    """version.py (or the torch/ directory) this user may not read: 'permission denied', torch is installed."""
    vp = _torch(tmp_path / "site", "2.8.0+cu128", "2.8.0+cu128", cuda="12.8")
    target = vp if what == "file" else vp.parent
    make_unreadable(target)
    try:
        out = check_in_child(tmp_path, gpus=H100, driver=DRIVER)
    finally:
        restore(target)
    assert out["torch_build"]["path"] == str(vp)
    assert "permission denied" in out["torch_build"]["error"] and "not found" not in out["torch_build"]["error"]
    by_id = {f["id"]: f for f in out["findings"]}
    f = by_id["torch.build-unreadable"]
    assert f["severity"] == "warn" and "permission denied" in f["title"] and "not found" not in f["title"]
    assert f["evidence"]["torch (metadata)"] == "2.8.0+cu128"
    assert "torch.missing" not in by_id
    assert f["fix"][0]["command"] == f"pip install torch==2.8.0+cu128 --index-url {INDEX}/cu128 --force-reinstall --no-deps"


@pytest.mark.parametrize("raw, readable, variant", [
    ("2.8.0+cu128", True, "cu128"), ("2.13.0+cpu", True, "cpu"), ("2.5.1+rocm6.2", True, "rocm6.2"),
    ("2.1.0+cpu.cxx11.abi", True, "cpu-cxx11-abi"), ("2.5.0", True, None),
    ("2.3.0a0+40ec155e58.nv24.03", True, None),  # NGC containers: a source build, read as its release
    ("2.3.1+cu121.post3", False, None), ("2.3.1+cpux", False, None), ("abc", False, None), ("", False, None),
])
def test_torch_versions_and_their_variant(raw: str, readable: bool, variant) -> None:  # type: ignore[no-untyped-def]
    """A label that poses as a PyTorch variant and is none is garbage; other local labels are builds."""
    assert (parse_torch_version(raw) is not None) is readable
    assert torch_variant(raw) == variant


@pytest.mark.parametrize("raw", ["2.3.1+cu121.post3", "2.3.0a0+40ec155e58.nv24.03", "abc"])
def test_reinstall_of_a_build_no_index_has_is_manual(raw: str) -> None:
    """No index URL or pin from a label no PyTorch index serves."""
    a = reinstall("torch", raw, INDEX)
    assert isinstance(a, Manual) and a.command() is None


def test_reinstall_of_a_variant_comes_from_its_index() -> None:
    a = reinstall("torchvision", "0.23.0+cu128", INDEX)
    assert isinstance(a, PipInstall) and a.index_url == f"{INDEX}/cu128" and a.force_reinstall and a.no_deps
