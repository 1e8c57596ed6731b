"""The planner's parts on their own: release lines, pip's report parsing, the keep-set, would-be builds,
and the planner end to end against a small synthetic index served on 127.0.0.1 (real pip, real venv)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import venv
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest

from doctor.compat_matrix.loader import load_matrix
from doctor.facts import Distribution, Facts, PlatformInfo, PythonInfo
from doctor.resolve.keep import keep_set
from doctor.resolve.options import IndexConfig, PlanOptions
from doctor.resolve.pip_report import ResolveFailed, Resolved, Resolver, ResolverRun, parse_report
from doctor.resolve.plan import FAILED, VERIFIED
from doctor.resolve.planner import plan_fixes, plan_install, release_lines
from doctor.resolve.would_be import Install, would_be
from doctor.rules import run_rules
from tests.wheels import build_wheel

NO_CONFIG = (("PIP_CONFIG_FILE", os.devnull),)


def test_release_lines_patch_then_minor_then_major() -> None:
    """Newest patch per line; the installed line first, then minors of its major, then other majors."""
    versions = ["4.45.2", "4.46.0", "4.46.3", "4.47.1", "4.48.0rc1", "5.0.0", "5.0.2", "5.1.2", "garbage"]
    assert release_lines(versions, ">=4.46.0", "4.45.2") == ["4.46.3", "4.47.1", "5.0.2", "5.1.2"]
    assert release_lines(versions, ">=4.45", "4.45.0") == ["4.45.2", "4.46.3", "4.47.1", "5.0.2", "5.1.2"]
    assert release_lines(versions, "<5", None) == ["4.47.1", "4.46.3", "4.45.2"]  # nothing installed: newest first
    assert release_lines(versions, ">=9", "4.45.2") == []


@pytest.mark.parametrize("text", ["", "not json", "[]", "{}", '{"install": 3}', '{"install": [{"metadata": {}}]}',
                                  '{"install": [{"metadata": {"name": "a", "version": "1", "requires_dist": [3]}}]}',
                                  "[" * 100000])
def test_report_garbage_is_resolve_failed(text: str) -> None:
    """Anything that is not pip's documented report is a one-line ResolveFailed, never a traceback."""
    with pytest.raises(ResolveFailed):
        parse_report(text)


def test_report_parsed() -> None:
    """Names canonical, versions as written (local label kept), requirements and the wheel's URL."""
    r = parse_report('{"version": "1", "install": [{"download_info": {"url": "http://x/torch.whl"}, "requested": true,'
                     ' "metadata": {"name": "Torch", "version": "2.4.0+cu121", "requires_dist": ["triton==3.0.0"]}}]}')
    assert r.install == (Resolved("torch", "2.4.0+cu121", ("triton==3.0.0",), "http://x/torch.whl", True),)


def _facts(dists: Dict[str, str]) -> Facts:
    return Facts(PythonInfo("3.11.7", "CPython", sys.executable, sys.prefix, sys.base_prefix),
                 PlatformInfo("Linux", "x86_64", "6"), distributions={n: Distribution(n, v) for n, v in dists.items()})


def test_keep_set_pins_torch_by_its_exact_string() -> None:
    """torch===2.13.0+cpu (== would admit +cu126); healthy torch-coupled packages too; moving ones not."""
    facts = _facts({"torch": "2.13.0+cpu", "torchvision": "0.28.0+cpu", "transformers": "5.17.0"})
    assert keep_set(facts, []) == ("torch===2.13.0+cpu", "torchvision===0.28.0+cpu")
    assert keep_set(facts, [], moving={"torch"}) == ("torchvision===0.28.0+cpu",)


def test_would_be_builds_from_label_index_and_matrix() -> None:
    """A torch's CUDA from its label or its index; an xformers binary built for its exact torch pin, with the
    index's CUDA (PyTorch variant) or torch's default one (the default index)."""
    m = load_matrix()
    facts = _facts({"torch": "2.3.1", "xformers": "0.0.27"})
    wb = would_be(facts, m, [Install(Resolved("torch", "2.4.0+cu121", ())),
                             Install(Resolved("xformers", "0.0.27.post2", ("torch==2.4.0",)), "https://x/whl/cu121")])
    assert wb.torch is not None and wb.torch.cuda == "12.1"
    assert wb.xformers is not None and wb.xformers.torch_version == "2.4.0+cu121" and wb.xformers.cuda_version == 1201
    assert wb.version_of("xformers") == "0.0.27.post2" and wb.dist("xformers").requires == ("torch==2.4.0",)  # type: ignore[union-attr]
    pypi = would_be(facts, m, [Install(Resolved("torch", "2.4.0", ()))])
    assert pypi.torch is not None and pypi.torch.cuda == m.torch_default_cuda["2.4"]
    assert would_be(facts, m, [], removals=["xformers"]).xformers is None


# -- end to end against a synthetic index -------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"\x00\xffnot an index{{{<a href="
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type, directory: Path) -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
                                          if handler is _Quiet else handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/simple"
    finally:
        srv.shutdown()
        srv.server_close()


class World:
    """A venv with some wheels installed --no-deps and an index holding more."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = root / "index" / "simple"

    def publish(self, name: str, version: str, requires: Sequence[str] = ()) -> Path:
        d = self.index / name
        d.mkdir(parents=True, exist_ok=True)
        w = build_wheel(self.root / "wheels", name, version, requires)
        shutil.copy(w, d / w.name)
        (d / "index.html").write_text("".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(d.glob("*.whl"))))
        return w

    def venv(self, installed: List[Path]) -> str:
        v = self.root / "venv"
        venv.EnvBuilder(with_pip=False).create(v)
        py = str(v / "bin" / "python")
        subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", *map(str, installed)],
                       check=True, timeout=300, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        return py


@pytest.fixture(scope="module")
def transformers_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, str]]:
    """trl needs transformers>=4.46.0 but 4.45.2 is installed; the index has 4.46.x, 4.47 and 5.0 (which needs a
    newer tokenizers): the minimal fix is 4.46.3 alone, never the unbounded specifier's 5.0."""
    w = World(tmp_path_factory.mktemp("tw"))
    installed = [w.publish("trl", "0.13.0", ["transformers>=4.46.0"]),
                 w.publish("transformers", "4.45.2", ["tokenizers<0.21,>=0.20"]), w.publish("tokenizers", "0.20.3")]
    for v, req in (("4.46.0", "tokenizers<0.21,>=0.20"), ("4.46.3", "tokenizers<0.21,>=0.20"),
                   ("4.47.1", "tokenizers<0.22,>=0.21"), ("5.0.0", "tokenizers>=0.22")):
        w.publish("transformers", v, [req])
    w.publish("tokenizers", "0.21.0")
    w.publish("tokenizers", "0.22.0")
    py = w.venv(installed)
    yield from ((py, url) for url in _serve(_Quiet, w.root / "index"))


def _plan_for(py: str, url: str, **kw: object):  # type: ignore[no-untyped-def]
    from doctor.inventory import gather

    facts = gather(python=py)
    m = load_matrix()
    findings, _ = run_rules(facts, m)
    opts = PlanOptions(python=py, indexes=IndexConfig(index_url=url, pip_env=NO_CONFIG), **kw)  # type: ignore[arg-type]
    return facts, m, findings, opts


def test_minimal_move_not_the_unbounded_specifier(transformers_world: Tuple[str, str]) -> None:
    """Class 3: `transformers>=4.46.0` would have installed 5.0; the verified plan is 4.46.3, one exact pin."""
    facts, m, findings, opts = _plan_for(*transformers_world)
    plan = plan_fixes(facts, m, findings, opts)
    assert plan.verification.status == VERIFIED, plan.verification
    assert [(c.name, c.before, c.after) for c in plan.changes] == [("transformers", "4.45.2", "4.46.3")]
    (action,) = plan.actions
    assert action.requirements == ("transformers==4.46.3",)  # type: ignore[attr-defined]
    assert plan.verification.resolver_runs == 1 and not plan.verification.new


def test_install_keeps_what_works(transformers_world: Tuple[str, str]) -> None:
    """`doctor install transformers==5.0.0` would leave tokenizers unmet: pip resolves it along, exact pins."""
    facts, m, findings, opts = _plan_for(*transformers_world)
    plan = plan_install(facts, m, ["transformers==5.0.0"], opts)
    assert plan.verification.status == VERIFIED, plan.verification
    assert {(c.name, c.after) for c in plan.changes} == {("transformers", "5.0.0"), ("tokenizers", "0.22.0")}
    assert all("==" in r for a in plan.actions for r in a.requirements)  # type: ignore[attr-defined]


def test_garbage_index_is_no_plan(transformers_world: Tuple[str, str], tmp_path: Path) -> None:
    """An index that answers garbage: no plan, a one-line reason, nothing applied."""
    py, _ = transformers_world
    for url in _serve(_Garbage, tmp_path):
        facts, m, findings, opts = _plan_for(py, url)
        plan = plan_fixes(facts, m, findings, opts)
        assert plan.verification.status == FAILED and not plan.actions
        assert "\n" not in plan.verification.reason and plan.verification.reason


def test_unwritable_temp_dir_is_resolve_failed(transformers_world: Tuple[str, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No place to write the constraints file: ResolveFailed naming it, not an OSError traceback."""
    py, url = transformers_world
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing" / "dir"))  # root can write anywhere: make it absent
    with pytest.raises(ResolveFailed, match="cannot write"):
        Resolver(py, NO_CONFIG).resolve(ResolverRun(("transformers==4.46.3",), ("torch===1",), url))


def test_reports_cached_on_disk(transformers_world: Tuple[str, str]) -> None:
    """The same question within the hour is answered from the doctor's cache: no second pip run."""
    facts, m, findings, opts = _plan_for(*transformers_world)
    first = plan_fixes(facts, m, findings, opts)
    again = plan_fixes(facts, m, findings, opts)
    assert first.verification.resolver_runs == 1 and again.verification.resolver_runs == 0
    assert again.changes == first.changes
    assert plan_fixes(facts, m, findings, opts._replace(cache=False)).verification.resolver_runs == 1
