"""README's two commands, run as written against a system Python that refuses global installs (PEP 668).

The commands are read from README.md's "## The two commands" section, so editing them there is what is
tested. They run with `sh` in a copy of the project, with a fake *system* Python first on PATH as
`python3`: not a virtual environment, its own prefix (a copy of the real interpreter binary and the real
standard library linked entry by entry), the `EXTERNALLY-MANAGED` marker in its stdlib, and pip alone in
its site-packages, as on Debian 12 / Ubuntu 24.04. Twice: with `ensurepip` (python3-venv installed) and
without it (python3-venv missing, where `python3 -m venv` fails and the command's fallback must work).

pip never reaches an index: every install comes from a local wheelhouse repacked from the distributions
installed here (RECORD lists their files), with the machine's pip configuration switched off.

The test command is covered up to its install: its `.[test]` extras need torch 2.13.0 (hundreds of MB)
and running the whole suite inside itself is CI's job (`.ci/run`, which must hold that exact line). So
the test command's venv step runs as written (reusing the `.venv` the doctor command made) and its install
runs as `pip install -e .`; that the last step is pytest under `.venv/bin/python` is checked on the text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomli is a dependency of the doctor below 3.11
    import tomli as tomllib

STEP_TIMEOUT = 300  # seconds for one shell line (venv + offline pip install), far above the ~10 s it takes
REFUSED = "externally-managed-environment"


def _section(text: str, heading: str) -> str:
    """The body of a `## heading` section of a markdown text, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def _readme_commands() -> Tuple[str, str]:
    """README's two commands: the first two indented code lines of "## The two commands" (doctor, tests)."""
    body = _section((REPO / "README.md").read_text(encoding="utf-8"), "The two commands")
    code = [line[4:] for line in body.splitlines() if line.startswith("    ") and line.strip()]
    assert len(code) >= 2, "README's '## The two commands' lost its two indented command lines"
    return code[0], code[1]


def _steps(command: str) -> Tuple[str, str, str]:
    """A command as (make the venv, install into it, run): the last two `&&` steps are install and run."""
    venv_step, install, run = command.rsplit(" && ", 2)
    return venv_step, install, run


def test_readme_commands_use_their_own_venv_and_ci_runs_the_test_command() -> None:
    """Both commands make the same .venv and run from it; .ci/run holds the test command verbatim."""
    doctor_cmd, test_cmd = _readme_commands()
    doctor_venv, doctor_install, doctor_run = _steps(doctor_cmd)
    test_venv, test_install, test_run = _steps(test_cmd)
    assert doctor_venv == test_venv
    assert doctor_venv.startswith("python3 -m venv .venv")
    assert doctor_install == ".venv/bin/python -m pip install ."
    assert doctor_run == ".venv/bin/doctor check"
    assert test_install == ".venv/bin/python -m pip install -e '.[test]'"
    assert test_run == ".venv/bin/python -m pytest"
    # the old commands installed into whatever python3 was: the system one refuses that (PEP 668)
    assert "python3 -m pip install ." not in doctor_cmd and "python3 -m pytest" not in test_cmd
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd in ci.splitlines(), ".ci/run must run exactly README's test command"
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".venv/" in ignored


# ---- a local wheelhouse: the doctor's dependencies, its build backend and pip, from what is installed here


def _search_path() -> List[str]:
    """Where installed distributions are looked for: this interpreter's path, then its base's site dirs."""
    base_sites = site.getsitepackages([sys.base_prefix]) if hasattr(site, "getsitepackages") else []
    return [p for p in sys.path + base_sites if p and os.path.isdir(p)]


def _installed(name: str) -> Optional[metadata.Distribution]:
    """The newest installed distribution called `name` (a base interpreter may hold a newer setuptools)."""
    key = canonicalize_name(name)
    found = [d for d in metadata.distributions(path=_search_path())
             if canonicalize_name(d.metadata["Name"] or "") == key]
    return max(found, key=lambda d: Version(d.version), default=None)


def _record_line(arc: str, data: bytes) -> str:
    """One RECORD row: path, urlsafe-base64 sha256 without padding, size."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arc},sha256={digest},{len(data)}"


def _repack(dist: metadata.Distribution, out_dir: Path) -> Path:
    """A wheel of an installed distribution from the files its RECORD lists.

    Scripts (paths above site-packages) and bytecode are left out: pip regenerates both on install.
    """
    files = list(dist.files or [])
    infos = {f.parts[0] for f in files if f.parts and f.parts[0].endswith(".dist-info")}
    if len(infos) != 1:
        pytest.skip(f"{dist.metadata['Name']} was not installed from a wheel: no RECORD to repack")
    info = infos.pop()
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    if not tags:
        pytest.skip(f"{dist.metadata['Name']} has no WHEEL tag to repack with")
    dropped = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    stem = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    path = out_dir / f"{stem}-{dist.version}-{tags[0]}.whl"
    record = []
    with zipfile.ZipFile(path, "w") as zf:
        for f in files:
            arc = f.as_posix()
            if arc.startswith("..") or "__pycache__" in f.parts or arc.endswith(".pyc") or arc in dropped:
                continue
            data = Path(str(f.locate())).read_bytes()
            zf.writestr(arc, data)
            record.append(_record_line(arc, data))
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def _closure(roots: Iterable[str]) -> Dict[str, metadata.Distribution]:
    """The installed distributions that satisfy `roots` and everything they require (markers evaluated)."""
    found: Dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        dist = _installed(req.name)
        if dist is None or not req.specifier.contains(dist.version, prereleases=True):
            pytest.skip(f"{req} is not installed here: no offline wheel for it")
        found[key] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return found


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels for installing the project with no index: its dependencies, its build backend, pip."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    roots = ["pip"] + project["build-system"]["requires"] + project["project"]["dependencies"]
    dists = _closure(roots)
    backend = dists["setuptools"]
    wheel = _installed("wheel")
    if wheel is not None:
        dists["wheel"] = wheel  # setuptools before 70.1 asks for it to build any wheel
    elif Version(backend.version) < Version("70.1"):
        pytest.skip("setuptools < 70.1 builds wheels only with `wheel`, which is not installed here")
    out = tmp_path_factory.mktemp("wheelhouse")
    for dist in dists.values():
        _repack(dist, out)
    return out


# ---- a system Python that refuses global installs


def _offline_env(wheelhouse: Path, path_first: Path, home: Path) -> Dict[str, str]:
    """The environment of a fresh shell: fake python3 first on PATH, pip only from the wheelhouse."""
    keep = ("LANG", "LC_ALL", "TMPDIR", "TERM")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({
        "PATH": f"{path_first}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "DOCTOR_CACHE_DIR": str(home / "doctor-cache"),
        "PIP_CONFIG_FILE": os.devnull,  # not the machine's pip.conf (a local index there is not a fresh box)
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_NO_INPUT": "1",
    })
    return env


def _real_interpreter() -> Path:
    """The interpreter binary behind this one (the base one when the tests run in a venv)."""
    return Path(os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable))


def _build_fake_python(root: Path, with_ensurepip: bool) -> Path:
    """A non-venv Python prefix at `root` whose stdlib is marked EXTERNALLY-MANAGED; returns bin/python3."""
    stdlib = Path(os.__file__).resolve().parent
    lib = root / "lib" / stdlib.name
    lib.mkdir(parents=True)
    skip = {"site-packages", "dist-packages", "EXTERNALLY-MANAGED"} | (set() if with_ensurepip else {"ensurepip"})
    for entry in stdlib.iterdir():
        if entry.name not in skip:
            (lib / entry.name).symlink_to(entry)
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python is managed by the test's fake OS: use a venv.\n", encoding="utf-8")
    # a binary linked with an $ORIGIN-relative runpath finds libpython next to its prefix
    for so in Path(sys.base_prefix, "lib").glob("libpython*.so*"):
        (root / "lib" / so.name).symlink_to(so)
    (root / "bin").mkdir()
    exe = root / "bin" / "python3"
    shutil.copy2(_real_interpreter(), exe)  # a copy, not a link: the prefix is found from the binary's place
    return exe


def _run(cmd: List[str], env: Dict[str, str], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run with no stdin and the step timeout, capturing text output."""
    return subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)


def _give_pip(exe: Path, env: Dict[str, str]) -> None:
    """Put this interpreter's pip (package and dist-info) into the fake Python's site-packages, as python3-pip does."""
    pip_dist = metadata.distribution("pip")
    if Version(pip_dist.version) < Version("22.3"):
        pytest.skip(f"pip {pip_dist.version} here has no --python option (22.3+), which the fallback uses")
    proc = _run([str(exe), "-c", "import site; print(site.getsitepackages()[0])"], env)
    assert proc.returncode == 0, proc.stderr
    target = Path(proc.stdout.strip())
    target.mkdir(parents=True, exist_ok=True)
    top = Path(str(pip_dist.locate_file("")))
    tops = {f.parts[0] for f in pip_dist.files or [] if f.parts}
    for name in sorted(n for n in tops if n == "pip" or n.endswith(".dist-info")):
        (target / name).symlink_to(top / name)


@pytest.fixture(scope="module", params=[True, False], ids=["python3-venv", "no-python3-venv"])
def system_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  wheelhouse: Path) -> Dict[str, str]:
    """A shell environment whose `python3` is a fake system Python that really refuses global installs."""
    root = tmp_path_factory.mktemp("system")
    exe = _build_fake_python(root / "usr", with_ensurepip=request.param)
    home = root / "home"
    home.mkdir()
    env = _offline_env(wheelhouse, exe.parent, home)
    _give_pip(exe, env)
    probe = _run(["sh", "-c", "command -v python3; python3 -c 'import sys; print(sys.prefix == sys.base_prefix)'"],
                 env)
    assert probe.stdout.split() == [str(exe), "True"], probe.stdout + probe.stderr
    # it must really refuse, even with the wheel at hand, before anything below is trusted
    refused = _run([str(exe), "-m", "pip", "install", "filelock"], env)
    assert refused.returncode != 0 and REFUSED in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    if not request.param:  # and without ensurepip, a plain venv must fail, so the fallback is what runs
        plain = _run([str(exe), "-m", "venv", str(root / "plain")], env)
        assert plain.returncode != 0, plain.stdout + plain.stderr
    return env


@pytest.fixture()
def project_copy(tmp_path: Path) -> Path:
    """The working tree as a user would have it after cloning: no venv, no build output, no caches."""
    dst = tmp_path / "tune-doctor"
    shutil.copytree(REPO, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".cache", ".whl", "build", "dist", ".pytest_cache",
        ".benchmarks"))
    return dst


@pytest.mark.slow
def test_old_readme_command_is_refused_by_a_pep668_python(system_python: Dict[str, str],
                                                          project_copy: Path) -> None:
    """The defect: the old `python3 -m pip install .` fails on such a machine (externally-managed-environment)."""
    proc = _run(["sh", "-c", "python3 -m pip install ."], system_python, cwd=project_copy)
    assert proc.returncode != 0
    assert REFUSED in proc.stdout + proc.stderr


@pytest.mark.slow
def test_readme_commands_work_as_written_on_a_pep668_python(system_python: Dict[str, str],
                                                            project_copy: Path) -> None:
    """The doctor command makes .venv, installs and checks (exit 0/1/2); the test command reuses .venv."""
    doctor_cmd, test_cmd = _readme_commands()
    proc = _run(["sh", "-c", doctor_cmd], system_python, cwd=project_copy)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1, 2), out  # 3 bad input, 4 internal error, anything else: the line broke
    assert "Traceback" not in proc.stderr, out
    venv = project_copy / ".venv"
    assert (venv / "pyvenv.cfg").is_file(), out
    cfg = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    assert f"home = {Path(system_python['PATH'].split(os.pathsep)[0])}" in cfg  # made from the system python3
    assert (venv / "bin" / "python").exists() and (venv / "bin" / "doctor").exists()
    report = _run([str(venv / "bin" / "doctor"), "check", "--no-probes", "--json"], system_python,
                  cwd=project_copy)
    assert report.returncode in (0, 1, 2), report.stdout + report.stderr
    doc = json.loads(report.stdout)
    assert "schema_version" in doc
    assert doc["facts"]["executable"].startswith(str(venv))  # it checked the environment it runs in
    pip_in_venv = _run([str(venv / "bin" / "python"), "-m", "pip", "--version"], system_python)
    assert pip_in_venv.returncode == 0, pip_in_venv.stderr  # `doctor check --fix` needs pip in its env

    # the test command: its venv step as written (reusing .venv), its install without the heavy extras
    venv_step, install, _ = _steps(test_cmd)
    editable = install.replace(" '.[test]'", " .")
    proc = _run(["sh", "-c", f"{venv_step} && {editable}"], system_python, cwd=project_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = _run([str(venv / "bin" / "python"), "-c", "import doctor; print(doctor.__file__)"], system_python,
                 cwd=venv)
    assert where.stdout.strip() == str(project_copy / "doctor" / "__init__.py"), where.stdout + where.stderr
