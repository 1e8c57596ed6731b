"""The client: `--service URL` / DOCTOR_SERVICE_URL for check, pin and install, against the real service and
against bad servers (500, garbage JSON, injected shell strings, control characters, a foreign index, a slow
answer, nothing listening): each falls back to the local matrix with ONE line, and nothing is executed.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from doctor.compat_matrix.loader import load_matrix
from doctor.service.answer import compute
from doctor.service.client import ServiceError, exact_requirements, narrowed, service_url, validate_answer
from doctor.service.schema import parse_request, request_document, sanitize
from tests.service.conftest import Server, free_port
from tests.service.worlds import recorded_doc

TORCH_INDEX = load_matrix().torch_index_url


def good_answer(scenario: str = "S1", packages: Any = None) -> Dict[str, Any]:
    """What the real service answers for a recorded world (computed in-process)."""
    return json.loads(json.dumps(compute(parse_request(recorded_doc(scenario, packages)), load_matrix())))


# -- bad servers -----------------------------------------------------------------------------------------------


class BadServer:
    """A stdlib HTTP server on 127.0.0.1 answering POSTs with what `answer` returns: (status, body, delay)."""

    def __init__(self, answer: Callable[[], Tuple[int, bytes, float]]) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib name)
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, body, delay = answer()
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (the slow case)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "BadServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def injected(marker: Path, where: str) -> bytes:
    """A well-formed answer with a shell command planted in one field."""
    doc = good_answer("S1")
    shell = f"1.0; touch {marker}"
    if where == "plan.after":
        doc["plan"]["changes"][0]["after"] = shell
    elif where == "plan.name":
        doc["plan"]["changes"][0]["name"] = f"$(touch {marker})"
    elif where == "pin.specifier":
        doc["pins"]["pins"][0]["specifier"] = f"=={shell}"
    elif where == "pin.index":
        doc["pins"]["pins"][0]["index_url"] = "https://evil.example/simple --trusted-host evil.example"
    elif where == "plan.index":
        doc["plan"]["changes"][0]["index_url"] = "https://evil.example/cu121"
    elif where == "title":
        doc["findings"][0]["title"] = "\x1b[2J\x1b[1;1Hall good"
    return json.dumps(doc).encode()


def doctor(*args: str, env: Dict[str, str] = {}, timeout: float = 120) -> "subprocess.CompletedProcess[str]":
    full = {k: v for k, v in os.environ.items() if k != "DOCTOR_SERVICE_URL"}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True, timeout=timeout, env=full)


@pytest.fixture(scope="module")
def local_pins() -> str:
    out = doctor("pin")
    assert out.returncode == 0, out.stderr
    return out.stdout


def _one_fallback_line(stderr: str, url: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"doctor: service {url} not used (") and "using the local matrix (" in lines[0]
    return lines[0]


@pytest.mark.parametrize("case, hits, why", [
    ("500", 2, "HTTP 500"),
    ("garbage", 1, "not JSON"),
    ("plan.after", 1, "plan.changes[0].after"),
    ("plan.name", 1, "plan.changes[0].name"),
    ("pin.specifier", 1, "pins.pins[0].specifier"),
    ("pin.index", 1, "pins.pins[0].index_url"),
    ("plan.index", 1, "plan.changes[0].index_url"),
    ("title", 1, "control characters"),
    ("422", 1, "HTTP 422: facts.frob"),
])
def test_pin_falls_back_with_one_line_and_runs_nothing(tmp_path: Path, local_pins: str, case: str, hits: int,
                                                       why: str) -> None:
    marker = tmp_path / "ran"
    bodies = {"500": (500, b"{}", 0.0), "garbage": (200, b"<html>surprise</html>", 0.0),
              "422": (422, json.dumps({"detail": "facts.frob: unknown field"}).encode(), 0.0)}
    body = bodies.get(case) or (200, injected(marker, case), 0.0)
    with BadServer(lambda: body) as srv:
        out = doctor("pin", "--service", srv.url)
        assert out.returncode == 0
        assert why in _one_fallback_line(out.stderr, srv.url)
        assert out.stdout == local_pins  # the local matrix answered
        assert srv.hits == hits  # one retry for a 5xx, none for an answer that came
    assert not marker.exists()


def test_slow_answer_times_out_and_falls_back(local_pins: str) -> None:
    with BadServer(lambda: (200, json.dumps(good_answer()).encode(), 8.0)) as srv:
        start = time.monotonic()
        out = doctor("pin", "--service", srv.url)
        took = time.monotonic() - start
    assert out.returncode == 0 and out.stdout == local_pins
    assert "timed out" in _one_fallback_line(out.stderr, srv.url)
    assert took < 8.0  # two short attempts, never the server's pace


def test_nothing_listening_falls_back_via_the_environment_variable(local_pins: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = doctor("pin", env={"DOCTOR_SERVICE_URL": url})
    assert out.returncode == 0 and out.stdout == local_pins
    assert "connection refused" in _one_fallback_line(out.stderr, url)


def test_check_falls_back_and_says_so_in_the_json(tmp_path: Path) -> None:
    plain = doctor("check", "--no-probes", "--json")
    marker = tmp_path / "ran"
    with BadServer(lambda: (200, injected(marker, "plan.after"), 0.0)) as srv:
        out = doctor("check", "--no-probes", "--json", "--service", srv.url)
    assert out.returncode == plain.returncode
    _one_fallback_line(out.stderr, srv.url)
    doc = json.loads(out.stdout)
    assert doc["service"]["used"] is False and "plan.changes[0].after" in doc["service"]["reason"]
    assert [f["id"] for f in doc["findings"]] == [f["id"] for f in json.loads(plain.stdout)["findings"]]
    assert not marker.exists()


def test_check_fix_with_an_injected_plan_plans_locally_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = {"DOCTOR_STATE_DIR": str(tmp_path / "state"), "DOCTOR_CACHE_DIR": str(tmp_path / "cache")}
    plain = doctor("check", "--no-probes", "--fix", "--dry-run", "--offline", env=env)
    with BadServer(lambda: (200, injected(marker, "plan.after"), 0.0)) as srv:
        out = doctor("check", "--no-probes", "--fix", "--dry-run", "--offline", "--service", srv.url, env=env)
    assert out.returncode == plain.returncode
    _one_fallback_line(out.stderr, srv.url)
    assert out.stdout == plain.stdout
    assert not marker.exists()


def test_install_falls_back(tmp_path: Path) -> None:
    env = {"DOCTOR_STATE_DIR": str(tmp_path / "state"), "DOCTOR_CACHE_DIR": str(tmp_path / "cache")}
    args = ("install", "--offline", "--dry-run", "packaging==24.0")
    plain = doctor(*args, env=env)
    with BadServer(lambda: (500, b"oops", 0.0)) as srv:
        out = doctor(*args, "--service", srv.url, env=env)
    assert out.returncode == plain.returncode and out.stdout == plain.stdout
    _one_fallback_line(out.stderr, srv.url)


# -- the real service -------------------------------------------------------------------------------------------


def test_pin_from_the_service(service: Server, local_pins: str) -> None:
    out = doctor("pin", "--service", service.url)
    assert out.returncode == 0 and out.stderr == ""
    assert f"# note: pins from the service {service.url}" in out.stdout
    pins = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    assert pins == [line for line in local_pins.splitlines() if not line.startswith("#")]  # same matrix, same pins
    js = json.loads(doctor("pin", "--format", "json", env={"DOCTOR_SERVICE_URL": service.url}).stdout)
    assert js["prefix"] == sys.prefix  # filled in locally: the service never saw it


def test_check_with_the_service(service: Server) -> None:
    out = doctor("check", "--no-probes", "--json", "--service", service.url)
    doc = json.loads(out.stdout)
    assert doc["service"]["used"] is True and doc["service"]["mode"] == "offline-matrix"
    assert out.stderr.strip().startswith(f"doctor: asked the service {service.url}")


def test_bad_service_url_is_bad_input() -> None:
    for url in ("ftp://x", "http://user:pw@127.0.0.1:1", "not a url", "http://127.0.0.1:1/?q=1", "http://[::1"):
        out = doctor("pin", "--service", url)
        assert out.returncode == 3 and out.stderr.count("\n") == 1, (url, out.stderr)


# -- the answer, re-parsed --------------------------------------------------------------------------------------


def test_a_good_answer_validates_and_narrows_requirements() -> None:
    a = validate_answer(good_answer("S1", ["xformers"]), "http://svc", TORCH_INDEX)
    assert a.mode == "offline-matrix" and a.findings and all(f.fix == () for f in a.findings)
    assert narrowed(["xformers"], a) == ("xformers==0.0.27.post2",)
    assert narrowed(["xformers<0.0.27"], a) == ("xformers<0.0.27",)  # the pin does not fit: the user's stands
    assert "xformers==0.0.27.post2" in exact_requirements(validate_answer(good_answer("S1"), "http://svc", TORCH_INDEX))


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(schema_version=2),
    lambda d: d.update(findings="nope"),
    lambda d: d["findings"][0].update(severity="catastrophic"),
    lambda d: d["findings"][0].update(id="Bad Id!"),
    lambda d: d["pins"]["pins"][0].update(specifier="===2.4.0+cu121 # x"),
    lambda d: d["pins"]["pins"][0].update(name="torch;rm"),
    lambda d: d["pins"]["pins"][0].update(reason="line\nbreak"),
    lambda d: d["plan"].update(status="applied"),
    lambda d: d["plan"]["changes"][0].update(after="0.0.27.post2 && curl x | sh"),
    lambda d: d["pins"].update(index_url="http://127.0.0.1/cu121"),
    lambda d: d["pins"].update(cuda="12.1; x"),
])
def test_a_bad_answer_is_refused(mutate: Callable[[Dict[str, Any]], Any]) -> None:
    doc = good_answer("S1")
    mutate(doc)
    with pytest.raises(ServiceError):
        validate_answer(doc, "http://svc", TORCH_INDEX)


def test_pin_for_another_torch_build_from_the_service(service: Server) -> None:
    local = doctor("pin", "--torch", "2.4.0", "--cuda", "cu121")
    out = doctor("pin", "--torch", "2.4.0", "--cuda", "cu121", "--service", service.url)  # the index tag, as the CLI takes it
    assert out.returncode == local.returncode and out.stderr == "", out.stderr
    assert [x for x in out.stdout.splitlines() if not x.startswith("#")] == \
        [x for x in local.stdout.splitlines() if not x.startswith("#")]


def test_service_url_sources() -> None:
    assert service_url(None, {}) is None
    assert service_url(None, {"DOCTOR_SERVICE_URL": "http://h:1/"}) == "http://h:1"
    assert service_url("https://svc.example/api", {"DOCTOR_SERVICE_URL": "http://ignored"}) == "https://svc.example/api"


# -- what travels -----------------------------------------------------------------------------------------------


def test_the_request_carries_no_path_hostname_user_or_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from doctor.inventory import gather

    monkeypatch.setenv("HF_HOME", "/home/secret-user/hf")
    monkeypatch.setenv("DOCTOR_GPUS", "NVIDIA A100-SXM4-80GB@8.0@81920")
    facts = gather()
    doc = request_document(facts, ["xformers"])
    text = json.dumps(doc)
    assert not [s for s in _strings(doc) if "/" in s or "\\" in s or "secret-user" in s]
    host = socket.gethostname()
    assert len(host) < 4 or host not in text
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    assert len(user) < 4 or f'"{user}"' not in text
    req = parse_request(json.loads(text))  # what the client sends, the server accepts
    assert req.facts.dist("torch") is not None and req.packages == ("xformers",)
    # markers of the client's Python travel, so the service reads Requires-Dist markers for it, not for its own
    assert doc["facts"]["markers"]["python_version"] == "%d.%d" % sys.version_info[:2]
    assert "platform_node" not in doc["facts"]["markers"] and "platform_release" not in doc["facts"]["markers"]


def _strings(node: Any) -> Iterator[str]:
    """Every string (keys and values) in a JSON document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_sanitize_a_check_json_facts_document() -> None:
    out = subprocess.run([sys.executable, "-m", "doctor", "check", "--json", "--no-probes"], capture_output=True,
                         text=True, timeout=120)
    facts = json.loads(out.stdout)["facts"]
    assert facts["executable"] and facts["prefix"]
    clean = sanitize(facts)
    assert not {"executable", "prefix", "env", "active_environment"} & clean.keys()
    assert not [s for s in _strings(clean) if "/" in s]
    assert parse_request({"facts": clean}).facts.dist("torch") is not None


def test_check_without_a_service_loads_no_http_client() -> None:
    code = ("import sys, io, contextlib\nfrom doctor.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['check', '--no-probes', '--json'])\n"
            "print(sorted(m for m in ('httpx', 'fastapi', 'uvicorn', 'doctor.service', 'doctor.service.client') "
            "if m in sys.modules))\n")
    env = {k: v for k, v in os.environ.items() if k != "DOCTOR_SERVICE_URL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


@pytest.mark.slow
def test_fix_with_the_service_rederives_the_plan_locally(service: Server, world: Any, local_index: Any,
                                                         tmp_path: Path) -> None:
    """S4 (unsloth_zoo one release behind): the service's plan (exact pins from its matrix, not verified) names
    unsloth-zoo 2025.7.5; the client re-derives the plan from that pin with pip's resolver against the local index,
    verifies it with the local rules, applies it, and the re-check is clean of the skew."""
    w = world("S4")
    env = {"DOCTOR_GPUS": "none", "DOCTOR_INDEX_URL": local_index.url("pypi"), "DOCTOR_CACHE_DIR": str(tmp_path / "dc"),
           "DOCTOR_STATE_DIR": str(tmp_path / "state"), "PIP_CONFIG_FILE": os.devnull,
           "UNSLOTH_COMPILE_LOCATION": str(tmp_path / "ucache"), "DOCTOR_SERVICE_URL": service.url}
    out = doctor("check", "--python", str(w.python), "--json", "--fix", "--yes", "--no-probes", env=env, timeout=300)
    doc = json.loads(out.stdout)
    assert doc["service"]["used"] is True
    assert "the service's plan (unverified against its matrix): unsloth-zoo==2025.7.5; re-derived and verified here" \
        in out.stderr
    assert doc["plan"]["status"] == "verified" and doc["plan"]["verified_against"] == "index", out.stderr[-2000:]
    assert [(c["name"], c["after"]) for c in doc["plan"]["changes"]] == [("unsloth-zoo", "2025.7.5")]
    assert not any(f["id"] == "unsloth.zoo-skew" for f in doc["after"]) and doc["defect"] is None
    assert w.versions()["unsloth-zoo"] == "2025.7.5"


def test_client_sends_the_token_from_its_file(tmp_path: Path) -> None:
    from tests.service.conftest import start_server, stop_server

    (tmp_path / "token").write_text("fleet-token\n")
    srv = start_server(tmp_path, "--token-file", str(tmp_path / "token"), "--no-request-log")
    try:
        ok = doctor("pin", "--service", srv.url, env={"DOCTOR_SERVICE_TOKEN_FILE": str(tmp_path / "token")})
        assert ok.returncode == 0 and ok.stderr == "" and "pins from the service" in ok.stdout
        refused = doctor("pin", "--service", srv.url)
        assert "HTTP 401" in _one_fallback_line(refused.stderr, srv.url)
        missing = doctor("pin", "--service", srv.url, env={"DOCTOR_SERVICE_TOKEN_FILE": str(tmp_path / "nope")})
        assert missing.returncode == 3 and "DOCTOR_SERVICE_TOKEN_FILE" in missing.stderr
    finally:
        stop_server(srv.proc)


def test_merged_findings_add_only_what_the_local_matrix_lacks() -> None:
    from doctor.service.client import merged_findings

    a = validate_answer(good_answer("S1"), "http://svc", TORCH_INDEX)
    local = tuple(f for f in a.findings if f.id == "xformers.torch-mismatch")
    merged = merged_findings(local, a)
    assert merged[: len(local)] == local and len(merged) == len(a.findings)
    added = merged[len(local):]
    assert added and all(f.fix == () and dict(f.evidence)["reported by"].startswith("the service http://svc") for f in added)
