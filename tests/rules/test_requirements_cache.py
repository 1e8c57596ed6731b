"""The requirement rule's caches: packaging's parse per Requires-Dist line, the lines that apply per marker
environment, and "is this line met by this installed version". Same findings as parsing afresh, whatever
the order in which environments come (the service answers one after another from one process)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement

from doctor.compat_matrix.loader import load_matrix
from doctor.compat_matrix.model import Matrix
from doctor.facts import Distribution, Facts, PlatformInfo, PythonInfo
from doctor.findings import Finding
from doctor.rules.requirements import check_requirements, parse_line, parsed_requires, requirement_on
from tests.service.worlds import recorded_doc

PY38 = {"python_version": "3.8", "python_full_version": "3.8.18", "sys_platform": "linux", "platform_system": "Linux"}
PY311 = {**PY38, "python_version": "3.11", "python_full_version": "3.11.9"}


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix()


def facts(dists: Sequence[Distribution], markers: Optional[Dict[str, str]] = None) -> Facts:
    return Facts(PythonInfo("3.11.9", "CPython", "", "", ""), PlatformInfo("Linux", "x86_64", ""),
                 distributions=MappingProxyType({d.name: d for d in dists}), markers=MappingProxyType(markers or {}))


def fresh(lines: Sequence[str], markers: Optional[Dict[str, str]]) -> List[Tuple[str, str]]:
    """What parsed_requires keeps, parsed afresh by packaging: (line, normalised requirement)."""
    env = {**(markers or {k: str(v) for k, v in default_environment().items()}), "extra": ""}
    out = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate(env):
            out.append((line, str(req)))
    return out


def unmet(findings: List[Finding]) -> List[str]:
    return sorted(f.subject for f in findings if f.id in ("requires.unmet", "requires.missing"))


def test_parse_is_shared_and_garbage_is_none() -> None:
    assert parse_line("accelerate>=0.21.0") is parse_line("accelerate>=0.21.0")
    assert str(parse_line("accelerate>=0.21.0")) == "accelerate>=0.21.0"
    assert parse_line("torch>==") is None and parse_line("") is None


@pytest.mark.parametrize("markers", [PY311, None], ids=["client-markers", "this-interpreter"])
def test_recorded_stack_matches_a_fresh_parse(markers: Optional[Dict[str, str]]) -> None:
    for d in recorded_doc("S4")["facts"]["distributions"]:
        dist = Distribution(d["name"], d["version"], requires=tuple(d["requires"]))
        for _ in range(2):  # the second call is answered from the cache
            assert [(line, str(req)) for line, req in parsed_requires(dist, markers)] == fresh(d["requires"], markers)


def test_unparseable_lines_are_skipped() -> None:
    dist = Distribution("peft", "0.10.0", requires=("torch>==", "accelerate>=0.21.0", "not a requirement!"))
    assert [line for line, _ in parsed_requires(dist, PY311)] == ["accelerate>=0.21.0"]
    assert requirement_on(dist, "accelerate") == ">=0.21.0" and requirement_on(dist, "torch") is None


def test_marker_environments_do_not_share_answers(matrix: Matrix) -> None:
    lines = ("accelerate>=0.21.0", 'tomli>=2; python_version < "3.10"')
    peft = Distribution("peft", "0.10.0", requires=lines)
    accelerate = Distribution("accelerate", "0.30.0")
    for markers, expected in ((PY38, ["peft"]), (PY311, []), (PY38, ["peft"])):
        assert [line for line, _ in parsed_requires(peft, markers)] == list(lines if markers is PY38 else lines[:1])
        assert unmet(check_requirements(facts([peft, accelerate], markers), matrix)) == expected  # tomli missing on 3.8


@pytest.mark.parametrize("installed, expected", [
    ("0.20.0", ["peft->accelerate"]), ("0.30.0", []), ("0.20.0", ["peft->accelerate"]),  # met, unmet, met again
    ("abc", []),  # an unreadable version is no evidence of a conflict
])
def test_same_line_other_installed_version(matrix: Matrix, installed: str, expected: List[str]) -> None:
    peft = Distribution("peft", "0.10.0", requires=("accelerate>=0.21.0", "numpy"))
    found = check_requirements(facts([peft, Distribution("accelerate", installed), Distribution("numpy", "1.0")], PY311),
                               matrix)
    assert unmet(found) == expected
    if expected:
        f = next(f for f in found if f.id == "requires.unmet")
        assert dict(f.evidence)["installed"] == f"accelerate {installed}" and [a.command() for a in f.fix] == \
            ["pip install 'accelerate>=0.21.0' --no-deps"]


def test_spelling_of_a_requirement_name_is_canonical(matrix: Matrix) -> None:
    peft = Distribution("peft", "0.10.0", requires=("Accelerate_Lib>=2", "accelerate.lib>=2"))
    found = check_requirements(facts([peft, Distribution("accelerate-lib", "1.0")], PY311), matrix)
    assert [f.subject for f in found if f.id == "requires.unmet"] == ["peft->accelerate-lib"] * 2


@pytest.mark.parametrize("line", [
    'pytest; extra == "test"', "pytest ; extra=='test'", 'a[b]>=1; extra == "x-y"', 'a;extra=="dev"  ',
    # not extra-only: parsed and evaluated as usual
    'a; extra == ""', 'a; extra === "x"', 'a; python_version < "4" or extra == "x"', 'a; (extra == "x")',
    'a; "x" == extra', 'a', 'a; extra == "x\'', 'a; extra == "x" and os_name == "posix"', "a; extra == 'x' 'y'",
])
def test_extra_only_lines_are_skipped_exactly_when_they_never_apply(line: str) -> None:
    """The fast path agrees with packaging: an extra-only line is one whose marker is false with extra == ""."""
    from packaging.requirements import InvalidRequirement, Requirement

    from doctor.rules.requirements import extra_only, marker_applies

    try:
        req = Requirement(line)
    except InvalidRequirement:
        assert not extra_only(line)
        return
    applies = marker_applies(req.marker, None)
    assert not (extra_only(line) and applies)  # never skips a line that applies
    if extra_only(line):
        assert req.marker is not None and str(req.marker).startswith("extra ==")


def test_extra_only_recognises_the_common_spellings() -> None:
    """The lines metadata tools write for extras take the fast path (else it would save nothing)."""
    from doctor.rules.requirements import extra_only

    assert all(extra_only(x) for x in ('pytest; extra == "test"', "pytest ; extra=='test'", 'a[b]>=1; extra == "x-y"'))
