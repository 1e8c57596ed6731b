"""`doctor serve` end to end: a real uvicorn on 127.0.0.1 (conftest), every endpoint, every bad input.

The contract under test: answers are 2xx/304/401/404/405/413/422, never 500; a 422 says which field and why;
a document carrying a path, a hostname, a user name or an environment value is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import httpx
import pytest

from tests.service.conftest import Server, start_server, stop_server
from tests.service.worlds import A100, minimal_doc, recorded_doc


def post(service: Server, doc: Any = None, raw: bytes = b"", headers: Dict[str, str] = {}) -> httpx.Response:
    body = raw if doc is None else json.dumps(doc).encode()
    return httpx.post(service.url + "/v1/resolve", content=body, headers={"Content-Type": "application/json", **headers},
                      timeout=30)


def test_healthz(service: Server) -> None:
    r = httpx.get(service.url + "/healthz", timeout=10)
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["mode"] == "offline-matrix"


def test_resolve_recorded_unsloth_stack(service: Server) -> None:
    r = post(service, recorded_doc("S4"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["mode"] == "offline-matrix" and "no index access" in doc["note"]
    ids = {f["id"] for f in doc["findings"]}
    assert "unsloth.zoo-skew" in ids
    assert all(a.keys() == {"kind", "description"} for f in doc["findings"] for a in f["fix"])  # no commands travel
    assert doc["plan"]["verified_against"] == "matrix" and doc["plan"]["status"] == "unverified"
    assert [(c["name"], c["after"]) for c in doc["plan"]["changes"]] == [("unsloth-zoo", "2025.7.5")]
    assert any(p["name"] == "torch" and p["specifier"].startswith("===2.4.0") for p in doc["pins"]["pins"])
    assert "prefix" not in doc["pins"] and "python" not in doc["pins"]


def test_resolve_xformers_built_for_another_torch(service: Server) -> None:
    doc = post(service, recorded_doc("S1")).json()
    ids = {f["id"] for f in doc["findings"] if f["severity"] == "error"}
    assert {"xformers.torch-mismatch", "triton.torch-mismatch"} <= ids
    assert ("xformers", "0.0.27.post2") in [(c["name"], c["after"]) for c in doc["plan"]["changes"]]


def test_resolve_with_packages_wanted(service: Server) -> None:
    doc = post(service, recorded_doc("S1", packages=["xformers"])).json()
    assert [p["name"] for p in doc["pins"]["pins"]][:1] == ["torch"]
    assert ("xformers", "0.0.27.post2") in [(c["name"], c["after"]) for c in doc["plan"]["changes"]]


def test_same_bytes_same_answer_from_the_cache(service: Server) -> None:
    body = json.dumps(recorded_doc("B1")).encode()
    a, b = post(service, raw=body), post(service, raw=body)
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert 'doctor_service_answer_cache_total{result="hit"}' in httpx.get(service.url + "/metrics").text


def _with(path: str, value: Any) -> Dict[str, Any]:
    """recorded S1 with one field set (a dotted path into the document; [0] indexes a list)."""
    doc = recorded_doc("S1")
    node: Any = doc
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p[1:-1])] if p.startswith("[") else node[p]
    node[parts[-1]] = value
    return doc


@pytest.mark.parametrize("path, value, field", [
    ("facts.executable", "/usr/bin/python3", "facts.executable"),
    ("facts.prefix", "/home/alice/venv", "facts.prefix"),
    ("facts.env", {"HF_TOKEN": "hf_x"}, "facts.env"),
    ("facts.cwd", "/home/alice", "facts.cwd"),
    ("facts.hostname", "gpu-node-17", "facts.hostname"),
    ("facts.active_environment", {"path": "/home/alice/venv"}, "facts.active_environment"),
    ("facts.markers.platform_node", "gpu-node-17", "facts.markers.platform_node"),
    ("facts.python.executable", "/usr/bin/python3", "facts.python.executable"),
    ("facts.distributions.[0].location", "/home/alice/venv/lib/python3.11/site-packages",
     "facts.distributions[0].location"),
    ("facts.distributions.[0].direct_url", {"url": "file:///home/alice/src"}, "facts.distributions[0].direct_url"),
    ("facts.user", "alice", "facts.user"),
])
def test_forbidden_fields_are_refused_by_name(service: Server, path: str, value: Any, field: str) -> None:
    r = post(service, _with(path, value))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert "carries no paths" in r.json()["detail"]


@pytest.mark.parametrize("path, value, field", [
    ("facts.distributions.[0].requires", ["foo @ file:///home/alice/foo"], "facts.distributions[0].requires[0]"),
    ("facts.distributions.[0].requires", ['foo; platform_release == "/home/alice"'], "facts.distributions[0].requires[0]"),
    ("facts.gpus", [{"name": "/home/alice/gpu"}], "facts.gpus[0].name"),
    ("facts.platform.release", "6.1.0 /home/alice", "facts.platform.release"),
    ("facts.distributions.[0].version", "1.0/../../etc", "facts.distributions[0].version"),
    ("facts.distributions.[0].name", "../etc", "facts.distributions[0].name"),
    ("facts.markers.python_version", "/usr/lib", "facts.markers.python_version"),
])
def test_paths_hidden_in_values_are_refused(service: Server, path: str, value: Any, field: str) -> None:
    r = post(service, _with(path, value))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


@pytest.mark.parametrize("doc, field", [
    (_with("facts.distributions.[0].version", "2.3.1+cu121.post3 abc"), "facts.distributions[0].version"),
    (_with("facts.distributions.[0].requires", ["torch>=="]), "facts.distributions[0].requires[0]"),
    (_with("facts.distributions.[2].requires", ["numpy", "torch>=="]), "facts.distributions[2].requires[1]"),
    (_with("facts.distributions.[0].requires", ["numpy", 7]), "facts.distributions[0].requires[1]"),
    (_with("facts.distributions.[0].requires", ["numpy", None]), "facts.distributions[0].requires[1]"),
    (_with("facts.distributions.[0].requires", ["numpy", {"a": 1}]), "facts.distributions[0].requires[1]"),
    (_with("facts.distributions.[0].requires", [["numpy"]]), "facts.distributions[0].requires[0]"),
    (_with("facts.distributions.[0].name", 7), "facts.distributions[0].name"),
    (_with("facts.gpus", [{"name": "A100", "compute_capability": "eight"}]), "facts.gpus[0].compute_capability"),
    (_with("facts.gpus", [{"name": "A100", "memory_mib": -1}]), "facts.gpus[0].memory_mib"),
    (_with("facts.xformers_build", {"cuda": "12.1"}), "facts.xformers_build.cuda"),
    (_with("facts.environment", ["laptop"]), "facts.environment[0]"),
    (_with("facts.frobnicate", 1), "facts.frobnicate"),
    ({**recorded_doc("S1"), "schema_version": 2}, "schema_version"),
    ({**recorded_doc("S1"), "packages": ["xformers @ https://example.invalid/x.whl"]}, "packages[0]"),
    ({**recorded_doc("S1"), "packages": ["not a requirement!"]}, "packages[0]"),
    ({**recorded_doc("S1"), "cuda": "12.1"}, "cuda"),
    ({**recorded_doc("S1"), "torch": "two"}, "torch"),
    ({"facts": {"python": {"version": "3.11"}}}, "facts.platform"),
    ({"facts": []}, "facts"),
])
def test_garbage_is_422_with_the_field(service: Server, doc: Any, field: str) -> None:
    r = post(service, doc)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(field)


def test_duplicate_distribution_is_refused(service: Server) -> None:
    doc = recorded_doc("S1")
    doc["facts"]["distributions"].append(dict(doc["facts"]["distributions"][0]))
    assert post(service, doc).status_code == 422


@pytest.mark.parametrize("raw", [b"", b"garbage", b"[]", b"null", b"\xff\xfe", b"[" * 100000, b'{"facts": 1e999999}',
                                 b"1" * 5000, json.dumps({"facts": {"python": {"version": "3" * 5000}}}).encode()])
def test_not_json_or_not_an_object_is_422(service: Server, raw: bytes) -> None:
    r = post(service, raw=raw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_a_torch_build_the_matrix_does_not_know_is_422(service: Server) -> None:
    r = post(service, {**recorded_doc("S1"), "torch": "2.4.0", "cuda": "9.0"})
    assert r.status_code == 422 and "no cu90 build" in r.json()["detail"]


def test_body_over_the_limit_is_413(service: Server) -> None:
    big = b'{"facts": "' + b"x" * (1 << 20) + b'"}'
    assert post(service, raw=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts what arrives
        for _ in range(40):
            yield b"x" * 32768

    r = httpx.post(service.url + "/v1/resolve", content=chunks(), timeout=30)
    assert r.status_code == 413


def test_wrong_method_and_path_are_not_server_errors(service: Server) -> None:
    assert httpx.get(service.url + "/v1/resolve").status_code == 405
    assert httpx.get(service.url + "/nope").status_code == 404
    assert httpx.delete(service.url + "/v1/matrix").status_code == 405


def test_matrix_etag_and_304(service: Server) -> None:
    r = httpx.get(service.url + "/v1/matrix")
    assert r.status_code == 200
    etag = r.headers["etag"]
    assert etag.startswith('"') and r.json()["etag"] == etag and r.json()["data_version"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = httpx.get(service.url + "/v1/matrix", headers={"If-None-Match": header})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert httpx.get(service.url + "/v1/matrix", headers={"If-None-Match": '"other"'}).status_code == 200


def test_metrics_count_requests_latency_and_errors(service: Server) -> None:
    post(service, raw=b"garbage")
    text = httpx.get(service.url + "/metrics").text
    assert 'doctor_service_requests_total{method="POST",path="/v1/resolve",status="422"}' in text
    assert 'doctor_service_errors_total{path="/v1/resolve",kind="client"}' in text
    assert 'doctor_service_request_duration_seconds_bucket{path="/v1/resolve",le="+Inf"}' in text
    assert "# TYPE doctor_service_request_duration_seconds histogram" in text
    assert 'status="5' not in text  # never a server error in this whole session so far


def test_openapi_describes_the_request(service: Server) -> None:
    spec = httpx.get(service.url + "/openapi.json").json()
    body = spec["paths"]["/v1/resolve"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["facts"]["additionalProperties"] is False
    assert {"/v1/matrix", "/healthz", "/metrics"} <= set(spec["paths"])


def test_logs_are_json_lines_without_the_body(service: Server) -> None:
    post(service, recorded_doc("S2u"))
    lines = [json.loads(line) for line in service.log() if line.startswith("{")]
    requests = [d for d in lines if d.get("event") == "request"]
    assert requests and all({"method", "path", "status", "ms"} <= d.keys() for d in requests)
    assert not any("unsloth" in line for line in service.log())  # what the fleet sent is not logged


@pytest.fixture(scope="module")
def token_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("token")
    (tmp / "token").write_text("s3cret-token\n")
    srv = start_server(tmp, "--token-file", str(tmp / "token"))
    yield srv
    stop_server(srv.proc)


@pytest.mark.parametrize("auth, status", [(None, 401), ("Bearer wrong", 401), ("Basic s3cret-token", 401),
                                          ("Bearer s3cret-token", 200), ("bearer s3cret-token", 200)])
def test_bearer_token(token_service: Server, auth: Any, status: int) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = post(token_service, minimal_doc(gpus=[A100]), headers=headers)
    assert r.status_code == status
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(token_service.url + "/metrics", headers=headers).status_code == 401
    assert httpx.get(token_service.url + "/healthz").status_code == 200  # load balancers probe without it


def _serve(*args: str, env: Dict[str, str] = {}) -> "subprocess.CompletedProcess[str]":
    import os

    return subprocess.run([sys.executable, "-m", "doctor", "serve", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_serve_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    (shim / "fastapi").mkdir(parents=True)
    (shim / "fastapi" / "__init__.py").write_text("raise ImportError('no fastapi here')\n")
    out = _serve("--port", "0", env={"PYTHONPATH": str(shim)})
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'tune-doctor[serve]'" in lines[0]


@pytest.mark.parametrize("content", [None, "", "two words\n"])
def test_serve_with_a_bad_token_file_is_bad_input(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    out = _serve("--token-file", str(path), "--port", "0")
    assert out.returncode == 3 and out.stderr.count("\n") == 1 and "--token-file" in out.stderr


def test_serve_port_taken_is_bad_input(service: Server) -> None:
    port = service.url.rsplit(":", 1)[1]
    out = _serve("--port", port, "--no-request-log")
    assert out.returncode == 3
