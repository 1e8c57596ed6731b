"""The pre-install hook against real venvs and their own pip, as a user has them.

Two pips: whatever `venv` gives (ensurepip's bundled pip, before 26.2: constraints reach build isolation
by themselves) and a pip >= 26.2 (the running interpreter's own pip repacked into a wheel from its RECORD
and installed into the venv, offline), where only `build-constraint` reaches build isolation. Each venv
holds a stand-in torch 2.13.0+cpu (real dist-info and torch/version.py); a find-links folder offers torch
9.9. After `doctor pin --hook --python VENV`, pip itself must refuse `pip install torch==9.9`.

pip's own configuration on this machine is neutralised without PIP_CONFIG_FILE (os.devnull would switch
off the site pip.conf the hook writes): every PIP_* variable is dropped and HOME, XDG_CONFIG_HOME and
XDG_CONFIG_DIRS point into the test's temp folder.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from packaging.version import Version

from doctor.resolve.refusal import explain_refusal
from tests.conftest import torch_wheel
from tests.wheels import build_wheel

pytestmark = pytest.mark.slow

TIMEOUT = 300
NEEDS_TORCH_BACKEND = '''\
import base64, hashlib, importlib.metadata as md, os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """A wheel that records which torch its isolated build environment had."""
    info = "needs_torch-1.0.dist-info"
    files = {"needs_torch.py": "BUILT_WITH_TORCH = %r\\n" % md.version("torch"),
             info + "/METADATA": "Metadata-Version: 2.1\\nName: needs-torch\\nVersion: 1.0\\n\\n",
             info + "/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    rec = ["%s,sha256=%s,%d" % (k, base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode(),
                                len(v.encode())) for k, v in files.items()]
    files[info + "/RECORD"] = "\\n".join(rec + [info + "/RECORD,,"]) + "\\n"
    name = "needs_torch-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return name
'''


# -- worlds ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The installed stand-in torch, a find-links folder with torch 9.9 and numpy 1.0/2.0, and an sdist-like
    project whose build needs torch (an in-tree backend: no setuptools, nothing from an index)."""
    root = tmp_path_factory.mktemp("hook-wheels")
    links = root / "links"
    torch_wheel(links, "9.9", None)
    build_wheel(links, "numpy", "1.0")
    build_wheel(links, "numpy", "2.0")
    project = root / "needs_torch"
    project.mkdir()
    (project / "pyproject.toml").write_text('[build-system]\nrequires = ["torch"]\nbuild-backend = "backend"\n'
                                            'backend-path = ["."]\n\n[project]\nname = "needs-torch"\nversion = "1.0"\n')
    (project / "backend.py").write_text(NEEDS_TORCH_BACKEND)
    return {"torch": torch_wheel(root / "installed", "2.13.0+cpu", None), "links": links, "project": project}


def _clean_env(home: Path) -> Dict[str, str]:
    """This process's environment without pip's or uv's variables, HOME and XDG dirs in the test's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    (home / ".config").mkdir(parents=True, exist_ok=True)
    (home / "xdg").mkdir(exist_ok=True)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CONFIG_DIRS": str(home / "xdg"),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    return env


def _record_line(arc: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arc},sha256={digest},{len(data)}"


def _repacked_pip(out: Path) -> Optional[Path]:
    """The running interpreter's pip as a wheel (from the files its RECORD lists), when it is >= 26.2."""
    dist = metadata.distribution("pip")
    if Version(dist.version) < Version("26.2"):
        return None
    files = [f for f in dist.files or [] if not f.as_posix().startswith("..") and "__pycache__" not in f.parts]
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pip-{dist.version}-py3-none-any.whl"
    record: List[str] = []
    with zipfile.ZipFile(path, "w") as zf:
        for f in files:
            arc = f.as_posix()
            if arc in skip:
                continue
            data = Path(str(f.locate())).read_bytes()
            zf.writestr(arc, data)
            record.append(_record_line(arc, data))
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def _pip_26_wheel(tmp: Path) -> Optional[Path]:
    """A pip >= 26.2 wheel available offline: the running pip repacked, else one in a local wheel folder."""
    repacked = _repacked_pip(tmp)
    if repacked is not None:
        return repacked
    for folder in (Path("/opt/wheels"), Path("/opt/pypi/files")):
        for whl in sorted(folder.glob("pip-2*.whl")) if folder.is_dir() else []:
            if Version(whl.name.split("-")[1]) >= Version("26.2"):
                return whl
    return None


def _make_template(root: Path, wheels: Dict[str, Path], pip_wheel: Optional[Path] = None) -> Path:
    """A venv with its own pip (ensurepip's, or upgraded from `pip_wheel`) and the stand-in torch installed."""
    env = _clean_env(root / "home")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=TIMEOUT, env=env)
    py = root / "venv" / "bin" / "python"
    extra = [str(pip_wheel)] if pip_wheel else []
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheels["torch"]), *extra],
                   check=True, timeout=TIMEOUT, env=env)
    return root / "venv"


@pytest.fixture(scope="module")
def template_old(tmp_path_factory: pytest.TempPathFactory, wheels: Dict[str, Path]) -> Path:
    """A venv with the pip `venv` bundles (the interpreter's ensurepip)."""
    return _make_template(tmp_path_factory.mktemp("tpl-old"), wheels)


@pytest.fixture(scope="module")
def template_26(tmp_path_factory: pytest.TempPathFactory, wheels: Dict[str, Path]) -> Path:
    """A venv whose pip is >= 26.2 (constraints no longer reach build isolation)."""
    root = tmp_path_factory.mktemp("tpl-26")
    whl = _pip_26_wheel(root / "pip-wheel")
    if whl is None:
        pytest.skip("no pip >= 26.2 available offline (the running pip is older and no wheel is on disk)")
    return _make_template(root, wheels, whl)


class Venv:
    """A copy of a template venv (a venv's prefix is where it lies), with a clean pip environment."""

    def __init__(self, template: Path, where: Path, wheels: Dict[str, Path]) -> None:
        where.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, where, symlinks=True)
        self.prefix = where
        self.python = str(where / "bin" / "python")
        self.home = where.parent / "home"
        self.env = _clean_env(self.home)
        self.links = wheels["links"]
        self.project = wheels["project"]

    @property
    def pip_conf(self) -> Path:
        return self.prefix / "pip.conf"

    def pip(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-m", "pip", *args], capture_output=True, text=True, timeout=TIMEOUT,
                              env={**self.env, **(env or {})})

    def install_torch_99(self, *extra: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """What the hook must refuse: a pip install that replaces torch."""
        return self.pip("install", "--no-index", "--find-links", str(self.links), *extra, "torch==9.9", env=env)

    def doctor(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "doctor", "pin", "--python", self.python, *args], capture_output=True,
                              text=True, timeout=TIMEOUT, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture
def venv_old(template_old: Path, tmp_path: Path, wheels: Dict[str, Path]) -> Venv:
    return Venv(template_old, tmp_path / "env" / "venv", wheels)


@pytest.fixture
def venv_26(template_26: Path, tmp_path: Path, wheels: Dict[str, Path]) -> Venv:
    return Venv(template_26, tmp_path / "env" / "venv", wheels)


def _refused(res: subprocess.CompletedProcess, pin: str = "torch===2.13.0+cpu") -> None:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert f"The user requested (constraint) {pin}" in out, out


def _tree(path: Path) -> Dict[str, bytes]:
    """Every file under a prefix, except bytecode, for comparing before and after."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts}


# -- the hook and pip ------------------------------------------------------------------------------------------


def test_hook_makes_pip_refuse_a_torch_replacement_and_unhook_removes_it(venv_old: Venv) -> None:
    v = venv_old
    assert "Would install torch-9.9" in v.install_torch_99("--dry-run").stdout  # without the hook pip would do it
    before = _tree(v.prefix)
    res = v.doctor("--hook")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hook installed" in res.stdout and "pip uninstall torch" in res.stdout
    assert "no build-constraint needed" in res.stdout  # ensurepip's pip passes constraints into build isolation
    conf = v.pip_conf.read_text()
    assert "[install]" in conf and f"constraint = {v.prefix}/etc/tune-doctor/constraints.txt" in conf
    assert "build-constraint" not in conf
    _refused(v.install_torch_99())
    assert v.pip("show", "torch").stdout.count("2.13.0+cpu") == 1  # nothing was replaced

    status = v.doctor("--status")
    assert status.returncode == 0 and "in force" in status.stdout and "keeps torch 2.13.0+cpu" in status.stdout

    res = v.doctor("--unhook")
    assert res.returncode == 0 and "removed (there was none before)" in res.stdout
    assert _tree(v.prefix) == before  # no pip.conf, no etc/ left behind
    assert "Would install torch-9.9" in v.install_torch_99("--dry-run").stdout
    again = v.doctor("--unhook")
    assert again.returncode == 0 and "no hook" in again.stdout


def test_existing_pip_conf_is_restored_byte_for_byte_and_its_constraint_included(venv_old: Venv, tmp_path: Path) -> None:
    """A site pip.conf with an [install] constraint of its own (and CRLF, comments, a mode): the hook's setting
    replaces it, so the hook's file includes it; --unhook puts back the same bytes and mode."""
    v = venv_old
    other = tmp_path / "other-constraints.txt"
    other.write_text("numpy<2\n")
    original = (f"; site config\r\n[global]\r\ntimeout = 60\r\n\r\n[install]\r\nno-warn-script-location = true\r\n"
                f"constraint =\r\n    {other}\r\n# end\r\n").encode()
    v.pip_conf.write_bytes(original)
    v.pip_conf.chmod(0o600)
    assert "Would install numpy-2.0" not in v.pip("install", "--dry-run", "--no-index", "--find-links", str(v.links),
                                                  "numpy==2.0").stdout
    res = v.doctor("--hook")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"includes the constraint set before: {other}" in res.stdout
    cfile = v.prefix / "etc" / "tune-doctor" / "constraints.txt"
    assert f"-c {other}" in cfile.read_text()
    conf = v.pip_conf.read_bytes()
    assert b"timeout = 60\r\n" in conf and b"no-warn-script-location = true\r\n" in conf and str(other).encode() not in conf
    _refused(v.install_torch_99())
    _refused(v.pip("install", "--no-index", "--find-links", str(v.links), "numpy==2.0"), "numpy<2")

    assert v.doctor("--hook").returncode == 0  # idempotent: the backup stays the original file
    assert v.pip_conf.read_bytes() == conf
    assert v.doctor("--unhook").returncode == 0
    assert v.pip_conf.read_bytes() == original
    assert oct(v.pip_conf.stat().st_mode & 0o777) == oct(0o600)
    assert not (v.prefix / "etc").exists()


def test_paths_with_spaces(template_old: Path, tmp_path: Path, wheels: Dict[str, Path]) -> None:
    """pip splits list settings on whitespace: a prefix with a space is written as a file:// URL, which pip opens."""
    v = Venv(template_old, tmp_path / "my envs" / "venv one", wheels)
    v.pip_conf.write_text("[global]\ntimeout = 30\n")
    original = v.pip_conf.read_bytes()
    res = v.doctor("--hook")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "constraint = file://" in v.pip_conf.read_text() and "%20" in v.pip_conf.read_text()
    assert "splits UV_CONSTRAINT on whitespace" in res.stdout
    _refused(v.install_torch_99())
    assert v.doctor("--status").returncode == 0
    assert v.doctor("--unhook").returncode == 0
    assert v.pip_conf.read_bytes() == original


def test_user_level_constraint_is_composed(venv_old: Venv, tmp_path: Path) -> None:
    """A constraint in the user's pip.conf would be replaced by the site file's: the hook's file includes it."""
    v = venv_old
    other = tmp_path / "user-constraints.txt"
    other.write_text("numpy<2\n")
    (v.home / ".config" / "pip").mkdir(parents=True)
    (v.home / ".config" / "pip" / "pip.conf").write_text(f"[global]\nconstraint = {other}\n")
    res = v.doctor("--hook")
    assert res.returncode == 0 and f"includes the constraint set before: {other}" in res.stdout
    _refused(v.pip("install", "--no-index", "--find-links", str(v.links), "numpy==2.0"), "numpy<2")
    _refused(v.install_torch_99())


@pytest.mark.parametrize("value, message", [("relative/c.txt", "is a relative path"), ("/nonexistent/c.txt", "does not exist")])
def test_a_constraint_that_cannot_be_included_refuses_the_hook(venv_old: Venv, value: str, message: str) -> None:
    v = venv_old
    (v.home / ".config" / "pip").mkdir(parents=True)
    (v.home / ".config" / "pip" / "pip.conf").write_text(f"[install]\nconstraint = {value}\n")
    before = _tree(v.prefix)
    res = v.doctor("--hook")
    assert res.returncode == 3 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert _tree(v.prefix) == before


def test_pip_constraint_in_the_environment_overrides_pip_conf(venv_old: Venv, tmp_path: Path) -> None:
    """PIP_CONSTRAINT replaces pip.conf's setting: the hook includes it, says so, and --status reports it."""
    v = venv_old
    other = tmp_path / "env-constraints.txt"
    other.write_text("numpy<2\n")
    res = v.doctor("--hook", env={"PIP_CONSTRAINT": str(other)})
    assert res.returncode == 1, res.stdout + res.stderr  # installed, but not in force in that shell
    assert "PIP_CONSTRAINT is set in this environment and replaces pip.conf's constraint" in res.stdout
    status = v.doctor("--status", env={"PIP_CONSTRAINT": str(other)})
    assert status.returncode == 1 and "NOT in force" in status.stdout and "replaces the hook's" in status.stdout
    # with the hook's file in PIP_CONSTRAINT (as the notebook API sets it) both constraints hold
    cfile = str(v.prefix / "etc" / "tune-doctor" / "constraints.txt")
    _refused(v.pip("install", "--no-index", "--find-links", str(v.links), "numpy==2.0", env={"PIP_CONSTRAINT": cfile}),
             "numpy<2")
    dev_null = v.doctor("--status", env={"PIP_CONFIG_FILE": os.devnull})
    assert dev_null.returncode == 1 and "pip reads no config file" in dev_null.stdout


def test_status_says_when_the_pins_no_longer_match_torch(venv_old: Venv, wheels: Dict[str, Path]) -> None:
    v = venv_old
    assert v.doctor("--status").stdout.startswith(f"pre-install hook for {v.prefix}: not installed")
    assert v.doctor("--hook").returncode == 0
    # a torch changed behind the hook's back (PIP_CONFIG_FILE=/dev/null: no pip.conf, no constraint)
    res = v.pip("install", "--no-index", "--find-links", str(v.links), "torch==9.9", env={"PIP_CONFIG_FILE": os.devnull})
    assert res.returncode == 0, res.stderr
    st = v.doctor("--status")
    assert st.returncode == 1 and "keeps torch 2.13.0+cpu but torch 9.9 is installed" in st.stdout


def test_the_hook_does_not_stop_uninstall(venv_old: Venv) -> None:
    """Said in the output, and true: constraints limit installs only."""
    v = venv_old
    assert "does not stop `pip uninstall torch`" in v.doctor("--hook").stdout
    assert v.pip("uninstall", "-y", "torch").returncode == 0


# -- pip >= 26.2: build isolation ------------------------------------------------------------------------------


def test_old_pip_passes_constraints_into_build_isolation(venv_old: Venv) -> None:
    """Before 26.2 the `constraint` alone reaches the isolated build: a build needing torch gets no torch 9.9."""
    v = venv_old
    assert v.doctor("--hook").returncode == 0
    res = v.pip("install", "--no-index", "--find-links", str(v.links), str(v.project))
    assert res.returncode != 0 and "torch===2.13.0+cpu" in res.stdout + res.stderr


def test_pip_26_needs_build_constraint_and_the_hook_writes_it(venv_26: Venv) -> None:
    v = venv_26
    # what a constraint alone does on this pip: the isolated build pulls torch 9.9 regardless
    cfile = v.prefix / "only-constraint.txt"
    cfile.write_text("torch===2.13.0+cpu\n")
    v.pip_conf.write_text(f"[install]\nconstraint = {cfile}\n")
    built = v.pip("wheel", "--no-deps", "--no-index", "--find-links", str(v.links), "-w", str(v.prefix / "out"),
                  str(v.project), env={"PIP_CONSTRAINT": str(cfile)})
    assert built.returncode == 0, built.stdout + built.stderr
    with zipfile.ZipFile(next((v.prefix / "out").glob("needs_torch-*.whl"))) as zf:
        assert zf.read("needs_torch.py") == b"BUILT_WITH_TORCH = '9.9'\n"
    v.pip_conf.unlink()

    res = v.doctor("--hook")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "build-constraint set too" in res.stdout and "refuses --no-build-isolation" in res.stdout
    assert "build-constraint = " in v.pip_conf.read_text()
    _refused(v.install_torch_99())
    refused_build = v.pip("install", "--no-index", "--find-links", str(v.links), str(v.project))
    assert refused_build.returncode != 0 and "(constraint) torch===2.13.0+cpu" in refused_build.stdout + refused_build.stderr
    clash = v.pip("install", "--no-build-isolation", "--no-index", "--find-links", str(v.links), str(v.project))
    assert clash.returncode != 0 and "--build-constraint cannot be used with --no-build-isolation" in clash.stderr
    why = explain_refusal(clash.stderr)
    assert why.kind == "no-build-isolation" and "doctor install flash-attn" in why.explanation
    # an empty PIP_BUILD_CONSTRAINT does not lift it (pip drops empty values, so pip.conf's stands) ...
    empty = v.pip("install", "--no-build-isolation", "--no-index", "--find-links", str(v.links), str(v.project),
                  env={"PIP_BUILD_CONSTRAINT": ""})
    assert "--build-constraint cannot be used with --no-build-isolation" in empty.stderr
    # ... a blank one (a space) does, as the explanation says; the build then uses the venv's own torch
    lifted = v.pip("install", "--no-build-isolation", "--no-index", "--find-links", str(v.links), str(v.project),
                   env={"PIP_BUILD_CONSTRAINT": " "})
    assert lifted.returncode == 0, lifted.stdout + lifted.stderr
    assert "PIP_BUILD_CONSTRAINT=' '" in " ".join(why.advice)
    built_with = subprocess.run([v.python, "-c", "import needs_torch; print(needs_torch.BUILT_WITH_TORCH)"],
                                capture_output=True, text=True, timeout=60, env=v.env).stdout
    assert built_with.strip() == "2.13.0+cpu"

    assert v.doctor("--unhook").returncode == 0
    assert not v.pip_conf.exists()


# -- uv's variables in bin/activate -------------------------------------------------------------------------


def test_shell_exports_uv_variables_from_activate_and_unhook_restores_it(venv_old: Venv) -> None:
    v = venv_old
    activate = v.prefix / "bin" / "activate"
    original = activate.read_bytes()
    res = v.doctor("--hook", "--shell")
    assert res.returncode == 0 and f"exported by {activate}" in res.stdout, res.stdout
    cfile = v.prefix / "etc" / "tune-doctor" / "constraints.txt"
    script = f'. "{activate}"; echo "on=$UV_CONSTRAINT"; deactivate; echo "off=[$UV_CONSTRAINT]"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=v.env).stdout
    assert f"on={cfile}" in out and "off=[]" in out, out
    assert v.doctor("--hook", "--shell").returncode == 0  # idempotent
    assert activate.read_text().count("tune-doctor pins (") == 1
    assert v.doctor("--unhook").returncode == 0
    assert activate.read_bytes() == original


# -- bad input: nothing changed -------------------------------------------------------------------------------


def test_unwritable_constraints_dir_changes_nothing(venv_old: Venv) -> None:
    v = venv_old
    (v.prefix / "etc").write_text("a file where the hook's directory would go\n")
    before = _tree(v.prefix)
    res = v.doctor("--hook")
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1 and "nothing changed" in res.stderr, res.stderr
    assert _tree(v.prefix) == before


def test_unwritable_pip_conf_changes_nothing(venv_old: Venv) -> None:
    v = venv_old
    v.pip_conf.mkdir()  # pip.conf that is no file
    before = _tree(v.prefix)
    res = v.doctor("--hook")
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert _tree(v.prefix) == before and not (v.prefix / "etc").exists()


def test_malformed_pip_conf_is_refused(venv_old: Venv) -> None:
    v = venv_old
    v.pip_conf.write_text("[install]\nconstraint = /a\n[install]\nx = 1\n")  # pip cannot read it either
    before = _tree(v.prefix)
    res = v.doctor("--hook")
    assert res.returncode == 3 and "pip cannot parse it" in res.stderr, res.stderr
    assert _tree(v.prefix) == before


# -- what pip refused ------------------------------------------------------------------------------------------


def test_explain_reads_pips_own_refusal(venv_old: Venv) -> None:
    v = venv_old
    assert v.doctor("--hook").returncode == 0
    res = v.install_torch_99()
    from doctor.resolve.pins import known_good_pins, pin_facts
    from doctor.compat_matrix.loader import load_matrix

    pins = known_good_pins(pin_facts(v.python, environ=v.env), load_matrix())
    why = explain_refusal((res.stdout + res.stderr).splitlines(), pins)  # as `out = !pip ...` gives it: lines
    assert why.refused and why.kind == "conflict"
    assert why.blocking == ("torch===2.13.0+cpu",) and "torch==9.9" in why.requested
    assert "the installed torch build, kept exactly" in why.explanation
    assert not explain_refusal("Successfully installed numpy-1.0").refused


# -- a notebook kernel's variables (in-process: the API doctor.pin(hook=True) uses) ----------------------------


def test_kernel_variables_are_set_for_pip_26_and_restored_on_unhook(tmp_path: Path) -> None:
    """PIP_CONSTRAINT (composing the one set before), PIP_BUILD_CONSTRAINT on pip >= 26.2, uv's pair; unhook puts
    every variable back as it was and leaves the prefix as it found it."""
    from doctor.resolve.hook import install_hook, remove_hook
    from doctor.resolve.pins import Pin, PinSet

    prefix = tmp_path / "prefix"
    prefix.mkdir()
    home = tmp_path / "home"
    before_tree = _tree(prefix)
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("numpy<2\n")
    kernel = {"PIP_CONSTRAINT": str(theirs), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
              "XDG_CONFIG_DIRS": str(home / "xdg")}
    ps = PinSet("2.13.0+cpu", None, False, (Pin("torch", "===2.13.0+cpu", "kept", "installed", kept=True),),
                python="python", prefix=str(prefix), pip_version="26.3")
    res = install_hook(ps, environ=kernel, kernel_env=kernel)
    cfile = str(prefix / "etc" / "tune-doctor" / "constraints.txt")
    assert res.in_force and res.build_constraint and res.composed == (str(theirs),)
    assert {k: kernel[k] for k in ("PIP_CONSTRAINT", "PIP_BUILD_CONSTRAINT", "UV_CONSTRAINT", "UV_BUILD_CONSTRAINT")} == \
        dict.fromkeys(("PIP_CONSTRAINT", "PIP_BUILD_CONSTRAINT", "UV_CONSTRAINT", "UV_BUILD_CONSTRAINT"), cfile)
    assert f"-c {theirs}" in Path(cfile).read_text()
    again = install_hook(ps, environ=kernel, kernel_env=kernel)  # twice: same variables, theirs still included
    assert again.action == "updated" and again.composed == (str(theirs),) and f"-c {theirs}" in Path(cfile).read_text()
    remove_hook(str(prefix), kernel_env=kernel)
    assert kernel["PIP_CONSTRAINT"] == str(theirs)
    assert not any(k in kernel for k in ("PIP_BUILD_CONSTRAINT", "UV_CONSTRAINT", "UV_BUILD_CONSTRAINT"))
    assert _tree(prefix) == before_tree and not (prefix / "etc").exists()


def test_status_and_hook_as_json(venv_old: Venv) -> None:
    import json

    v = venv_old
    hooked = json.loads(v.doctor("--hook", "--format", "json").stdout)
    assert hooked["action"] == "hooked" and hooked["in_force"] and hooked["pins"]["pins"][0]["requirement"] == "torch===2.13.0+cpu"
    st = json.loads(v.doctor("--status", "--format", "json").stdout)
    assert st["schema_version"] == 1 and st["hooked"] and st["in_force"] and st["pinned_torch"] == "2.13.0+cpu"
    assert st["constraint"]["origin"] == f"{v.pip_conf} [install]"
