"""Applying a Plan with real pip into real venvs, from real local indexes on 127.0.0.1.

The plans here are made by hand (the planner's own tests verify plans; these test that a plan is applied
as it says): an uninstall, an upgrade with a new package from the default index, a rebuild of the same
version from a second index standing in for a PyTorch CUDA-family index, the plan's constraints file.
The helpers (indexes, venvs, installed versions) are shared by test_undo, test_fix and test_cli_install.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import pytest

from doctor.actions import PipInstall, PipUninstall
from doctor.errors import DoctorError
from doctor.findings import Category, Severity, finding
from doctor.resolve.options import IndexConfig
from doctor.resolve.plan import UNVERIFIED, VERIFIED, Change, Plan, Verification
from doctor.resolve.undo import Store
from tests.wheels import build_wheel

pytestmark = pytest.mark.slow

# The machine's own pip settings must not leak into the tests' pip runs (a config file, an index, a constraint).
PIP_ENV: Tuple[Tuple[str, str], ...] = (("PIP_CONFIG_FILE", os.devnull), ("PIP_NO_CACHE_DIR", "1"))
_CLEARED = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CONSTRAINT",
            "PIP_BUILD_CONSTRAINT", "PIP_REQUIRE_VIRTUALENV")


@pytest.fixture(autouse=True)
def _clean_pip_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No pip setting of this machine applies; the doctor's state goes to this test's own directory."""
    for k in _CLEARED:
        monkeypatch.delenv(k, raising=False)
    for k, v in PIP_ENV:
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


# -- local indexes --------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _Handler(http.server.BaseHTTPRequestHandler):
    """PEP 503 project pages (<index>/<project>/) for the wheels and sdists in <root>/<index>/; files under /files/."""

    root: Path

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        from urllib.parse import quote, unquote

        parts = [unquote(p) for p in self.path.split("?")[0].split("/") if p]
        if len(parts) >= 2 and parts[0] == "files":
            path = self.root.joinpath(*parts[1:])
            if path.is_file():
                return self._send(path.read_bytes(), "application/octet-stream")
        elif len(parts) >= 2 and (self.root.joinpath(*parts[:-1])).is_dir():  # <index>/<project>/
            index, project = "/".join(parts[:-1]), _norm(parts[-1])
            links = [f'<a href="/files/{index}/{quote(f.name)}">{html.escape(f.name)}</a>'
                     for f in sorted((self.root / index).iterdir()) if f.is_file() and _norm(f.name.split("-")[0]) == project]
            if links:
                return self._send(("<!DOCTYPE html><html><body>" + "<br>".join(links) + "</body></html>").encode(), "text/html")
        self.send_error(404)

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Indexes(NamedTuple):
    """Two local indexes: the default one and a PyTorch-like family index (<torch_base>/cu121)."""

    root: Path  # <root>/pypi, <root>/torch/cu121 hold the files
    url: str  # http://127.0.0.1:PORT

    @property
    def pypi(self) -> str:
        return f"{self.url}/pypi"

    @property
    def torch_base(self) -> str:
        return f"{self.url}/torch"

    def torch(self, variant: str = "cu121") -> str:
        return f"{self.url}/torch/{variant}"

    def config(self) -> IndexConfig:
        return IndexConfig(index_url=self.pypi, torch_index_url=self.torch_base, pip_env=PIP_ENV)

    def wheel(self, name: str, version: str, requires: Sequence[str] = (), where: str = "pypi",
              files: Optional[Dict[str, str]] = None) -> Path:
        return build_wheel(self.root / where, name, version, requires, files)


def serve(root: Path) -> Iterator[Indexes]:
    """Serve `root` on 127.0.0.1 until the generator is closed."""
    handler = type("Handler", (_Handler,), {"root": root})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Indexes(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def indexes(tmp_path: Path) -> Iterator[Indexes]:
    """Empty local indexes for one test."""
    (tmp_path / "idx" / "pypi").mkdir(parents=True)
    (tmp_path / "idx" / "torch" / "cu121").mkdir(parents=True)
    yield from serve(tmp_path / "idx")


def cpp_lib(cuda: int) -> Dict[str, str]:
    """xformers/cpp_lib.json of a build for torch 2.4.0 and this CUDA (1201 for 12.1)."""
    return {"xformers/cpp_lib.json": json.dumps({"version": {"torch": f"2.4.0+cu{cuda // 100}{cuda % 100 // 10}",
                                                             "cuda": cuda, "python": "3.11.0"}})}


# -- target venvs ---------------------------------------------------------------------------------------------


def make_venv(root: Path) -> str:
    """A real venv without pip of its own (the doctor's pip installs into it with --python); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    return str(root / "bin" / "python")


def pip_into(python: str, *args: str) -> None:
    """The test's own pip run into a target (setting up a world), failing loudly."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(PIP_ENV)
    res = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python", python, *args],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


def site_packages(python: str) -> Path:
    return next(Path(python).parent.parent.glob("lib/python*/site-packages"))


def installed(python: str) -> Dict[str, str]:
    """name -> the Version line of its METADATA, exactly as written (byte for byte), for every dist-info."""
    out: Dict[str, str] = {}
    for info in site_packages(python).glob("*.dist-info"):
        text = (info / "METADATA").read_text(encoding="utf-8")
        name = re.search(r"^Name: (.*)$", text, re.M).group(1).strip()  # type: ignore[union-attr]
        out[_norm(name)] = re.search(r"^Version: (.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    return out


def metadata_bytes(python: str) -> Dict[str, bytes]:
    """name -> its METADATA and package files' bytes (the same wheel installed again gives the same bytes)."""
    out: Dict[str, bytes] = {}
    site = site_packages(python)
    for info in site.glob("*.dist-info"):
        name = _norm(info.name.split("-")[0])
        blob = (info / "METADATA").read_bytes()
        pkg = site / info.name.split("-")[0]
        for f in sorted(pkg.rglob("*")) if pkg.is_dir() else []:
            if f.is_file() and "__pycache__" not in f.parts:
                blob += b"\0" + str(f.relative_to(site)).encode() + b"\0" + f.read_bytes()
        out[name] = blob
    return out


def facts_of(python: str):  # type: ignore[no-untyped-def]
    """The doctor's Facts of a target interpreter (no GPU)."""
    from doctor.inventory import gather

    return gather(python=python, environ={"DOCTOR_GPUS": "none", "PATH": os.environ.get("PATH", "")})


def target_finding(fid: str = "alpha.too-old", subject: str = ""):  # type: ignore[no-untyped-def]
    return finding(fid, Severity.ERROR, Category.PACKAGES, f"{fid} (test)", {"installed": "1.0"}, subject=subject)


def verified(changes: Sequence[Change], actions: Sequence[object], constraints: Sequence[str] = (),
             fixed: Sequence[object] = (), status: str = VERIFIED, python: Optional[str] = None) -> Plan:
    """A hand-made plan whose verification says what the test needs."""
    return Plan(tuple(fixed), tuple(changes), tuple(actions), tuple(constraints), tuple(constraints),  # type: ignore[arg-type]
                Verification(status, "index" if status == VERIFIED else "matrix", fixed=tuple(fixed),  # type: ignore[arg-type]
                             reason="" if status == VERIFIED else "offline: test"),
                python=python)


class World(NamedTuple):
    python: str
    idx: Indexes


@pytest.fixture
def world(tmp_path: Path, indexes: Indexes) -> World:
    """A venv with alpha 1.0, beta 1.0, xformers 0.0.28 (the default index's build, CUDA 12.8) and
    torch 2.4.0+cu121 (from the family index); the indexes also hold alpha 2.0, gamma 1.0, torch 2.5.0+cu121
    and xformers 0.0.28 built for CUDA 12.1 (same version string, another build)."""
    idx = indexes
    idx.wheel("alpha", "1.0")
    idx.wheel("alpha", "2.0")
    idx.wheel("beta", "1.0")
    idx.wheel("gamma", "1.0")
    idx.wheel("xformers", "0.0.28", files=cpp_lib(1208))
    idx.wheel("xformers", "0.0.28", where="torch/cu121", files=cpp_lib(1201))
    idx.wheel("torch", "2.4.0+cu121", where="torch/cu121")
    idx.wheel("torch", "2.5.0+cu121", where="torch/cu121")
    py = make_venv(tmp_path / "venv")
    pip_into(py, "install", "--no-deps", "--index-url", idx.pypi, "alpha==1.0", "beta==1.0", "xformers==0.0.28")
    pip_into(py, "install", "--no-deps", "--index-url", idx.torch(), "torch===2.4.0+cu121")
    return World(py, idx)


def xformers_cuda(python: str) -> int:
    return json.loads((site_packages(python) / "xformers" / "cpp_lib.json").read_text())["version"]["cuda"]


def the_plan(w: World) -> Plan:
    """Remove beta, upgrade alpha, add gamma (default index), rebuild xformers from the family index; keep torch."""
    idx = w.idx
    return verified(
        [Change("beta", "1.0", None, None, "test"), Change("alpha", "1.0", "2.0", idx.pypi, "test"),
         Change("gamma", None, "1.0", idx.pypi, "required by alpha"),
         Change("xformers", "0.0.28", "0.0.28", idx.torch(), "test", rebuild=True)],
        [PipUninstall(("beta",)),
         PipInstall(("alpha==2.0", "gamma==1.0"), index_url=idx.pypi, no_deps=True, only_binary=True),
         PipInstall(("xformers==0.0.28",), index_url=idx.torch(), no_deps=True, force_reinstall=True, only_binary=True)],
        constraints=("torch===2.4.0+cu121",), python=w.python)


def store_for(python: str) -> Store:
    facts = facts_of(python)
    return Store(facts.python.prefix, facts.python.executable)


# -- tests ----------------------------------------------------------------------------------------------------


def test_a_plan_is_applied_as_it_says(world: World) -> None:
    """Uninstall, upgrade + new package from the default index, a rebuild from the family index: each a real pip run
    aimed at the target, with the constraints file; the record says every step applied."""
    from doctor.fix import apply_plan

    py, idx = world
    plan = the_plan(world)
    facts = facts_of(py)
    store = Store(facts.python.prefix, facts.python.executable)
    lines: List[str] = []
    applied = apply_plan(plan, facts, store, "check --fix", idx.config(), python=py, echo=lines.append)
    assert applied.ok, lines
    assert [s.status for s in applied.steps] == ["applied"] * 3
    now = installed(py)
    assert now["alpha"] == "2.0" and now["gamma"] == "1.0" and "beta" not in now
    assert now["torch"] == "2.4.0+cu121" and xformers_cuda(py) == 1201  # the family index's build
    assert Path(applied.constraints_file or "").read_text() == "torch===2.4.0+cu121\n"
    cmds = [s.run.command for s in applied.steps]
    assert f"--python {py} uninstall -y beta" in cmds[0]
    assert "-c " + applied.constraints_file in cmds[1] and "--index-url " + idx.pypi in cmds[1]  # type: ignore[operator]
    assert "--index-url " + idx.torch() in cmds[2] and "--force-reinstall" in cmds[2]
    rec = store.records()[-1]
    assert rec.status == "applied" and rec.command == "check --fix"
    saved = {s.name: s for s in rec.before}
    assert saved["alpha"].version == "1.0" and saved["gamma"].version is None and saved["xformers"].xformers_cuda == 1208
    assert store.sources()["xformers"] == ("0.0.28", idx.torch())  # where the new build came from


def test_dry_run_writes_and_runs_nothing(world: World) -> None:
    """--dry-run prints the pip commands; no pip run, no state, no constraints file."""
    from doctor.fix import apply_plan

    py, idx = world
    before = metadata_bytes(py)
    store = store_for(py)
    lines: List[str] = []
    applied = apply_plan(the_plan(world), facts_of(py), store, "check --fix", idx.config(), python=py,
                         echo=lines.append, dry_run=True)
    assert [s.status for s in applied.steps] == ["dry run"] * 3 and len(lines) == 3
    assert metadata_bytes(py) == before
    assert not os.path.exists(store.path) and not os.path.exists(store.constraints_path)


def test_a_failing_step_stops_the_plan_and_says_what_was_applied(world: World) -> None:
    """The 2nd step asks for a version the index does not have: step 1 applied, 2 failed (pip's reason), 3 not run."""
    from doctor.fix import apply_plan

    py, idx = world
    plan = verified([Change("alpha", "1.0", "2.0", idx.pypi), Change("delta", None, "9.9", idx.pypi),
                     Change("beta", "1.0", None)],
                    [PipInstall(("alpha==2.0",), index_url=idx.pypi, no_deps=True),
                     PipInstall(("delta==9.9",), index_url=idx.pypi, no_deps=True),
                     PipUninstall(("beta",))], python=py)
    store = store_for(py)
    applied = apply_plan(plan, facts_of(py), store, "install delta", idx.config(), python=py, echo=lambda m: None)
    assert [s.status for s in applied.steps] == ["applied", "failed", "not run"]
    assert "delta==9.9" in applied.steps[1].detail or "No matching distribution" in applied.steps[1].detail
    assert installed(py)["alpha"] == "2.0" and installed(py)["beta"] == "1.0"
    rec = store.records()[-1]
    assert rec.status == "partly applied" and [s.status for s in rec.steps] == ["applied", "failed", "not run"]
    assert rec.progress == "step 1 applied, step 2 failed, step 3 not run"


def test_unwritable_state_changes_nothing(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state directory that cannot be written: one-line DoctorError, no pip run."""
    from doctor.fix import apply_plan

    py, idx = world
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    monkeypatch.setenv("DOCTOR_STATE_DIR", str(blocker))
    before = metadata_bytes(py)
    with pytest.raises(DoctorError) as err:
        apply_plan(the_plan(world), facts_of(py), store_for(py), "check --fix", idx.config(), python=py, echo=lambda m: None)
    assert "nothing was changed" in str(err.value) and "\n" not in str(err.value)
    assert metadata_bytes(py) == before


def test_unwritable_constraints_file_changes_nothing(world: World) -> None:
    """The constraints file cannot be written (a directory stands where it goes): one line, nothing run or saved."""
    from doctor.fix import apply_plan

    py, idx = world
    store = store_for(py)
    os.makedirs(os.path.join(store.constraints_path, "blocked"))
    before = metadata_bytes(py)
    with pytest.raises(DoctorError) as err:
        apply_plan(the_plan(world), facts_of(py), store, "check --fix", idx.config(), python=py, echo=lambda m: None)
    assert str(err.value).startswith("cannot write the constraints file") and "nothing was changed" in str(err.value)
    assert metadata_bytes(py) == before and not os.path.exists(store.path)


def test_refusal_rules() -> None:
    """A failed plan never applies; an unverified one needs --allow-unverified with --yes (a person may confirm it)."""
    from doctor.fix import refusal
    from doctor.resolve.plan import FAILED

    ok = verified([], [PipUninstall(("x",))])
    off = verified([], [PipUninstall(("x",))], status=UNVERIFIED)
    bad = Plan((), verification=Verification(FAILED, reason="nothing fits"))
    assert refusal(ok, yes=True, allow_unverified=False) is None
    assert "--allow-unverified" in (refusal(off, yes=True, allow_unverified=False) or "")
    assert refusal(off, yes=True, allow_unverified=True) is None and refusal(off, yes=False, allow_unverified=False) is None
    assert refusal(bad, yes=True, allow_unverified=True) == "no plan verified: nothing fits"


def test_defect_is_what_the_verification_promised_and_the_recheck_denies() -> None:
    """Only a verified plan's expected-gone findings count; the difference names the drift and the new findings."""
    from doctor.facts import Distribution, Facts, PlatformInfo, PythonInfo
    from doctor.fix import find_defect

    a, b, new = target_finding("alpha.too-old"), target_finding("beta.bad"), target_finding("gamma.new")
    plan = verified([Change("alpha", "1.0", "2.0")], [PipInstall(("alpha==2.0",))], fixed=[a, b])
    facts = Facts(PythonInfo("3.11", "CPython", "/p", "/p", "/p"), PlatformInfo("Linux", "x86_64", ""),
                  distributions={"alpha": Distribution("alpha", "1.5")})
    assert find_defect(plan, [a, b], [], facts) is None
    d = find_defect(plan, [a, b], [a, new], facts)
    assert d is not None and d.still == (a,) and d.new == (new,) and d.drift == (("alpha", "2.0", "1.5"),)
    unverified = verified([Change("alpha", "1.0", "2.0")], [PipInstall(("alpha==2.0",))], fixed=[a], status=UNVERIFIED)
    assert find_defect(unverified, [a], [a], facts) is None


def _build_sdist(out: Path, name: str, version: str) -> Path:
    """An sdist with an in-tree PEP 517 backend (no build requirements): pip builds it without the network."""
    import io
    import tarfile

    out.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    base = f"{dist}-{version}"
    backend = f'''
import base64, hashlib, os, zipfile
NAME, DIST, VERSION = {name!r}, {dist!r}, {version!r}
def get_requires_for_build_wheel(config_settings=None):
    return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{{DIST}}-{{VERSION}}.dist-info"
    files = {{f"{{DIST}}/__init__.py": "built = True\\n",
             f"{{info}}/METADATA": f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n\\n",
             f"{{info}}/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    rec = [f"{{k}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()}},{{len(v)}}" for k, v in files.items()]
    files[f"{{info}}/RECORD"] = "\\n".join(rec + [f"{{info}}/RECORD,,"]) + "\\n"
    fn = f"{{DIST}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, fn), "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return fn
'''
    members = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "backend.py": backend,
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    path = out / f"{dist}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for arc, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{arc}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_flash_attn_source_build_with_the_hooks_build_constraint(tmp_path: Path, indexes: Indexes,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The pin hook's build-constraint is in the target's pip.conf; flash-attn from source needs
    --no-build-isolation, which pip refuses together with it. The doctor runs that one install with
    PIP_BUILD_CONSTRAINT blank (pip drops an empty one) and the same file as -c, says so, and pip builds
    and installs it."""
    from doctor.fix import apply_plan, pip_runs

    py = make_venv(tmp_path / "venv")
    _build_sdist(indexes.root / "pypi", "flash-attn", "2.7.0")
    bc = tmp_path / "hook constraints.txt"  # a space: pip.conf names it as a file:// URL
    bc.write_text("torch===2.4.0+cu121\n")
    prefix = str(tmp_path / "venv")
    Path(prefix, "pip.conf").write_text(f"[install]\nbuild-constraint = {bc.as_uri()}\n")
    action = PipInstall(("flash-attn==2.7.0",), index_url=indexes.pypi, no_deps=True)
    empty = tmp_path / "empty.conf"  # an existing PIP_CONFIG_FILE: no user config, but the site pip.conf is read
    empty.write_text("")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(empty))
    env = dict(os.environ)
    plain = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-build-isolation",
                            *action.argv()], capture_output=True, text=True, timeout=300, env=env)
    assert plain.returncode != 0 and "--build-constraint cannot be used with --no-build-isolation" in plain.stderr
    run = pip_runs([action], py, prefix, environ=env)[0]
    assert "--no-build-isolation" in run.argv and run.argv[-2:] == ("-c", bc.as_uri())
    assert ("PIP_BUILD_CONSTRAINT", " ") in run.env and "PIP_BUILD_CONSTRAINT blank" in run.note
    plan = verified([Change("flash-attn", None, "2.7.0", indexes.pypi)], [action], python=py)
    lines: List[str] = []
    applied = apply_plan(plan, facts_of(py), store_for(py), "install flash-attn",
                         IndexConfig(index_url=indexes.pypi), python=py, echo=lines.append)
    assert applied.ok, "\n".join(lines)
    assert installed(py)["flash-attn"] == "2.7.0"
    assert any("PIP_BUILD_CONSTRAINT blank" in ln for ln in lines)
