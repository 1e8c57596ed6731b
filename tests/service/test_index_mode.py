"""The service's index mode: plans resolved by pip against an index for a stand-in of the client's environment.

End to end against a real uvicorn (`doctor serve --index-url`) and the resolver tests' local index: the S4 world's
request gets the same exact pins as the local planner on that venv; an index that is down, or a client whose
markers pip cannot evaluate from the server, gets an offline-matrix answer with a note saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import httpx
import pytest

from doctor.compat_matrix.loader import load_matrix
from doctor.inventory import gather
from doctor.resolve.options import IndexConfig, PlanOptions
from doctor.resolve.planner import plan_fixes
from doctor.resolve.plan import VERIFIED
from doctor.rules import run_rules
from doctor.service import index_mode
from doctor.service.answer import INDEX_MODE, MODE, compute
from doctor.service.schema import parse_request, request_document
from tests.resolve.index.venvs import pip_env
from tests.service.conftest import free_port, start_server, stop_server
from tests.service.worlds import recorded_doc

SERVER_ENV = {"PIP_CONFIG_FILE": os.devnull, "DOCTOR_GPUS": "none"}


def _post(url: str, doc: Dict[str, Any]) -> Dict[str, Any]:
    resp = httpx.post(url + "/v1/resolve", json=doc, timeout=120)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


@pytest.mark.slow
def test_s4_in_index_mode_gets_the_local_planners_pins(world: Any, local_index: Any, tmp_path: Path) -> None:
    """S4 (unsloth 2025.7.4 wants unsloth_zoo>=2025.7.5; zoo 2025.7.4 installed): the request the client sends for
    the real venv, answered by `doctor serve --index-url`, carries a verified plan with the same exact pins as the
    local `check --fix` planner run with pip against that venv (unsloth-zoo 2025.7.5, no protobuf downgrade)."""
    w = world("S4")
    facts = gather(python=str(w.python))
    matrix = load_matrix()
    findings, _ = run_rules(facts, matrix, skip=("environment", "caches", "cache_location"))
    local = plan_fixes(facts, matrix, findings, PlanOptions(
        python=str(w.python), indexes=IndexConfig(index_url=local_index.url("pypi"),
                                                  pip_env=tuple(sorted(pip_env().items()))), cache=False))
    assert local.verification.status == VERIFIED, local.verification
    local_pins = [(c.name, c.after) for c in local.changes]
    assert local_pins == [("unsloth-zoo", "2025.7.5")]

    srv = start_server(tmp_path, "--index-url", local_index.url("pypi"), env=SERVER_ENV)
    try:
        assert httpx.get(srv.url + "/healthz").json()["mode"] == INDEX_MODE
        doc = _post(srv.url, request_document(facts))
        assert doc["mode"] == INDEX_MODE and "resolved by pip" in doc["note"], doc["note"]
        plan = doc["plan"]
        assert plan["status"] == "verified" and plan["verified_against"] == "index", plan
        assert [(c["name"], c["after"]) for c in plan["changes"]] == local_pins
        assert all(c["index_url"] is None for c in plan["changes"])  # the server's own index is not handed out
        assert "actions" not in plan and "constraints" not in plan  # no command from the network
        assert any(k.startswith("unsloth.zoo-skew") for k in plan["verification"]["fixed"])
        # a wanted package: the planner's install path, for the same stand-in
        wanted = _post(srv.url, request_document(facts, ["unsloth-zoo>=2025.7.5"]))
        assert wanted["mode"] == INDEX_MODE and wanted["plan"]["status"] == "verified", wanted["plan"]
        assert [(c["name"], c["after"]) for c in wanted["plan"]["changes"]] == local_pins
    finally:
        stop_server(srv.proc)


@pytest.mark.slow
def test_index_down_falls_back_to_offline_matrix_with_a_note(tmp_path: Path) -> None:
    """Nothing listens at the index: the answer is offline-matrix (the matrix's plan, not verified) and says why;
    the fallback is not cached, so the next identical request tries the index again."""
    dead = f"http://127.0.0.1:{free_port()}/simple"
    srv = start_server(tmp_path, "--index-url", dead, env=SERVER_ENV)
    try:
        assert httpx.get(srv.url + "/v1/matrix").json()["mode"] == INDEX_MODE
        for _ in range(2):
            doc = _post(srv.url, recorded_doc("S4"))
            assert doc["mode"] == MODE, doc["mode"]
            assert doc["note"].startswith("index mode could not answer (the index " + dead) and "did not answer" in doc["note"]
            assert doc["plan"]["verified_against"] == "matrix" and doc["plan"]["status"] in ("unverified", "nothing-to-do")
            assert doc["pins"]["pins"]  # findings and pins as in offline-matrix mode
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'doctor_service_answer_cache_total{result="hit"} 0' in metrics, metrics
    finally:
        stop_server(srv.proc)


def test_markers_pip_cannot_see_fall_back_before_any_pip_run(local_index: Any) -> None:
    """A client on another Python: pip would evaluate markers for the server's interpreter (pypa/pip#11198), so
    index mode declines and says so; the answer is offline-matrix."""
    doc = recorded_doc("S4")
    doc["facts"]["python"]["version"] = "3.7.17"
    doc["facts"]["markers"].update(python_version="3.7", python_full_version="3.7.17")
    out = compute(parse_request(doc), load_matrix(), IndexConfig(index_url=local_index.url("pypi")))
    assert out["mode"] == MODE and "pypa/pip#11198" in out["note"] and "python_version '3.7'" in out["note"]
    doc = recorded_doc("S4")
    doc["facts"]["platform"].update(libc="musl", libc_version="1.2")
    out = compute(parse_request(doc), load_matrix(), IndexConfig(index_url=local_index.url("pypi")))
    assert out["mode"] == MODE and "Linux glibc clients only" in out["note"]


def test_an_index_that_errors_falls_back(local_index: Any) -> None:
    """An index whose root answers an error status is as good as down."""
    url = f"http://127.0.0.1:{local_index.port}/no-such-index/simple"
    out = compute(parse_request(recorded_doc("S4")), load_matrix(), IndexConfig(index_url=url))
    assert out["mode"] == MODE and "answered HTTP 404" in out["note"], out["note"]


def test_pip_tags_for_the_client() -> None:
    """The client's wheel tags as pip's environment options: perennial manylinux tags down to 2_17, then linux."""
    facts = parse_request(recorded_doc("S4")).facts
    env = dict(index_mode.pip_tags_env(facts._replace(platform=facts.platform._replace(libc_version="2.28"))))
    assert env["PIP_PYTHON_VERSION"] == "3.11" and env["PIP_IMPLEMENTATION"] == "cp" and env["PIP_ABI"] == "cp311"
    plats = env["PIP_PLATFORM"].split()
    assert plats[0] == "manylinux_2_28_x86_64" and plats[-3:] == ["manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                                                  "linux_x86_64"]
    env = dict(index_mode.pip_tags_env(facts._replace(platform=facts.platform._replace(libc_version=None))))
    assert env["PIP_PLATFORM"] == "manylinux_2_17_x86_64 manylinux2014_x86_64 linux_x86_64"


def test_the_stand_in_is_what_pip_sees_as_installed(tmp_path: Path) -> None:
    """The stand-in venv's installed distributions are the request's (pip list through its interpreter); a version
    pip could not read is left out."""
    from doctor.facts import Distribution

    facts = parse_request(recorded_doc("S4")).facts
    dists = dict(facts.distributions)
    dists["weird"] = Distribution("weird", "not a version")
    python = index_mode.stand_in(facts._replace(distributions=dists), tmp_path / "env")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "list", "--format", "json",
                          "--disable-pip-version-check"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert out.returncode == 0, out.stderr
    seen = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out.stdout)}
    assert seen == {n: d.version for n, d in facts.distributions.items()}


def test_public_index() -> None:
    """Index URLs in an answer: the server's default index becomes None, its PyTorch mirror the matrix's base."""
    assert index_mode.public_index(None, "http://i/simple", None, "https://download.pytorch.org/whl") is None
    assert index_mode.public_index("http://i/simple/", "http://i/simple", None, "https://x/whl") is None
    assert index_mode.public_index("http://m/whl/cu121", "http://i/simple", "http://m/whl",
                                   "https://download.pytorch.org/whl") == "https://download.pytorch.org/whl/cu121"
    assert index_mode.public_index("http://elsewhere/simple", "http://i/simple", None, "https://x/whl") is None


@pytest.mark.parametrize("url, why", [("ftp://example.org/simple", "expected an http(s) URL"),
                                      ("https://user:secret@example.org/simple", "credentials in the URL"),
                                      ("not a url", "expected an http(s) URL")])
def test_a_bad_index_url_is_bad_input(url: str, why: str) -> None:
    """`doctor serve --index-url` with something that is not an index URL: exit 3 and one line, nothing served."""
    out = subprocess.run([sys.executable, "-m", "doctor", "serve", "--port", "0", "--index-url", url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and why in out.stderr, (out.returncode, out.stderr)
    env = {**os.environ, "DOCTOR_INDEX_URL": url}
    out = subprocess.run([sys.executable, "-m", "doctor", "serve", "--port", "0"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 3 and "DOCTOR_INDEX_URL" in out.stderr, (out.returncode, out.stderr)


def test_no_room_for_the_stand_in_falls_back(local_index: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in cannot be made (its temporary directory is gone): offline-matrix, and the note says why."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    out = compute(parse_request(recorded_doc("S4")), load_matrix(), IndexConfig(index_url=local_index.url("pypi")))
    assert out["mode"] == MODE and "stand-in environment could not be made" in out["note"], out["note"]


def test_index_answers_are_cached_for_an_hour_only(local_index: Any) -> None:
    """An index-mode answer is reused for identical bytes, but not past its TTL: the index moves on."""
    from doctor.service.answer import INDEX_ANSWER_TTL, Answerer

    a = Answerer(index=IndexConfig(index_url=local_index.url("pypi"), pip_env=(("PIP_CONFIG_FILE", os.devnull),)))
    assert a.mode == INDEX_MODE and a.ttl == INDEX_ANSWER_TTL
    body = json.dumps(recorded_doc("S4")).encode()
    key, hit = a.cached(body)
    assert hit is None
    first = a.answer(key, parse_request(json.loads(body)), body)
    assert json.loads(first)["mode"] == INDEX_MODE
    assert a.cached(body)[1] == first and a.hits == 1
    a.ttl = 0.0
    assert a.cached(body)[1] is None and a.hits == 1


def test_plan_false_answers_from_the_matrix_without_pip(local_index: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`doctor check` and `doctor pin` send plan: false: even an index-mode server answers at matrix speed (no
    probe of the index, no pip), and the note says why the plan is the matrix's."""
    def no_index(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the index was contacted for a request without a plan")

    monkeypatch.setattr(index_mode, "probe", no_index)
    monkeypatch.setattr(index_mode, "stand_in", no_index)
    doc = recorded_doc("S4")
    doc["plan"] = False
    out = compute(parse_request(doc), load_matrix(), IndexConfig(index_url=local_index.url("pypi")))
    assert out["mode"] == MODE and out["note"].startswith("no plan asked for (plan: false)")
    assert out["pins"]["pins"] and out["plan"]["verified_against"] == "matrix"


@pytest.mark.parametrize("value", ["false", 0, 1, None, [], {}])
def test_plan_must_be_a_boolean(value: Any) -> None:
    """A `plan` that is not true or false is a 422 reason naming the field, like every other field."""
    from doctor.service.schema import RequestError

    doc = recorded_doc("S1")
    doc["plan"] = value
    with pytest.raises(RequestError) as err:
        parse_request(doc)
    assert "plan" in str(err.value)


def test_the_client_asks_for_a_plan_only_when_it_plans() -> None:
    """The request document says plan: false only when asked (check without --fix, pin); a plan is the default."""
    facts = parse_request(recorded_doc("S1")).facts
    assert "plan" not in request_document(facts)
    assert request_document(facts, plan=False)["plan"] is False
    assert parse_request(request_document(facts, plan=False)).plan is False
