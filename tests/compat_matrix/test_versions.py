"""Version, CUDA and compute-capability helpers: garbage in never means a traceback."""

from __future__ import annotations

import pytest
from packaging.version import Version

from doctor.compat_matrix.versions import (
    cuda_from_int,
    cuda_from_tag,
    cuda_tag,
    format_cc,
    minor_of,
    parse_cc,
    parse_version,
    release_of,
)


@pytest.mark.parametrize("raw", ["abc", "", "   ", None, 123, 1.5, [], "2.3.1 cu121", "2.x", "torch==2.3.1"])
def test_parse_version_garbage_is_none(raw: object) -> None:
    assert parse_version(raw) is None


def test_parse_version_local_label_with_post_is_valid() -> None:
    v = parse_version("2.3.1+cu121.post3")
    assert v is not None
    assert v.local == "cu121.post3" and v.release == (2, 3, 1) and v.post is None
    assert release_of(v) == Version("2.3.1") and minor_of(v) == "2.3"


def test_parse_version_strips_and_passes_versions() -> None:
    assert parse_version(" 2.11.0+cu130\n") == Version("2.11.0+cu130")
    v = Version("1.0")
    assert parse_version(v) is v


@pytest.mark.parametrize(
    "raw, release",
    [("2.11.0+cu130", "2.11.0"), ("2.12.0.dev20260101+cu130", "2.12.0"), ("2.11.0rc1", "2.11.0"),
     ("0.0.29.post1", "0.0.29"), ("2.3", "2.3"), ("1!2.0.1", "1!2.0.1"), (Version("2.5.1+cpu"), "2.5.1")],
)
def test_release_of(raw: object, release: str) -> None:
    assert str(release_of(raw)) == release  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, minor", [("2.11.0+cu130", "2.11"), ("2", "2.0"), ("2.3.1+cu121.post3", "2.3"), (Version("10.1.2"), "10.1")])
def test_minor_of(raw: object, minor: str) -> None:
    assert minor_of(raw) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize("fn", [release_of, minor_of])
@pytest.mark.parametrize("raw", ["abc", "", None])
def test_release_and_minor_reject_garbage(fn, raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        fn(raw)


@pytest.mark.parametrize("cuda, tag", [("13.0", "cu130"), ("12.8", "cu128"), ("11.8", "cu118"), ("12.8.1", "cu128"), (" 12.6 ", "cu126"), ("cu126", "cu126")])
def test_cuda_tag(cuda: str, tag: str) -> None:
    assert cuda_tag(cuda) == tag


@pytest.mark.parametrize("raw", ["", "abc", "12", "12.x", None, 12.8])
def test_cuda_tag_garbage(raw: object) -> None:
    with pytest.raises(ValueError):
        cuda_tag(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("tag, cuda", [("cu128", "12.8"), ("cu130", "13.0"), ("cu118", "11.8"), ("cu1210", "12.10"), ("cpu", None), ("", None), ("cu9", None), (None, None)])
def test_cuda_from_tag(tag: object, cuda: object) -> None:
    assert cuda_from_tag(tag) == cuda  # type: ignore[arg-type]


@pytest.mark.parametrize("value, cuda", [(1208, "12.8"), (1300, "13.0"), (1108, "11.8"), (12080, "12.8"), (13000, "13.0"), ("1208", "12.8")])
def test_cuda_from_int(value: object, cuda: str) -> None:
    assert cuda_from_int(value) == cuda  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, True, "abc", "", None, 12.8])
def test_cuda_from_int_garbage(value: object) -> None:
    with pytest.raises(ValueError):
        cuda_from_int(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, cc", [("8.6", (8, 6)), ("12.0", (12, 0)), ("10.0", (10, 0)), (" 7.5 ", (7, 5))])
def test_parse_cc(raw: str, cc: tuple) -> None:
    assert parse_cc(raw) == cc
    assert format_cc(cc) == raw.strip()


@pytest.mark.parametrize("raw", ["9", "sm_86", "8.6+PTX", "", "8.", ".6", "a.b", None, 8.6])
def test_parse_cc_garbage(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_cc(raw)  # type: ignore[arg-type]
