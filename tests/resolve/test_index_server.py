"""The local index the resolver tests run against: pages (PEP 691 JSON / PEP 503 HTML, PEP 658 metadata),
rebuilt wheels, recorded worlds in real venvs, and pip's real resolver against it, offline."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from tests.resolve.index.server import JSON_TYPE, LocalIndex
from tests.resolve.index.venvs import pip, report_pins, resolve, scenarios
from tests.resolve.conftest import WorldFactory

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def _get(url: str, accept: Optional[str] = None) -> Tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _wheel_requests(idx: LocalIndex, since: int) -> List[str]:
    return [p for p in idx.requests[since:] if p.endswith(".whl")]


def test_json_page_advertises_metadata_with_its_sha256(local_index: LocalIndex) -> None:
    status, ctype, body = _get(local_index.url("pypi") + "/xformers/", PIP_ACCEPT)
    assert status == 200 and ctype == JSON_TYPE
    page = json.loads(body)
    files = {f["filename"]: f for f in page["files"]}
    entry = files["xformers-0.0.27-py3-none-any.whl"]
    assert entry["requires-python"] == ">=3.7"
    _, _, meta = _get(local_index.url("pypi").rsplit("/simple", 1)[0] + "/files/" + entry["filename"] + ".metadata")
    assert hashlib.sha256(meta).hexdigest() == entry["core-metadata"]["sha256"]
    assert b"Requires-Dist: torch ==2.3.1" in meta


def test_html_page_and_negotiation(local_index: LocalIndex) -> None:
    status, ctype, body = _get(local_index.url("pypi") + "/xformers/", "text/html")
    assert status == 200 and ctype == "text/html"
    assert re.search(rb'href="[^"]*xformers-0\.0\.27-py3-none-any\.whl#sha256=[0-9a-f]{64}"', body)
    assert b"data-core-metadata=\"sha256=" in body and b'data-requires-python="&gt;=3.7"' in body
    # html_only answers HTML even to pip's JSON-first Accept; no acceptable type is 406; names are normalised.
    assert _get(local_index.url("pypi", html_only=True) + "/xformers/", PIP_ACCEPT)[1] == "text/html"
    assert _get(local_index.url("pypi") + "/xformers/", "image/png")[0] == 406
    assert _get(local_index.url("pypi") + "/Unsloth_Zoo/", PIP_ACCEPT)[0] == 200  # after the 301
    root = json.loads(_get(local_index.url("pypi") + "/", PIP_ACCEPT)[2])
    assert {"name": "torch"} in root["projects"]


def test_metadata_off_variant(local_index: LocalIndex) -> None:
    url = local_index.url("pypi", metadata=False)
    page = json.loads(_get(url + "/torch/", PIP_ACCEPT)[2])
    assert all("core-metadata" not in f for f in page["files"])
    html = _get(url + "/torch/", "text/html")[2]
    assert b"data-core-metadata" not in html and b"data-dist-info-metadata" not in html
    assert _get(url.rsplit("/simple", 1)[0] + "/files/torch-2.4.0-py3-none-any.whl.metadata")[0] == 404


def test_garbage_index_answers_nonsense(local_index: LocalIndex) -> None:
    status, ctype, body = _get(local_index.url("garbage") + "/torch/", PIP_ACCEPT)
    assert status == 200 and ctype == JSON_TYPE
    with pytest.raises(ValueError):
        json.loads(body)


def test_rebuilt_wheels_carry_recorded_members(local_index: LocalIndex) -> None:
    with zipfile.ZipFile(local_index.wheel("pypi", "xformers", "0.0.28.post3")) as zf:
        cpp = json.loads(zf.read("xformers/cpp_lib.json"))
        assert cpp["version"]["torch"] == "2.5.1+cu121" and cpp["version"]["cuda"] == 1201
        assert "xformers-0.0.28.post3.dist-info/RECORD" in zf.namelist()
    with zipfile.ZipFile(local_index.wheel("cu124", "xformers", "0.0.28.post3")) as zf:
        assert json.loads(zf.read("xformers/cpp_lib.json"))["version"]["cuda"] == 1204
    with zipfile.ZipFile(local_index.wheel("pypi", "torch", "2.5.1")) as zf:
        assert "cuda: Optional[str] = '12.4'" in zf.read("torch/version.py").decode()
    with zipfile.ZipFile(local_index.wheel("pypi", "bitsandbytes", "0.41.3.post2")) as zf:
        libs = [n for n in zf.namelist() if n.endswith(".so")]
        assert "bitsandbytes/libbitsandbytes_cuda121.so" in libs and "bitsandbytes/libbitsandbytes_cuda124.so" not in libs
        assert all(zf.getinfo(n).file_size == 0 for n in libs)


@pytest.mark.parametrize("sid", sorted(scenarios()))
def test_scenario_venv_is_the_recorded_world(world: WorldFactory, sid: str) -> None:
    """Each scenario installs as recorded, and `pip check` finds exactly the breakage the data states."""
    w = world(sid)
    versions = w.versions()
    for pin in scenarios()[sid]["installed"]:
        name, _, ver = pin.rpartition(":")[2].partition("==")
        assert versions[re.sub(r"[-_.]+", "-", name).lower()] == ver
    unmet = scenarios()[sid]["unmet"]
    if not unmet:
        pip("check", python=w.python)
        return
    with pytest.raises(RuntimeError) as exc:
        pip("check", python=w.python)
    assert str(exc.value).count(" has requirement ") == len(unmet)


def test_xformers_file_is_on_disk(world: WorldFactory) -> None:
    w = world("S5")
    cpp = json.loads((w.site_packages() / "xformers" / "cpp_lib.json").read_text())
    assert cpp["version"]["torch"] == "2.5.1+cu121"
    assert "2.5.1+cu124" in (w.site_packages() / "torch" / "version.py").read_text()


@pytest.mark.parametrize("metadata,html_only", [(True, False), (False, False), (True, True), (False, True)])
def test_pip_resolves_offline(local_index: LocalIndex, world: WorldFactory, metadata: bool, html_only: bool) -> None:
    """S1: pip's resolver, as the planner calls it, with PEP 658 on/off, JSON/HTML pages."""
    w = world("S1")
    since = len(local_index.requests)
    url = local_index.url("pypi", metadata=metadata, html_only=html_only)
    rep = resolve(w.python, url, ["xformers==0.0.27.post2"], constraints=["torch===2.4.0"])
    assert report_pins(rep) == ["triton==3.0.0", "xformers==0.0.27.post2"]
    assert all(i["download_info"]["url"].startswith("http://127.0.0.1:") for i in rep["install"])
    fetched = _wheel_requests(local_index, since)
    if metadata:
        assert fetched == []  # the .metadata files were enough
    else:
        assert any("xformers-0.0.27.post2" in p for p in fetched)


def test_unbounded_specifier_picks_the_major(local_index: LocalIndex, world: WorldFactory) -> None:
    """S3: `transformers>=4.46.0` goes to 5.0.0 and drags huggingface-hub and tokenizers; a 4.46 bound does not."""
    w = world("S3")
    rep = resolve(w.python, local_index.url("pypi"), ["transformers>=4.46.0"])
    pins = report_pins(rep)
    assert "transformers==5.0.0" in pins
    assert any(p.startswith("huggingface-hub==1.") for p in pins) and any(p.startswith("tokenizers==") for p in pins)
    rep = resolve(w.python, local_index.url("pypi"), ["transformers>=4.46.0,<4.47"])
    assert report_pins(rep) == ["transformers==4.46.3"]


def test_stale_step(local_index: LocalIndex, world: WorldFactory) -> None:
    """S4: upgrading unsloth_zoo to what unsloth needs keeps protobuf 5 (no downgrade needed any more)."""
    w = world("S4")
    rep = resolve(w.python, local_index.url("pypi"), ["unsloth-zoo>=2025.7.5"], constraints=["torch===2.4.0"])
    assert report_pins(rep) == ["unsloth-zoo==2025.7.5"]


def test_cuda_family_index(local_index: LocalIndex, world: WorldFactory) -> None:
    """S5: the cu124 stand-in serves xformers 0.0.28.post3 built for torch's CUDA (reinstalled, no deps)."""
    w = world("S5")
    rep = resolve(
        w.python,
        local_index.url("cu124"),
        ["xformers==0.0.28.post3"],
        args=["--force-reinstall", "--no-deps"],
    )
    assert report_pins(rep) == ["xformers==0.0.28.post3"]
    assert "/cu124/files/" in rep["install"][0]["download_info"]["url"]
    rep = resolve(w.python, local_index.url("cu121"), ["torch==2.5.1+cu121"])
    assert "torch==2.5.1+cu121" in report_pins(rep)


def test_garbage_index_fails_pip(local_index: LocalIndex, world: WorldFactory) -> None:
    w = world(pins=["numpy==2.4.6"])
    with pytest.raises(RuntimeError):
        resolve(w.python, local_index.url("garbage"), ["torch==2.4.0"])


def test_machine_pip_settings_are_neutralised(local_index: LocalIndex, world: WorldFactory, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """A find-links or no-index in the environment does not leak into the resolver runs."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "missing.txt"))
    w = world(pins=["numpy==2.4.6"])
    assert report_pins(resolve(w.python, local_index.url("pypi"), ["xformers==0.0.27"])) != []
