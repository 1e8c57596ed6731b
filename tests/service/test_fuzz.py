"""Property-based fuzzing of the live API from its own /openapi.json (schemathesis): zero server errors.

Schemathesis generates requests the schema admits (positive) and requests it does not (negative: wrong
types, missing and extra fields); whatever comes, the service answers below 500. Hypothesis drives each
operation's strategy directly (schemathesis' own pytest plugin does not run under this pytest), bounded to a
few dozen examples per operation and mode, well under 60 s in all.
"""

from __future__ import annotations

from typing import Any, List

import pytest
from hypothesis import HealthCheck, given, settings

from tests.service.conftest import Server

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 60


def _operations(url: str) -> List[Any]:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(service: Server, mode: str) -> None:
    operations = _operations(service.url)
    assert {op.path for op in operations} >= {"/v1/resolve", "/v1/matrix", "/healthz", "/metrics"}
    seen: List[int] = []
    for op in operations:
        if mode == "negative" and op.method.upper() != "POST":
            continue  # an operation without parameters or body has nothing to make invalid
        @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def run(case: Any) -> None:
            response = case.call(base_url=service.url, timeout=30)
            seen.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])

        run()
    assert seen and max(seen) < 500
    if mode == "negative":
        assert 422 in seen  # the fuzzer did reach the validation
