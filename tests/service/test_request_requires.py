"""Requires-Dist lines in a request: checked and filtered per distribution (cached on the lines and the markers),
with the same result as line by line, whatever came before."""

from __future__ import annotations

import copy
from typing import Any, Dict, List

import pytest

from doctor.service.schema import RequestError, parse_request
from tests.service.worlds import recorded_doc

LINES = ["numpy>=1.17", 'tomli>=2; python_version < "3.10"', 'bitsandbytes; extra == "quant"', "packaging"]


def doc(python_version: str, lines: List[Any]) -> Dict[str, Any]:
    d = recorded_doc("S1")
    d["facts"]["markers"]["python_version"] = python_version
    d["facts"]["distributions"][0]["requires"] = lines
    return d


def kept(d: Dict[str, Any]) -> List[str]:
    facts = parse_request(d).facts
    return list(facts.distributions[d["facts"]["distributions"][0]["name"]].requires)


def test_the_markers_decide_which_lines_are_kept() -> None:
    for _ in range(2):  # again: from the cache
        assert kept(doc("3.8", LINES)) == ["numpy>=1.17", 'tomli>=2; python_version < "3.10"', "packaging"]
        assert kept(doc("3.11", LINES)) == ["numpy>=1.17", "packaging"]  # extras' lines never apply


def test_recorded_stack_keeps_the_same_lines_twice() -> None:
    d = recorded_doc("S4")
    first = parse_request(d).facts
    again = parse_request(copy.deepcopy(d)).facts
    assert {n: x.requires for n, x in first.distributions.items()} == {n: x.requires for n, x in again.distributions.items()}
    assert sum(len(x.requires) for x in first.distributions.values()) < sum(len(x["requires"]) for x in d["facts"]["distributions"])


@pytest.mark.parametrize("bad, index", [("torch>==", 1), (7, 1), ({"a": 1}, 2), ("foo @ file:///home/alice/foo", 0)])
def test_a_bad_line_is_refused_after_good_ones_were_cached(bad: Any, index: int) -> None:
    good = LINES[:index]
    assert kept(doc("3.11", LINES)) == ["numpy>=1.17", "packaging"]  # the good lines are in the caches now
    for _ in range(2):  # an error is never remembered as an answer
        with pytest.raises(RequestError) as exc:
            parse_request(doc("3.11", good + [bad] + LINES[index:]))
        assert exc.value.where == f"facts.distributions[0].requires[{index}]"
