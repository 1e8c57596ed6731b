"""Distribution scanning over real site-packages folders, broken ones included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from doctor.inventory.distributions import (
    egg_requires_to_dist,
    name_version_from_dirname,
    parse_metadata_header,
    read_distribution,
    scan_distributions,
)
from tests.inventory.builders import is_root, write_dist


def scan(*paths: Path):
    return scan_distributions([str(p) for p in paths])


def test_plain_distribution(site: Path) -> None:
    write_dist(site, "Unsloth_Zoo", "2026.10.9", requires=["torch>=2.4", 'peft; extra == "x"'])
    result = scan(site)
    dist = result.distributions["unsloth-zoo"]
    assert dist.version == "2026.10.9"
    assert dist.display_name == "Unsloth_Zoo"
    assert dist.location == str(site)
    assert dist.installer == "pip"
    assert dist.requires == ("torch>=2.4", 'peft; extra == "x"')
    assert dist.error is None and dist.shadowed == () and dist.direct_url is None
    assert result.notes == ()


def test_names_are_sorted_and_canonical(site: Path) -> None:
    for name in ("Zeta.Pkg", "alpha_pkg", "Mid-Pkg"):
        write_dist(site, name, "1.0")
    assert list(scan(site).distributions) == ["alpha-pkg", "mid-pkg", "zeta-pkg"]


def test_missing_metadata_falls_back_to_folder_name(site: Path) -> None:
    write_dist(site, "foo_bar", "1.2.3", metadata=None)
    dist = scan(site).distributions["foo-bar"]
    assert dist.version == "1.2.3"
    assert "METADATA: missing" in (dist.error or "")


def test_binary_garbage_metadata(site: Path) -> None:
    write_dist(site, "garbage", "0.1", metadata=bytes(range(256)) * 40)
    dist = scan(site).distributions["garbage"]
    assert dist.version == "0.1"
    assert "not valid UTF-8" in (dist.error or "")


def test_garbage_without_any_name_is_skipped_with_a_note(site: Path) -> None:
    write_dist(site, "x", "1", metadata=b"\xff\xfe\x00garbage", dirname=".dist-info")
    result = scan(site)
    assert result.distributions == {}
    assert any(".dist-info" in note and "skipped" in note for note in result.notes)


def test_metadata_without_name_or_version(site: Path) -> None:
    write_dist(site, "nameless", "3.0", metadata="Metadata-Version: 2.1\nSummary: no name here\n\n")
    dist = scan(site).distributions["nameless"]
    assert dist.version == "3.0"
    assert "no Name" in dist.error and "no Version" in dist.error


def test_no_version_anywhere_gives_empty_version(site: Path) -> None:
    write_dist(site, "nover", "", metadata="Name: nover\n\n", dirname="nover.dist-info")
    dist = scan(site).distributions["nover"]
    assert dist.version == ""
    assert "no Version" in dist.error


@pytest.mark.parametrize(
    "version, valid",
    [("abc", False), ("2.3.1+cu121.post3", True), ("1.0.0-beta-garbage!", False), ("2.11.0+cu130", True)],
)
def test_garbage_versions_keep_the_raw_string(site: Path, version: str, valid: bool) -> None:
    write_dist(site, "weird", version, dirname="weird-x.dist-info")
    dist = scan(site).distributions["weird"]
    assert dist.version == version
    if valid:
        assert dist.error is None
    else:
        assert "not PEP 440" in dist.error


def test_metadata_that_is_a_directory(site: Path) -> None:
    info = write_dist(site, "dirmeta", "1.0", metadata=None)
    (info / "METADATA").mkdir()
    dist = scan(site).distributions["dirmeta"]
    assert "not a regular file" in dist.error


def test_metadata_dangling_symlink(site: Path) -> None:
    info = write_dist(site, "dangling", "1.0", metadata=None)
    os.symlink(str(info / "nowhere"), str(info / "METADATA"))
    dist = scan(site).distributions["dangling"]
    assert dist.version == "1.0" and "METADATA: missing" in dist.error


def test_dist_info_that_is_a_dangling_symlink(site: Path) -> None:
    os.symlink(str(site / "gone"), str(site / "ghost-9.9.dist-info"))
    dist = scan(site).distributions["ghost"]
    assert dist.version == "9.9" and dist.error


def test_dist_info_that_is_a_file(site: Path) -> None:
    (site / "flat-1.0.dist-info").write_text("Name: flat\nVersion: 1.0\n")
    dist = scan(site).distributions["flat"]
    assert dist.error  # a .dist-info must be a folder


@pytest.mark.skipif(is_root(), reason="root reads through chmod 000")
def test_unreadable_dist_info_folder(site: Path) -> None:
    info = write_dist(site, "locked", "1.0")
    info.chmod(0)
    try:
        dist = scan(site).distributions["locked"]
        assert "permission denied" in dist.error
    finally:
        info.chmod(0o755)


@pytest.mark.skipif(is_root(), reason="root reads through chmod 000")
def test_unreadable_path_entry_is_a_note(tmp_path: Path) -> None:
    locked = tmp_path / "locked-site"
    write_dist(locked, "hidden", "1.0")
    locked.chmod(0)
    try:
        result = scan(locked)
        assert result.distributions == {}
        assert any("permission denied" in n for n in result.notes)
    finally:
        locked.chmod(0o755)


def test_broken_direct_url(site: Path) -> None:
    write_dist(site, "brokenurl", "1.0", direct_url="{not json")
    write_dist(site, "listurl", "1.0", direct_url="[1, 2]")
    write_dist(site, "deepurl", "1.0", direct_url="[" * 200_000)  # deeper than json's decoder recurses
    dists = scan(site).distributions
    assert dists["brokenurl"].direct_url is None and "direct_url.json is not valid JSON" in dists["brokenurl"].error
    assert dists["listurl"].direct_url is None and "not a JSON object" in dists["listurl"].error
    assert dists["deepurl"].direct_url is None and "nested too deeply" in dists["deepurl"].error


def test_editable_direct_url(site: Path) -> None:
    url = {"url": "file:///src/unsloth", "dir_info": {"editable": True}}
    write_dist(site, "unsloth", "2026.10.9", direct_url=url, installer="uv")
    dist = scan(site).distributions["unsloth"]
    assert dist.direct_url == url and dist.editable and dist.installer == "uv" and dist.error is None


def test_installer_blank_is_none(site: Path) -> None:
    write_dist(site, "blank", "1.0", installer="   ")
    assert scan(site).distributions["blank"].installer is None


def test_shadowed_copies_across_path_entries(tmp_path: Path) -> None:
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dist(first, "transformers", "5.17.0")
    write_dist(second, "transformers", "4.57.0")
    write_dist(third, "Transformers", "4.0.0")
    write_dist(second, "peft", "0.21.0")
    dists = scan(first, second, third).distributions
    assert dists["transformers"].version == "5.17.0"
    assert dists["transformers"].location == str(first)
    assert dists["transformers"].shadowed == (("4.57.0", str(second)), ("4.0.0", str(third)))
    assert dists["peft"].shadowed == ()


def test_same_folder_twice_is_not_shadowing(tmp_path: Path) -> None:
    real = tmp_path / "lib" / "site-packages"
    write_dist(real, "trl", "1.15.0")
    alias = tmp_path / "lib64"
    os.symlink(str(tmp_path / "lib"), str(alias))
    dists = scan(real, real, alias / "site-packages").distributions
    assert dists["trl"].shadowed == ()


def test_two_versions_in_one_folder(site: Path) -> None:
    write_dist(site, "accelerate", "1.0.0")
    write_dist(site, "accelerate", "1.1.0")
    dist = scan(site).distributions["accelerate"]
    assert dist.version in {"1.0.0", "1.1.0"}
    assert len(dist.shadowed) == 1 and dist.shadowed[0][1] == str(site)


def test_header_parsing_continuations_crlf_and_body(site: Path) -> None:
    metadata = (
        "Metadata-Version: 2.1\r\n"
        "Name: folded\r\n"
        "Version: 1.0\r\n"
        "Requires-Dist: torch>=2.4;\r\n"
        "  python_version >= '3.9'\r\n"
        "Summary: x\r\n"
        "\r\n"
        "Name: evil\r\nVersion: 666\r\n"
    )
    info = write_dist(site, "folded", "1.0", metadata=metadata.encode() + b"\xff\xfe body bytes that are not UTF-8")
    dist = scan(site).distributions["folded"]
    assert dist.version == "1.0" and dist.error is None
    assert dist.requires == ("torch>=2.4; python_version >= '3.9'",)
    assert info.exists()


def test_huge_body_is_not_a_problem(site: Path) -> None:
    write_dist(site, "big", "1.0", body="x" * (8 * 1024 * 1024))
    assert scan(site).distributions["big"].error is None


def test_header_without_blank_line_and_garbage_lines() -> None:
    fields = parse_metadata_header("\n\nName: a\nthis is not a header\nVersion: 1\n continuation\nBad Key: x\n")
    assert fields["name"] == ["a"]
    assert fields["version"] == ["1 continuation"]
    assert "bad key" not in fields


@pytest.mark.parametrize(
    "base, expected",
    [
        ("foo_bar-1.0.dist-info", ("foo_bar", "1.0")),
        ("foo_bar-1.0-py3.9.egg-info", ("foo_bar", "1.0")),
        ("foo_bar-1.0-py3.11-linux-x86_64.egg-info", ("foo_bar", "1.0")),
        ("foo_bar.egg-info", ("foo_bar", None)),
        (".dist-info", (None, None)),
        ("-.dist-info", (None, None)),
    ],
)
def test_name_version_from_dirname(base: str, expected) -> None:
    assert name_version_from_dirname(base) == expected


def test_egg_info_folder_and_requires_txt(site: Path) -> None:
    egg = site / "legacy_pkg-0.5-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy-pkg\nVersion: 0.5\n\n")
    (egg / "requires.txt").write_text("numpy>=1.20\n\n[cuda]\ncupy\n\n[:python_version < \"3.10\"]\ntomli\n")
    dist = scan(site).distributions["legacy-pkg"]
    assert dist.version == "0.5" and dist.error is None
    assert dist.requires == ("numpy>=1.20", 'cupy; extra == "cuda"', 'tomli; python_version < "3.10"')


def test_egg_info_single_file(site: Path) -> None:
    (site / "oldstyle-2.0-py3.11.egg-info").write_text("Metadata-Version: 1.0\nName: oldstyle\nVersion: 2.0\n\nbody\n")
    dist = scan(site).distributions["oldstyle"]
    assert dist.version == "2.0" and dist.error is None and dist.installer is None


def test_egg_requires_extra_with_marker() -> None:
    lines = list(egg_requires_to_dist("[gpu:sys_platform == \"linux\"]\ntriton\n# comment\n"))
    assert lines == ['triton; (sys_platform == "linux") and extra == "gpu"']


def test_odd_path_entries_never_raise(tmp_path: Path, site: Path) -> None:
    write_dist(site, "ok", "1.0")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    zip_like = tmp_path / "not-a.zip"
    zip_like.write_bytes(b"PK\x03\x04 garbage")
    paths = [str(tmp_path / "missing"), str(a_file), str(zip_like), str(site), b"bytes-entry", None, ""]
    result = scan_distributions(paths)  # type: ignore[arg-type]
    assert "ok" in result.distributions


def test_read_distribution_on_missing_folder_never_raises(tmp_path: Path) -> None:
    dist, note = read_distribution(str(tmp_path / "absent-1.0.dist-info"))
    assert dist is not None and dist.name == "absent" and "METADATA: missing" in dist.error and note is None


def test_whitespace_only_continuation_does_not_end_the_header(site: Path) -> None:
    # scipy's METADATA folds its license into the header with lines holding only spaces.
    metadata = (
        "Metadata-Version: 2.1\nName: scipy\nVersion: 1.17.1\n"
        "License: Copyright (c) 2001-2002 Enthought, Inc.\n         All rights reserved.\n         \n"
        "         Redistribution and use ...\n"
        "Requires-Dist: numpy<2.7,>=1.26.4\n\nbody\n"
    )
    write_dist(site, "scipy", "1.17.1", metadata=metadata)
    assert scan(site).distributions["scipy"].requires == ("numpy<2.7,>=1.26.4",)


def test_agrees_with_importlib_metadata_on_this_interpreter() -> None:
    """Every distribution really installed here: same name, version and requirements as importlib's parser."""
    import importlib.metadata as md
    import sys

    paths = [p for p in sys.path if os.path.isdir(p or ".")]
    result = scan_distributions(paths)
    compared = 0
    for ilm in md.distributions(path=paths):
        info = getattr(ilm, "_path", None)
        if info is None:
            continue
        ours, _ = read_distribution(os.fspath(info))
        assert ours is not None
        assert (ours.display_name, ours.version, ours.requires) == (
            ilm.metadata["Name"],
            ilm.version,
            tuple(ilm.requires or ()),
        ), info
        compared += 1
    assert compared >= 1 and len(result.distributions) >= 1
